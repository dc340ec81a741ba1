// The Jinja2 subset against outputs jinja2 (trim_blocks, lstrip_blocks, loop controls) gives.
#include <gtest/gtest.h>

#include "chat/jinja_interpreter.h"

namespace seekserve::jinja {
namespace {

Result<std::string> run(const std::string& source, const std::string& context_json = "{}") {
  auto tmpl = parse_template(source);
  if (!tmpl.ok()) return tmpl.status();
  return render(**tmpl, Value::from_json(nlohmann::ordered_json::parse(context_json)));
}

std::string ok(const std::string& source, const std::string& context_json = "{}") {
  auto r = run(source, context_json);
  EXPECT_TRUE(r.ok()) << source << "\n" << r.status().to_string();
  return r.ok() ? *r : "<error>";
}

std::string error_of(const std::string& source, const std::string& context_json = "{}") {
  auto r = run(source, context_json);
  EXPECT_FALSE(r.ok()) << source << " rendered: " << (r.ok() ? *r : "");
  return r.ok() ? "" : r.status().message();
}

TEST(JinjaTest, WhitespaceControl) {
  EXPECT_EQ(ok("a  {{- 'b' -}}  c"), "abc");
  EXPECT_EQ(ok("{% if true %}\nyes\n{% endif %}\nafter"), "yes\nafter");   // trim_blocks
  EXPECT_EQ(ok("  {% if true %}x{% endif %}"), "x");                       // lstrip_blocks
  EXPECT_EQ(ok("a\n    {% if true %}b{% endif %}"), "a\nb");
  EXPECT_EQ(ok("a {% if true %}b{% endif %}"), "a b");                     // not at line start
  EXPECT_EQ(ok("{{ 'x' }}\ny"), "x\ny");                                   // no trim after }}
  EXPECT_EQ(ok("  {%+ if true %}x{% endif %}"), "  x");
  EXPECT_EQ(ok("a{# comment #}\nb"), "ab");
  EXPECT_EQ(ok("{% raw %}{{ not evaluated }}{% endraw %}"), "{{ not evaluated }}");
}

TEST(JinjaTest, LoopsAndLoopVariables) {
  EXPECT_EQ(ok("{% for x in xs %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}", R"({"xs": ["a","b","c"]})"),
            "1a,2b,3c");
  EXPECT_EQ(ok("{% for x in xs %}{{ loop.revindex0 }}{% endfor %}", R"({"xs": [1,2,3]})"), "210");
  EXPECT_EQ(ok("{% for x in xs %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
               R"({"xs": [1,2,3,4,5]})"), "13");
  EXPECT_EQ(ok("{% for x in xs if x > 1 %}{{ x }}{{ loop.length }}{% endfor %}", R"({"xs": [1,2,3]})"), "2232");
  EXPECT_EQ(ok("{% for x in [] %}a{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(ok("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", R"({"d": {"b": 1, "a": 2}})"), "b=1;a=2;");
  EXPECT_EQ(ok("{% for x in xs[::-1] %}{{ x }}{% endfor %}", R"({"xs": [1,2,3]})"), "321");
  EXPECT_EQ(ok("{% for i in range(3) %}{{ i }}{% endfor %}"), "012");
}

TEST(JinjaTest, ScopingAndNamespace) {
  // A plain set inside a loop does not leak; a namespace does.
  EXPECT_EQ(ok("{% set x = 1 %}{% for i in [1,2] %}{% set x = 5 %}{% endfor %}{{ x }}"), "1");
  EXPECT_EQ(ok("{% set ns = namespace(n=0) %}{% for i in [1,2,3] %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"), "6");
  EXPECT_EQ(ok("{% set a, b = [1, 2] %}{{ b }}{{ a }}"), "21");
  EXPECT_EQ(ok("{% set block %}in {{ 'side' }}{% endset %}[{{ block }}]"), "[in side]");
}

TEST(JinjaTest, ExpressionsFollowPython) {
  EXPECT_EQ(ok("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }}"), "3 -4 1 2 3.5 1024");
  EXPECT_EQ(ok("{{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ [1, 2] == [1, 2] }}"), "True True True");
  EXPECT_EQ(ok("{{ 'x' if false else 'y' }}{{ 'z' if true }}"), "yz");
  EXPECT_EQ(ok("{{ xs|length - 1 }}", R"({"xs": [1,2,3]})"), "2");  // filters bind tighter than -
  EXPECT_EQ(ok("{{ 'ab' ~ 1 ~ none }}"), "ab1None");
  EXPECT_EQ(ok("{{ none }} {{ true }} {{ 1.0 }} {{ 0.1 + 0.2 }} {{ 1e-7 }} {{ [1, 'a', none] }} {{ {'k': 'v'} }}"),
            "None True 1.0 0.30000000000000004 1e-07 [1, 'a', None] {'k': 'v'}");
  EXPECT_EQ(ok("{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'q' not in 'abc' }}"), "True True True True");
  EXPECT_EQ(ok("{{ missing }}|{{ d.missing }}|{{ xs[10] }}", R"({"d": {}, "xs": []})"), "||");
}

TEST(JinjaTest, Tests) {
  EXPECT_EQ(ok("{{ x is defined }} {{ y is defined }} {{ x is none }} {{ x is not none }}", R"({"x": null})"),
            "True False True False");
  EXPECT_EQ(ok("{{ 'a' is string }} {{ 1 is number }} {{ {} is mapping }} {{ [] is iterable }} {{ 3 is odd }} {{ 9 is divisibleby 3 }}"),
            "True True True True True True");
  EXPECT_EQ(ok("{{ f is false }} {{ f is true }} {{ 0 is false }}", R"({"f": false})"), "True False False");
}

TEST(JinjaTest, StringMethodsAndFilters) {
  EXPECT_EQ(ok("{{ s.split('</think>')[-1].lstrip('\\n') }}", R"({"s": "<think>r</think>\n\nanswer"})"), "answer");
  EXPECT_EQ(ok("{{ ' a '.strip() }}|{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}|{{ 'a-b'.replace('-', '+') }}"),
            "a|True|True|a+b");
  EXPECT_EQ(ok("{{ 'Hello'|upper }} {{ 'Hello'|lower }} {{ '  x '|trim }} {{ [3,1,2]|sort|join(',') }} {{ [1,2]|first }}"),
            "HELLO hello x 1,2,3 1");
  EXPECT_EQ(ok("{{ x|default('d') }} {{ ''|default('e', true) }}"), "d e");
  EXPECT_EQ(ok("{{ xs|selectattr('role', 'equalto', 'user')|map(attribute='c')|join }}",
               R"({"xs": [{"role": "user", "c": "a"}, {"role": "bot", "c": "b"}, {"role": "user", "c": "c"}]})"), "ac");
  EXPECT_EQ(ok("{{ 'héllo'[1] }}{{ 'héllo'|length }}{{ 'héllo'[::-1] }}"), "é5olléh");
}

TEST(JinjaTest, ToJsonMatchesPythonJsonDumps) {
  EXPECT_EQ(ok("{{ v|tojson }}", R"({"v": {"name": "f", "args": [1, 2.5, true, null, "é\"\n"]}})"),
            R"({"name": "f", "args": [1, 2.5, true, null, "é\"\n"]})");
  EXPECT_EQ(ok("{{ v|tojson(indent=2) }}", R"({"v": {"a": [1]}})"), "{\n  \"a\": [\n    1\n  ]\n}");
}

