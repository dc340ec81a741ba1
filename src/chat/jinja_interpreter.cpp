#include "chat/jinja_interpreter.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <unordered_map>

#include "tokenizer/utf8.h"

namespace seekserve::jinja {

namespace {

enum class Flow { kNormal, kBreak, kContinue };

// Code points of a UTF-8 string, for Python-style indexing and slicing.
std::vector<std::string> code_points(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    const size_t start = i;
    next_codepoint(s, &i);
    out.push_back(s.substr(start, i - start));
  }
  return out;
}

bool is_space_char(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::string strip_chars(const std::string& s, const Value& chars, bool left, bool right) {
  auto in_set = [&](char c) { return chars.is_string() ? chars.str().find(c) != std::string::npos : is_space_char(c); };
  size_t b = 0, e = s.size();
  if (left) while (b < e && in_set(s[b])) ++b;
  if (right) while (e > b && in_set(s[e - 1])) --e;
  return s.substr(b, e - b);
}

std::vector<std::string> split_string(const std::string& s, const Value& sep, int64_t max_split) {
  std::vector<std::string> out;
  if (!sep.is_string()) {  // whitespace runs, no empty strings
    size_t i = 0;
    while (i < s.size()) {
      while (i < s.size() && is_space_char(s[i])) ++i;
      if (i >= s.size()) break;
      size_t j = i;
      while (j < s.size() && !is_space_char(s[j])) ++j;
      if (max_split >= 0 && static_cast<int64_t>(out.size()) == max_split) j = s.size();
      out.push_back(s.substr(i, j - i));
      i = j;
    }
    return out;
  }
  const std::string& d = sep.str();
  size_t start = 0;
  while (true) {
    const size_t pos = (max_split >= 0 && static_cast<int64_t>(out.size()) == max_split) ? std::string::npos : s.find(d, start);
    if (pos == std::string::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, pos - start));
    start = pos + d.size();
  }
}

std::string replace_all(std::string s, const std::string& from, const std::string& to, int64_t count) {
  if (from.empty()) return s;
  size_t pos = 0;
  int64_t done = 0;
  while ((count < 0 || done < count) && (pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
    ++done;
  }
  return s;
}

class Interpreter {
 public:
  Interpreter(const Template& t, const RenderLimits& limits) : tmpl_(t), limits_(limits) {}

  Result<std::string> run(const Value& context) {
    scopes_.emplace_back();
    for (const auto& [k, v] : context.dict()) scopes_.back()[k] = v;
    install_globals();
    scopes_.emplace_back();  // template top level
    Flow flow = Flow::kNormal;
    SS_RETURN_IF_ERROR(exec(tmpl_.body, &flow));
    return std::move(out_);
  }

 private:
  using Scope = std::unordered_map<std::string, Value>;

  Status fail(SourcePos p, const std::string& message) const {
    return invalid_argument("chat template line " + std::to_string(p.line) + " column " + std::to_string(p.column) + ": " + message);
  }

  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto found = it->find(name);
      if (found != it->end()) return found->second;
    }
    return Value::undefined(name);
  }