TEST(JinjaTest, Macros) {
  EXPECT_EQ(ok("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', punct='?') }}"),
            "Hi a! Hi b?");
}

TEST(JinjaTest, RuntimeErrorsAreClear) {
  EXPECT_NE(error_of("{{ raise_exception('Conversation roles must alternate') }}").find("Conversation roles must alternate"),
            std::string::npos);
  EXPECT_NE(error_of("{% if 'x' in c %}{% endif %}", R"({"c": null})").find("argument of type 'NoneType' is not iterable"),
            std::string::npos);
  EXPECT_NE(error_of("{{ 'a' + 1 }}").find("unsupported operand"), std::string::npos);
  EXPECT_NE(error_of("{{ undefined_thing.attr }}").find("'undefined_thing' is undefined"), std::string::npos);
  EXPECT_NE(error_of("\n\n  {{ 1 // 0 }}").find("line 3"), std::string::npos);
}

TEST(JinjaTest, UnsupportedConstructsFailAtCompileTimeWithPosition) {
  for (const auto& [source, fragment] : std::vector<std::pair<std::string, std::string>>{
           {"{% include 'other.j2' %}", "unsupported statement"},
           {"line one\n  {{ x | frobnicate }}", "line 2 column 10: unsupported filter 'frobnicate'"},
           {"{{ x is prime }}", "unsupported test 'prime'"},
           {"{{ lipsum() }}", "unknown function 'lipsum'"},
           {"{{ s.encode() }}", "unsupported method 'encode'"},
           {"{% if x %}never closed", "template ended while looking for {% endif %}"},
           {"{{ 'unterminated }}", "never closed"},
           {"{% break %}", "outside a for loop"},
       }) {
    auto t = parse_template(source);
    ASSERT_FALSE(t.ok()) << source;
    EXPECT_NE(t.status().message().find(fragment), std::string::npos) << source << " -> " << t.status().message();
  }
}

TEST(JinjaTest, LimitsStopRunawayTemplates) {
  auto t = parse_template("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}");
  ASSERT_TRUE(t.ok());
  RenderLimits limits;
  limits.max_output_bytes = 1 << 16;
  auto r = render(**t, Value(Dict{}), limits);
  ASSERT_FALSE(r.ok());
}

}  // namespace
}  // namespace seekserve::jinja