  void install_globals() {
    Scope& g = scopes_.front();
    g["namespace"] = Value::function("namespace", [](CallArgs& a) -> Result<Value> {
      Dict d;
      for (auto& [k, v] : a.keyword) d.emplace_back(k, v);
      if (!a.positional.empty() && a.positional[0].is_dict())
        for (const auto& kv : a.positional[0].dict()) d.push_back(kv);
      return Value(std::move(d), /*is_namespace=*/true);
    });
    g["dict"] = Value::function("dict", [](CallArgs& a) -> Result<Value> {
      Dict d;
      for (auto& [k, v] : a.keyword) d.emplace_back(k, v);
      return Value(std::move(d));
    });
    g["raise_exception"] = Value::function("raise_exception", [](CallArgs& a) -> Result<Value> {
      return invalid_argument("the template raised an error: " + a.get(0, "message").to_output());
    });
    g["strftime_now"] = Value::function("strftime_now", [](CallArgs& a) -> Result<Value> {
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof buf, a.get(0, "format").to_output().c_str(), &tm);
      return Value(std::string(buf, n));
    });
    g["range"] = Value::function("range", [this](CallArgs& a) -> Result<Value> {
      int64_t start = 0, stop, step = 1;
      if (a.positional.size() == 1) stop = a.positional[0].as_int();
      else if (a.positional.size() >= 2) {
        start = a.positional[0].as_int();
        stop = a.positional[1].as_int();
        if (a.positional.size() > 2) step = a.positional[2].as_int();
      } else return invalid_argument("range() needs 1 to 3 arguments");
      if (step == 0) return invalid_argument("range() step must not be zero");
      List out;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (static_cast<int64_t>(out.size()) >= limits_.max_loop_iterations) return invalid_argument("range() is too long");
        out.push_back(Value(i));
      }
      return Value(std::move(out));
    });
  }

  Status emit(const std::string& s, SourcePos p) {
    out_ += s;
    if (out_.size() > limits_.max_output_bytes) return fail(p, "output exceeds " + std::to_string(limits_.max_output_bytes) + " bytes");
    return Status::Ok();
  }

  // ---- statements
  Status exec(const Body& body, Flow* flow) {
    for (const auto& s : body) {
      SS_RETURN_IF_ERROR(exec_one(*s, flow));
      if (*flow != Flow::kNormal) return Status::Ok();
    }
    return Status::Ok();
  }

  Status exec_one(const Stmt& s, Flow* flow) {
    switch (s.kind) {
      case Stmt::Kind::kText: return emit(s.text, s.pos);
      case Stmt::Kind::kOutput: {
        SS_ASSIGN_OR_RETURN(Value v, eval(*s.expr));
        return emit(v.to_output(), s.pos);
      }
      case Stmt::Kind::kIf:
        for (const auto& [cond, body] : s.branches) {
          bool take = true;
          if (cond) {
            SS_ASSIGN_OR_RETURN(Value c, eval(*cond));
            take = c.truthy();
          }
          if (take) return exec(body, flow);
        }
        return Status::Ok();
      case Stmt::Kind::kFor: return exec_for(s, flow);
      case Stmt::Kind::kSet: return exec_set(s);
      case Stmt::Kind::kMacro: return define_macro(s);
      case Stmt::Kind::kBreak: *flow = Flow::kBreak; return Status::Ok();
      case Stmt::Kind::kContinue: *flow = Flow::kContinue; return Status::Ok();
    }
    return Status::Ok();
  }

  Result<List> iterate(const Value& v, SourcePos p) {
    if (v.is_list()) return v.list();
    if (v.is_dict()) {  // iterating a dict yields its keys
      List keys;
      for (const auto& kv : v.dict()) keys.push_back(Value(kv.first));
      return keys;
    }
    if (v.is_string()) {
      List chars;
      for (auto& c : code_points(v.str())) chars.push_back(Value(c));
      return chars;
    }
    if (v.is_undefined()) return List{};  // jinja iterates an undefined as empty
    return fail(p, "'" + v.type_name() + "' object is not iterable");
  }

  Status assign(const std::vector<std::string>& targets, const Value& v, SourcePos p, Scope& scope) {
    if (targets.size() == 1) {
      scope[targets[0]] = v;
      return Status::Ok();
    }
    SS_ASSIGN_OR_RETURN(List parts, iterate(v, p));
    if (parts.size() != targets.size())
      return fail(p, "cannot unpack " + std::to_string(parts.size()) + " values into " + std::to_string(targets.size()) + " names");
    for (size_t i = 0; i < targets.size(); ++i) scope[targets[i]] = parts[i];
    return Status::Ok();
  }

  Status exec_for(const Stmt& s, Flow* outer_flow) {
    SS_ASSIGN_OR_RETURN(Value iterable, eval(*s.expr));
    SS_ASSIGN_OR_RETURN(List items, iterate(iterable, s.pos));
    if (s.filter) {  // "for x in xs if cond": filtered before loop.* is computed
      List kept;
      for (const Value& item : items) {
        scopes_.emplace_back();
        Status st = assign(s.targets, item, s.pos, scopes_.back());
        Result<Value> c = st.ok() ? eval(*s.filter) : Result<Value>(st);
        scopes_.pop_back();
        if (!c.ok()) return c.status();
        if (c->truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    (void)outer_flow;
    if (items.empty()) {
      Flow f = Flow::kNormal;
      return exec(s.else_body, &f);
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      if (++iterations_ > limits_.max_loop_iterations) return fail(s.pos, "too many loop iterations");
      scopes_.emplace_back();
      Dict loop = {{"index", Value(i + 1)},       {"index0", Value(i)},         {"revindex", Value(n - i)},
                   {"revindex0", Value(n - i - 1)}, {"first", Value(i == 0)},   {"last", Value(i == n - 1)},
                   {"length", Value(n)},
                   {"previtem", i > 0 ? items[static_cast<size_t>(i - 1)] : Value::undefined("loop.previtem")},
                   {"nextitem", i + 1 < n ? items[static_cast<size_t>(i + 1)] : Value::undefined("loop.nextitem")}};
      scopes_.back()["loop"] = Value(std::move(loop));
      Status st = assign(s.targets, items[static_cast<size_t>(i)], s.pos, scopes_.back());
      Flow flow = Flow::kNormal;
      if (st.ok()) st = exec(s.body, &flow);
      scopes_.pop_back();
      SS_RETURN_IF_ERROR(st);
      if (flow == Flow::kBreak) break;
    }
    return Status::Ok();
  }

  Status exec_set(const Stmt& s) {
    Value v;
    if (s.block_set) {
      std::string saved = std::move(out_);
      out_.clear();
      Flow f = Flow::kNormal;
      Status st = exec(s.body, &f);
      v = Value(std::move(out_));
      out_ = std::move(saved);
      SS_RETURN_IF_ERROR(st);
    } else {
      SS_ASSIGN_OR_RETURN(v, eval(*s.expr));
    }
    if (s.targets.size() == 1 && s.targets[0].find('.') != std::string::npos) {
      const std::string& t = s.targets[0];
      const std::string ns_name = t.substr(0, t.find('.')), attr = t.substr(t.find('.') + 1);
      Value ns = lookup(ns_name);
      if (!ns.is_namespace()) return fail(s.pos, "cannot assign attribute on '" + ns_name + "': not a namespace");
      ns.set(attr, v);  // namespaces are shared by reference
      return Status::Ok();
    }
    return assign(s.targets, v, s.pos, scopes_.back());
  }

  Status define_macro(const Stmt& s) {
    const Stmt* def = &s;
    scopes_.back()[s.name] = Value::function(s.name, [this, def](CallArgs& a) -> Result<Value> {
      if (++depth_ > limits_.max_call_depth) return fail(def->pos, "macro calls nested too deeply");
      Scope scope;
      for (size_t i = 0; i < def->params.size(); ++i) {
        const auto& [name, default_expr] = def->params[i];
        if (a.has(i, name)) scope[name] = a.get(i, name);
        else if (default_expr) {
          auto d = eval(*default_expr);
          if (!d.ok()) return d.status();
          scope[name] = *d;
        } else scope[name] = Value::undefined(name);
      }
      // A macro sees the globals and the template's top level, not its caller's locals.
      std::vector<Scope> saved(scopes_.begin() + 2, scopes_.end());
      scopes_.resize(2);
      scopes_.push_back(std::move(scope));
      std::string saved_out = std::move(out_);
      out_.clear();
      Flow f = Flow::kNormal;
      Status st = exec(def->body, &f);
      std::string result = std::move(out_);
      out_ = std::move(saved_out);
      scopes_.resize(2);
      scopes_.insert(scopes_.end(), saved.begin(), saved.end());
      --depth_;
      if (!st.ok()) return st;
      return Value(std::move(result));
    });
    return Status::Ok();
  }

  // ---- expressions
  Result<Value> eval(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kLiteral: return e.value;
      case Expr::Kind::kName: return lookup(e.name);
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        List out;
        for (const auto& item : e.items) {
          SS_ASSIGN_OR_RETURN(Value v, eval(*item));
          out.push_back(std::move(v));
        }
        return Value(std::move(out));
      }
      case Expr::Kind::kDict: {
        Dict out;
        for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
          SS_ASSIGN_OR_RETURN(Value k, eval(*e.items[i]));
          SS_ASSIGN_OR_RETURN(Value v, eval(*e.items[i + 1]));
          if (!k.is_string()) return fail(e.pos, "dict keys must be strings");
          out.emplace_back(k.str(), std::move(v));
        }
        return Value(std::move(out));
      }
      case Expr::Kind::kAttr: {
        SS_ASSIGN_OR_RETURN(Value obj, eval(*e.object));
        return get_attr(obj, e.name, e.pos, *e.object);
      }
      case Expr::Kind::kItem: {
        SS_ASSIGN_OR_RETURN(Value obj, eval(*e.object));
        SS_ASSIGN_OR_RETURN(Value key, eval(*e.left));
        return get_item(obj, key, e.pos, *e.object);
      }
      case Expr::Kind::kSlice: return eval_slice(e);
      case Expr::Kind::kCall: return eval_call(e);
      case Expr::Kind::kFilter: return eval_filter(e);
      case Expr::Kind::kTest: {
        SS_ASSIGN_OR_RETURN(Value obj, eval(*e.object));
        SS_ASSIGN_OR_RETURN(CallArgs args, eval_args(e));
        SS_ASSIGN_OR_RETURN(bool r, run_test(e.name, obj, args, e.pos));
        return Value(e.negated ? !r : r);
      }
      case Expr::Kind::kUnary: {
        SS_ASSIGN_OR_RETURN(Value v, eval(*e.object));
        if (e.name == "not") return Value(!v.truthy());
        if (!v.is_number()) return fail(e.pos, "bad operand type for unary " + e.name + ": '" + v.type_name() + "'");
        if (e.name == "+") return v;
        return v.kind() == Value::Kind::kFloat ? Value(-v.as_double()) : Value(-v.as_int());
      }
      case Expr::Kind::kBinary: return eval_binary(e);
      case Expr::Kind::kTernary: {
        SS_ASSIGN_OR_RETURN(Value c, eval(*e.items[1]));
        if (c.truthy()) return eval(*e.items[0]);
        if (e.items[2]) return eval(*e.items[2]);
        return Value::undefined("ternary");
      }
    }
    return Value();
  }

  Status undefined_error(const Value& v, SourcePos p) const {
    return fail(p, "'" + (v.name().empty() ? std::string("value") : v.name()) + "' is undefined");
  }

  Result<Value> get_attr(const Value& obj, const std::string& name, SourcePos p, const Expr& /*src*/) {
    // jinja2 tries Python attributes (methods) first, then items.
    if (obj.is_undefined()) return undefined_error(obj, p);
    const bool dict_method = obj.is_dict() && !obj.is_namespace() &&
                             (name == "items" || name == "keys" || name == "values" || name == "get");
    const bool list_method = obj.is_list() && (name == "index" || name == "count");
    if ((obj.is_string() && is_known_method(name)) || dict_method || list_method) return bound_method(obj, name, p);
    if (obj.is_dict()) {
      if (const Value* v = obj.find(name)) return *v;
      return Value::undefined(name);
    }
    return Value::undefined(name);
  }

  Result<Value> get_item(const Value& obj, const Value& key, SourcePos p, const Expr& /*src*/) {
    if (obj.is_undefined()) return undefined_error(obj, p);
    if (obj.is_dict()) {
      if (!key.is_string()) return Value::undefined("item");
      if (const Value* v = obj.find(key.str())) return *v;
      return Value::undefined(key.str());
    }
    if (obj.is_list() || obj.is_string()) {
      if (!key.is_number()) return fail(p, "indices must be integers, not " + key.type_name());
      std::vector<std::string> chars;
      if (obj.is_string()) chars = code_points(obj.str());
      const int64_t n = obj.is_list() ? static_cast<int64_t>(obj.list().size()) : static_cast<int64_t>(chars.size());
      int64_t i = key.as_int();
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::undefined("index");
      return obj.is_list() ? obj.list()[static_cast<size_t>(i)] : Value(chars[static_cast<size_t>(i)]);
    }
    return Value::undefined("item");
  }

  Result<Value> eval_slice(const Expr& e) {
    SS_ASSIGN_OR_RETURN(Value obj, eval(*e.object));
    int64_t parts[3] = {0, 0, 1};
    bool given[3] = {false, false, false};
    for (int k = 0; k < 3; ++k) {
      if (!e.items[static_cast<size_t>(k)]) continue;
      SS_ASSIGN_OR_RETURN(Value v, eval(*e.items[static_cast<size_t>(k)]));
      if (v.is_none()) continue;
      if (!v.is_number()) return fail(e.pos, "slice indices must be integers");
      parts[k] = v.as_int();
      given[k] = true;
    }
    const int64_t step = parts[2];
    if (step == 0) return fail(e.pos, "slice step cannot be zero");
    std::vector<Value> seq;
    std::vector<std::string> chars;
    if (obj.is_list()) seq = obj.list();
    else if (obj.is_string()) chars = code_points(obj.str());
    else if (obj.is_undefined()) return undefined_error(obj, e.pos);
    else return fail(e.pos, "'" + obj.type_name() + "' object is not subscriptable");
    const int64_t n = obj.is_list() ? static_cast<int64_t>(seq.size()) : static_cast<int64_t>(chars.size());
    // Python's slice.indices().
    auto clamp_index = [&](int64_t v, bool is_given, int64_t dflt) {
      if (!is_given) return dflt;
      if (v < 0) v += n;
      if (step > 0) return std::clamp<int64_t>(v, 0, n);
      return std::clamp<int64_t>(v, -1, n - 1);
    };
    const int64_t start = clamp_index(parts[0], given[0], step > 0 ? 0 : n - 1);
    const int64_t stop = clamp_index(parts[1], given[1], step > 0 ? n : -1);
    List out_list;
    std::string out_str;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (obj.is_list()) out_list.push_back(seq[static_cast<size_t>(i)]);
      else out_str += chars[static_cast<size_t>(i)];
    }
    return obj.is_list() ? Value(std::move(out_list)) : Value(std::move(out_str));
  }

  Result<CallArgs> eval_args(const Expr& e) {
    CallArgs args;
    for (const auto& a : e.args) {
      SS_ASSIGN_OR_RETURN(Value v, eval(*a));
      args.positional.push_back(std::move(v));
    }
    for (const auto& [k, a] : e.kwargs) {
      SS_ASSIGN_OR_RETURN(Value v, eval(*a));
      args.keyword.emplace_back(k, std::move(v));
    }
    return args;
  }

  Result<Value> eval_call(const Expr& e) {
    SS_ASSIGN_OR_RETURN(Value callee, eval(*e.object));
    SS_ASSIGN_OR_RETURN(CallArgs args, eval_args(e));
    if (callee.kind() != Value::Kind::kFunction) {
      if (callee.is_undefined()) return undefined_error(callee, e.pos);
      return fail(e.pos, "'" + callee.type_name() + "' object is not callable");
    }
    auto result = callee.fn()(args);
    if (!result.ok() && result.status().message().rfind("chat template line", 0) != 0)
      return fail(e.pos, result.status().message());
    return result;
  }

  Result<Value> bound_method(const Value& obj, const std::string& name, SourcePos p) {
    (void)p;
    return Value::function(name, [obj, name](CallArgs& a) -> Result<Value> { return call_method(obj, name, a); });
  }

  static Result<Value> call_method(const Value& obj, const std::string& m, CallArgs& a) {
    if (obj.is_string()) {
      const std::string& s = obj.str();
      if (m == "startswith" || m == "endswith") {
        const Value arg = a.get(0, "prefix");
        List options = arg.is_list() ? arg.list() : List{arg};
        for (const Value& o : options) {
          if (!o.is_string()) return invalid_argument(m + " arg must be str or a tuple of str");
          const std::string& x = o.str();
          if (m == "startswith" ? s.rfind(x, 0) == 0 : (s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0))
            return Value(true);
        }
        return Value(false);
      }
      if (m == "strip") return Value(strip_chars(s, a.get(0, "chars"), true, true));
      if (m == "lstrip") return Value(strip_chars(s, a.get(0, "chars"), true, false));
      if (m == "rstrip") return Value(strip_chars(s, a.get(0, "chars"), false, true));
      if (m == "split" || m == "rsplit") {
        const Value sep = a.get(0, "sep");
        if (sep.is_string() && sep.str().empty()) return invalid_argument("empty separator");
        const int64_t max_split = a.has(1, "maxsplit") ? a.get(1, "maxsplit").as_int() : -1;
        List out;
        if (m == "rsplit" && max_split >= 0 && sep.is_string()) {
          std::vector<std::string> parts;
          std::string rest = s;
          for (int64_t k = 0; k < max_split; ++k) {
            const size_t pos = rest.rfind(sep.str());
            if (pos == std::string::npos) break;
            parts.insert(parts.begin(), rest.substr(pos + sep.str().size()));
            rest = rest.substr(0, pos);
          }
          parts.insert(parts.begin(), rest);
          for (auto& x : parts) out.push_back(Value(x));
          return Value(std::move(out));
        }
        for (auto& x : split_string(s, sep, max_split)) out.push_back(Value(x));
        return Value(std::move(out));
      }
      if (m == "splitlines") {
        List out;
        for (auto& x : split_string(s, Value("\n"), -1)) out.push_back(Value(strip_chars(x, Value("\r"), false, true)));
        if (!out.empty() && out.back().str().empty()) out.pop_back();
        return Value(std::move(out));
      }
      if (m == "replace") {
        const Value from = a.get(0, "old"), to = a.get(1, "new");
        if (!from.is_string() || !to.is_string()) return invalid_argument("replace() arguments must be str");
        return Value(replace_all(s, from.str(), to.str(), a.has(2, "count") ? a.get(2, "count").as_int() : -1));
      }
      if (m == "upper" || m == "lower") {
        std::string r = s;
        for (char& c : r) c = static_cast<char>(m == "upper" ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
        return Value(r);
      }
      if (m == "title" || m == "capitalize") {
        std::string r = s;
        bool start = true;
        for (char& c : r) {
          const bool alpha = std::isalpha(static_cast<unsigned char>(c));
          c = static_cast<char>(start ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
          start = m == "title" ? !alpha : false;
        }
        return Value(r);
      }
      if (m == "find" || m == "rfind" || m == "count" || m == "index") {
        const Value sub = a.get(0, "sub");
        if (!sub.is_string()) return invalid_argument(m + "() argument must be str");
        if (m == "count") {
          int64_t n = 0;
          for (size_t pos = s.find(sub.str()); pos != std::string::npos && !sub.str().empty(); pos = s.find(sub.str(), pos + sub.str().size())) ++n;
          return Value(n);
        }
        const size_t pos = m == "rfind" ? s.rfind(sub.str()) : s.find(sub.str());
        if (pos == std::string::npos && m == "index") return invalid_argument("substring not found");
        return Value(pos == std::string::npos ? int64_t{-1} : static_cast<int64_t>(code_points(s.substr(0, pos)).size()));
      }
      if (m == "isdigit" || m == "isalpha" || m == "isspace") {
        if (s.empty()) return Value(false);
        for (unsigned char c : s) {
          const bool ok = m == "isdigit" ? std::isdigit(c) : m == "isalpha" ? std::isalpha(c) : is_space_char(static_cast<char>(c));
          if (!ok) return Value(false);
        }
        return Value(true);
      }
      if (m == "join") {
        const Value items = a.get(0, "iterable");
        if (!items.is_list()) return invalid_argument("join() argument must be a list");
        std::string r;
        for (size_t i = 0; i < items.list().size(); ++i) {
          if (!items.list()[i].is_string()) return invalid_argument("sequence item " + std::to_string(i) + ": expected str");
          r += (i ? s : "") + items.list()[i].str();
        }
        return Value(r);
      }
      if (m == "format") {
        std::string r;
        size_t next = 0;
        for (size_t i = 0; i < s.size(); ++i) {
          if (s[i] == '{' && i + 1 < s.size() && s[i + 1] == '}') {
            r += a.get(next++, "").to_output();
            ++i;
          } else r += s[i];
        }
        return Value(r);
      }
    }
    if (obj.is_dict()) {
      if (m == "items" || m == "keys" || m == "values") {
        List out;
        for (const auto& [k, v] : obj.dict()) {
          if (m == "items") out.push_back(Value(List{Value(k), v}));
          else if (m == "keys") out.push_back(Value(k));
          else out.push_back(v);
        }
        return Value(std::move(out));
      }
      if (m == "get") {
        const Value key = a.get(0, "key");
        if (key.is_string())
          if (const Value* v = obj.find(key.str())) return *v;
        return a.has(1, "default") ? a.get(1, "default") : Value::none();
      }
    }
    if (obj.is_list()) {
      if (m == "index" || m == "count") {
        const Value x = a.get(0, "value");
        int64_t n = 0;
        for (size_t i = 0; i < obj.list().size(); ++i)
          if (equal(obj.list()[i], x)) {
            if (m == "index") return Value(static_cast<int64_t>(i));
            ++n;
          }
        if (m == "index") return invalid_argument("value is not in list");
        return Value(n);
      }
    }
    return invalid_argument("'" + obj.type_name() + "' object has no method '" + m + "'");
  }

  Result<Value> eval_binary(const Expr& e) {
    const std::string& op = e.name;
    SS_ASSIGN_OR_RETURN(Value l, eval(*e.left));
    if (op == "and") return l.truthy() ? eval(*e.right) : Result<Value>(l);
    if (op == "or") return l.truthy() ? Result<Value>(l) : eval(*e.right);
    SS_ASSIGN_OR_RETURN(Value r, eval(*e.right));
    if (op == "==") return Value(equal(l, r));
    if (op == "!=") return Value(!equal(l, r));
    if (op == "in" || op == "not in") {
      SS_ASSIGN_OR_RETURN(bool found, contains(r, l, e.pos));
      return Value(op == "in" ? found : !found);
    }
    if (op == "~") return Value(l.to_output() + r.to_output());
    if (l.is_undefined()) return undefined_error(l, e.pos);
    if (r.is_undefined()) return undefined_error(r, e.pos);
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int cmp;
      if (l.is_number() && r.is_number()) cmp = l.as_double() < r.as_double() ? -1 : l.as_double() > r.as_double() ? 1 : 0;
      else if (l.is_string() && r.is_string()) cmp = l.str().compare(r.str());
      else return fail(e.pos, "'" + op + "' not supported between instances of '" + l.type_name() + "' and '" + r.type_name() + "'");
      return Value(op == "<" ? cmp < 0 : op == ">" ? cmp > 0 : op == "<=" ? cmp <= 0 : cmp >= 0);
    }
    if (op == "+") {
      if (l.is_string() && r.is_string()) return Value(l.str() + r.str());
      if (l.is_list() && r.is_list()) {
        List out = l.list();
        out.insert(out.end(), r.list().begin(), r.list().end());
        return Value(std::move(out));
      }
    }
    if (op == "*" && ((l.is_string() || l.is_list()) && r.kind() == Value::Kind::kInt)) {
      const int64_t times = std::max<int64_t>(r.as_int(), 0);
      const size_t unit = l.is_string() ? l.str().size() : l.list().size();
      if (static_cast<size_t>(times) * unit > limits_.max_output_bytes) return fail(e.pos, "repetition is too large");
      if (l.is_string()) {
        std::string out;
        for (int64_t i = 0; i < times; ++i) out += l.str();
        return Value(out);
      }
      List out;
      for (int64_t i = 0; i < times; ++i) out.insert(out.end(), l.list().begin(), l.list().end());
      return Value(std::move(out));
    }
    if (!l.is_number() || !r.is_number())
      return fail(e.pos, "unsupported operand type(s) for " + op + ": '" + l.type_name() + "' and '" + r.type_name() + "'");
    const bool floats = l.kind() == Value::Kind::kFloat || r.kind() == Value::Kind::kFloat;
    if (op == "+") return floats ? Value(l.as_double() + r.as_double()) : Value(l.as_int() + r.as_int());
    if (op == "-") return floats ? Value(l.as_double() - r.as_double()) : Value(l.as_int() - r.as_int());
    if (op == "*") return floats ? Value(l.as_double() * r.as_double()) : Value(l.as_int() * r.as_int());
    if (op == "**") return floats || r.as_int() < 0 ? Value(std::pow(l.as_double(), r.as_double())) : Value(static_cast<int64_t>(std::llround(std::pow(l.as_double(), r.as_double()))));
    if (r.as_double() == 0.0) return fail(e.pos, "division by zero");
    if (op == "/") return Value(l.as_double() / r.as_double());
    if (op == "//") return floats ? Value(std::floor(l.as_double() / r.as_double())) : Value(static_cast<int64_t>(std::floor(static_cast<double>(l.as_int()) / static_cast<double>(r.as_int()))));
    if (op == "%") {
      if (floats) return Value(l.as_double() - std::floor(l.as_double() / r.as_double()) * r.as_double());
      const int64_t m = l.as_int() % r.as_int();
      return Value((m != 0 && ((m < 0) != (r.as_int() < 0))) ? m + r.as_int() : m);
    }
    return fail(e.pos, "unknown operator " + op);
  }

  Result<bool> contains(const Value& container, const Value& item, SourcePos p) {
    if (container.is_string()) {
      if (!item.is_string()) return fail(p, "'in <string>' requires string as left operand, not " + item.type_name());
      return container.str().find(item.str()) != std::string::npos;
    }
    if (container.is_list()) {
      for (const Value& v : container.list())
        if (equal(v, item)) return true;
      return false;
    }
    if (container.is_dict()) return item.is_string() && container.find(item.str()) != nullptr;
    if (container.is_undefined()) return undefined_error(container, p);
    return fail(p, "argument of type '" + container.type_name() + "' is not iterable");
  }

  Result<bool> run_test(const std::string& t, const Value& v, const CallArgs& a, SourcePos p) {
    if (t == "defined") return !v.is_undefined();
    if (t == "undefined") return v.is_undefined();
    if (t == "none") return v.is_none();
    if (t == "string") return v.is_string();
    if (t == "number") return v.kind() == Value::Kind::kInt || v.kind() == Value::Kind::kFloat;
    if (t == "integer") return v.kind() == Value::Kind::kInt;
    if (t == "float") return v.kind() == Value::Kind::kFloat;
    if (t == "boolean") return v.kind() == Value::Kind::kBool;
    if (t == "mapping") return v.is_dict();
    if (t == "iterable") return v.is_list() || v.is_dict() || v.is_string();
    if (t == "sequence") return v.is_list() || v.is_dict() || v.is_string();
    if (t == "callable") return v.kind() == Value::Kind::kFunction;
    if (t == "true") return v.kind() == Value::Kind::kBool && v.as_bool();
    if (t == "false") return v.kind() == Value::Kind::kBool && !v.as_bool();
    if (t == "lower" || t == "upper") {
      if (!v.is_string()) return false;
      for (unsigned char c : v.str())
        if (t == "lower" ? std::isupper(c) : std::islower(c)) return false;
      return true;
    }
    if (t == "odd" || t == "even" || t == "divisibleby") {
      if (v.kind() != Value::Kind::kInt) return fail(p, "test '" + t + "' needs an integer");
      if (t == "odd") return v.as_int() % 2 != 0;
      if (t == "even") return v.as_int() % 2 == 0;
      const int64_t d = a.get(0, "num").as_int();
      if (d == 0) return fail(p, "divisibleby 0");
      return v.as_int() % d == 0;
    }
    const Value other = a.get(0, "other");
    if (t == "eq" || t == "equalto" || t == "sameas") return equal(v, other);
    if (t == "ne") return !equal(v, other);
    if (t == "in") return contains(other, v, p);
    if (t == "gt" || t == "ge" || t == "lt" || t == "le") {
      if (!v.is_number() || !other.is_number()) return fail(p, "test '" + t + "' needs numbers");
      const double x = v.as_double(), y = other.as_double();
      return t == "gt" ? x > y : t == "ge" ? x >= y : t == "lt" ? x < y : x <= y;
    }
    return fail(p, "unsupported test '" + t + "'");
  }

  Result<Value> attribute_of(const Value& item, const Value& attribute, SourcePos p) {
    Value cur = item;
    for (const std::string& part : split_string(attribute.to_output(), Value("."), -1)) {
      if (!part.empty() && std::isdigit(static_cast<unsigned char>(part[0]))) {
        SS_ASSIGN_OR_RETURN(cur, get_item(cur, Value(static_cast<int64_t>(std::stoll(part))), p, Expr{}));
      } else {
        SS_ASSIGN_OR_RETURN(cur, get_attr(cur, part, p, Expr{}));
      }
    }
    return cur;
  }

  Result<Value> eval_filter(const Expr& e) {
    SS_ASSIGN_OR_RETURN(Value v, eval(*e.object));
    SS_ASSIGN_OR_RETURN(CallArgs a, eval_args(e));
    return apply_filter(e.name, v, a, e.pos);
  }

  Result<Value> apply_filter(const std::string& f, const Value& v, CallArgs& a, SourcePos p) {
    if (f == "default" || f == "d") {
      const bool boolean = a.get(1, "boolean").truthy();
      if (v.is_undefined() || (boolean && !v.truthy())) return a.has(0, "default_value") ? a.get(0, "default_value") : Value("");
      return v;
    }
    if (f == "safe" || f == "e" || f == "escape") return v;  // autoescape is off in chat templates
    if (v.is_undefined() && f != "string" && f != "length" && f != "count" && f != "list" && f != "tojson")
      return undefined_error(v, p);
    if (f == "tojson") {
      const Value indent = a.get(0, "indent");
      auto json = v.to_json(indent.is_number() ? static_cast<int>(indent.as_int()) : -1, a.get(1, "sort_keys").truthy());
      if (!json.ok()) return fail(p, json.status().message());
      return Value(*json);
    }
    if (f == "length" || f == "count") {
      if (v.is_string()) return Value(static_cast<int64_t>(code_points(v.str()).size()));
      if (v.is_list()) return Value(static_cast<int64_t>(v.list().size()));
      if (v.is_dict()) return Value(static_cast<int64_t>(v.dict().size()));
      if (v.is_undefined()) return Value(int64_t{0});
      return fail(p, "object of type '" + v.type_name() + "' has no len()");
    }
    if (f == "string") return Value(v.to_output());
    if (f == "int") {
      if (v.is_number()) return Value(v.as_int());
      if (v.is_string()) {
        try { return Value(static_cast<int64_t>(std::stoll(v.str()))); } catch (...) {}
      }
      return a.has(0, "default") ? a.get(0, "default") : Value(int64_t{0});
    }
    if (f == "float") {
      if (v.is_number()) return Value(v.as_double());
      if (v.is_string()) {
        try { return Value(std::stod(v.str())); } catch (...) {}
      }
      return Value(0.0);
    }
    if (f == "trim") return Value(strip_chars(v.to_output(), a.get(0, "chars"), true, true));
    if (f == "upper" || f == "lower" || f == "title" || f == "capitalize") {
      CallArgs none;
      return call_method(Value(v.to_output()), f, none);
    }
    if (f == "replace") {
      CallArgs args = a;
      return call_method(Value(v.to_output()), "replace", args);
    }
    if (f == "first" || f == "last") {
      SS_ASSIGN_OR_RETURN(List items, iterate(v, p));
      if (items.empty()) return Value::undefined(f);
      return f == "first" ? items.front() : items.back();
    }
    if (f == "list") {
      SS_ASSIGN_OR_RETURN(List items, iterate(v, p));
      return Value(std::move(items));
    }
    if (f == "items") {
      if (!v.is_dict()) return fail(p, "items filter needs a mapping");
      CallArgs none;
      return call_method(v, "items", none);
    }
    if (f == "reverse") {
      if (v.is_string()) {
        auto chars = code_points(v.str());
        std::string r;
        for (auto it = chars.rbegin(); it != chars.rend(); ++it) r += *it;
        return Value(r);
      }
      SS_ASSIGN_OR_RETURN(List items, iterate(v, p));
      std::reverse(items.begin(), items.end());
      return Value(std::move(items));
    }
    if (f == "join") {
      SS_ASSIGN_OR_RETURN(List items, iterate(v, p));
      const Value attribute = a.get(1, "attribute");
      std::string r, sep = a.has(0, "d") ? a.get(0, "d").to_output() : "";
      for (size_t i = 0; i < items.size(); ++i) {
        Value item = items[i];
        if (!attribute.is_undefined()) {
SS_ASSIGN_OR_RETURN(item, attribute_of(item, attribute, p));
}
        r += (i ? sep : "") + item.to_output();
      }
      return Value(r);
    }
    if (f == "abs") {
      if (!v.is_number()) return fail(p, "bad operand type for abs()");
      return v.kind() == Value::Kind::kFloat ? Value(std::fabs(v.as_double())) : Value(static_cast<int64_t>(std::llabs(v.as_int())));
    }
    if (f == "round") {
      const int64_t precision = a.get(0, "precision").is_number() ? a.get(0, "precision").as_int() : 0;
      const std::string method = a.has(1, "method") ? a.get(1, "method").to_output() : "common";
      const double scale = std::pow(10.0, static_cast<double>(precision));
      const double x = v.as_double() * scale;
      const double r = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::round(x);
      return Value(r / scale);
    }
    if (f == "sort" || f == "unique" || f == "min" || f == "max" || f == "sum" || f == "map" || f == "select" ||
        f == "reject" || f == "selectattr" || f == "rejectattr" || f == "dictsort" || f == "batch")
      return apply_sequence_filter(f, v, a, p);
    if (f == "indent") {
      const int64_t width = a.get(0, "width").is_number() ? a.get(0, "width").as_int() : 4;
      const bool first = a.get(1, "first").truthy();
      const std::string pad(static_cast<size_t>(std::max<int64_t>(width, 0)), ' ');
      std::string s = v.to_output(), r;
      for (size_t i = 0; i < s.size(); ++i) {
        r += s[i];
        if (s[i] == '\n' && i + 1 < s.size() && s[i + 1] != '\n') r += pad;
      }
      return Value(first ? pad + r : r);
    }
    if (f == "wordcount") return Value(static_cast<int64_t>(split_string(v.to_output(), Value(), -1).size()));
    if (f == "center") {
      const int64_t width = a.get(0, "width").is_number() ? a.get(0, "width").as_int() : 80;
      std::string s = v.to_output();
      const int64_t len = static_cast<int64_t>(code_points(s).size());
      if (len >= width) return Value(s);
      const int64_t left = (width - len) / 2;
      return Value(std::string(static_cast<size_t>(left), ' ') + s + std::string(static_cast<size_t>(width - len - left), ' '));
    }
    return fail(p, "unsupported filter '" + f + "'");
  }

  Result<Value> apply_sequence_filter(const std::string& f, const Value& v, CallArgs& a, SourcePos p) {
    SS_ASSIGN_OR_RETURN(List items, iterate(v, p));
    if (f == "dictsort") {
      if (!v.is_dict()) return fail(p, "dictsort needs a mapping");
      List pairs;
      for (const auto& [k, x] : v.dict()) pairs.push_back(Value(List{Value(k), x}));
      std::stable_sort(pairs.begin(), pairs.end(), [](const Value& x, const Value& y) { return x.list()[0].str() < y.list()[0].str(); });
      return Value(std::move(pairs));
    }
    if (f == "batch") {
      const int64_t size = a.get(0, "linecount").as_int();
      if (size <= 0) return fail(p, "batch size must be positive");
      List out, cur;
      for (const Value& x : items) {
        cur.push_back(x);
        if (static_cast<int64_t>(cur.size()) == size) {
          out.push_back(Value(std::move(cur)));
          cur = List{};
        }
      }
      if (!cur.empty()) out.push_back(Value(std::move(cur)));
      return Value(std::move(out));
    }
    const Value attribute = a.get(f == "sort" ? 2 : 0, "attribute");
    auto key_of = [&](const Value& x) -> Result<Value> {
      if (attribute.is_undefined() || f == "map" || f == "select" || f == "reject") return x;
      return attribute_of(x, attribute, p);
    };
    auto less = [&](const Value& x, const Value& y) -> bool {
      if (x.is_number() && y.is_number()) return x.as_double() < y.as_double();
      if (x.is_string() && y.is_string()) return x.str() < y.str();
      return false;
    };
    if (f == "sort" || f == "unique" || f == "min" || f == "max") {
      std::vector<std::pair<Value, Value>> keyed;
      for (const Value& x : items) {
        SS_ASSIGN_OR_RETURN(Value k, key_of(x));
        keyed.emplace_back(k, x);
      }
      if (f == "unique") {
        List out;
        std::vector<Value> seen;
        for (auto& [k, x] : keyed) {
          if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return equal(s, k); })) continue;
          seen.push_back(k);
          out.push_back(x);
        }
        return Value(std::move(out));
      }
      if (f == "min" || f == "max") {
        if (keyed.empty()) return Value::undefined(f);
        auto it = std::min_element(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
          return f == "min" ? less(x.first, y.first) : less(y.first, x.first);
        });
        return it->second;
      }
      const bool reverse = a.get(0, "reverse").truthy();
      std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
        return reverse ? less(y.first, x.first) : less(x.first, y.first);
      });
      List out;
      for (auto& kv : keyed) out.push_back(kv.second);
      return Value(std::move(out));
    }
    if (f == "sum") {
      Value total = a.has(1, "start") ? a.get(1, "start") : Value(int64_t{0});
      for (const Value& x : items) {
        Value k = x;
        if (!a.get(0, "attribute").is_undefined()) {
SS_ASSIGN_OR_RETURN(k, attribute_of(x, a.get(0, "attribute"), p));
}
        if (!k.is_number() || !total.is_number()) return fail(p, "sum needs numbers");
        total = (k.kind() == Value::Kind::kFloat || total.kind() == Value::Kind::kFloat) ? Value(total.as_double() + k.as_double())
                                                                                       : Value(total.as_int() + k.as_int());
      }
      return total;
    }
    if (f == "map") {
      List out;
      const Value by_attr = a.get(99, "attribute");
      for (const Value& x : items) {
        if (!by_attr.is_undefined()) {
          SS_ASSIGN_OR_RETURN(Value k, attribute_of(x, by_attr, p));
          out.push_back(k.is_undefined() && a.has(99, "default") ? a.get(99, "default") : k);
        } else {
          const std::string filter = a.get(0, "").to_output();
          if (!is_known_filter(filter)) return fail(p, "map: unsupported filter '" + filter + "'");
          CallArgs rest;
          rest.positional.assign(a.positional.begin() + std::min<size_t>(1, a.positional.size()), a.positional.end());
          SS_ASSIGN_OR_RETURN(Value k, apply_filter(filter, x, rest, p));
          out.push_back(k);
        }
      }
      return Value(std::move(out));
    }
    // select / reject / selectattr / rejectattr
    const bool by_attr = f == "selectattr" || f == "rejectattr";
    const bool keep_if = f == "select" || f == "selectattr";
    List out;
    for (const Value& x : items) {
      Value subject = x;
      if (by_attr) {
SS_ASSIGN_OR_RETURN(subject, attribute_of(x, a.get(0, "attribute"), p));
}
      const size_t test_index = by_attr ? 1 : 0;
      bool ok;
      if (a.positional.size() <= test_index) {
        ok = subject.truthy();
      } else {
        const std::string test = a.positional[test_index].to_output();
        if (!is_known_test(test)) return fail(p, f + ": unsupported test '" + test + "'");
        CallArgs targs;
        targs.positional.assign(a.positional.begin() + static_cast<long>(test_index) + 1, a.positional.end());
        SS_ASSIGN_OR_RETURN(ok, run_test(test, subject, targs, p));
      }
      if (ok == keep_if) out.push_back(x);
    }
    return Value(std::move(out));
  }

  const Template& tmpl_;
  RenderLimits limits_;
  std::vector<Scope> scopes_;
  std::string out_;
  int depth_ = 0;
  int64_t iterations_ = 0;
};

}  // namespace

Result<std::string> render(const Template& tmpl, const Value& context, const RenderLimits& limits) {
  Interpreter interpreter(tmpl, limits);
  return interpreter.run(context);
}

}  // namespace seekserve::jinja
