#include "chat/jinja_parser.h"

#include <algorithm>
#include <set>

namespace seekserve::jinja {

namespace {

// ---- Segments: text and tags, with whitespace control applied ---------------------------

struct Segment {
  enum Kind { kText, kVar, kBlock } kind;
  std::string content;  // text, or the tag's inner source
  size_t offset = 0;    // where the inner source starts in the template
};

SourcePos position_of(const std::string& source, size_t offset) {
  SourcePos p;
  for (size_t i = 0; i < offset && i < source.size(); ++i) {
    if (source[i] == '\n') {
      ++p.line;
      p.column = 1;
    } else if ((static_cast<unsigned char>(source[i]) & 0xc0) != 0x80) {
      ++p.column;
    }
  }
  return p;
}

Status error_at(const std::string& source, size_t offset, const std::string& message) {
  const SourcePos p = position_of(source, offset);
  return invalid_argument("chat template line " + std::to_string(p.line) + " column " + std::to_string(p.column) + ": " + message);
}

// End of a var/block tag starting its inner source at `i`: skips string literals.
size_t find_tag_end(const std::string& s, size_t i, const char* end) {
  while (i < s.size()) {
    const char c = s[i];
    if (c == '\'' || c == '"') {
      ++i;
      while (i < s.size() && s[i] != c) i += s[i] == '\\' ? 2 : 1;
      ++i;
      continue;
    }
    if (s.compare(i, 2, end) == 0) return i;
    ++i;
  }
  return std::string::npos;
}

bool only_spaces(const std::string& s, size_t from) {
  for (size_t i = from; i < s.size(); ++i)
    if (s[i] != ' ' && s[i] != '\t') return false;
  return true;
}

void rstrip_ws(std::string* s) {
  while (!s->empty() && std::isspace(static_cast<unsigned char>(s->back()))) s->pop_back();
}

Result<std::vector<Segment>> split_segments(const std::string& src) {
  std::vector<Segment> out;
  std::string text;
  bool text_at_line_start = true;  // the pending text begins at the start of a line
  bool strip_next = false, trim_next_newline = false;
  size_t i = 0;
  auto flush_text = [&]() {
    out.push_back({Segment::kText, text, 0});
    text.clear();
  };
  while (i <= src.size()) {
    size_t open = src.find('{', i);
    while (open != std::string::npos && open + 1 < src.size() && src[open + 1] != '{' && src[open + 1] != '%' && src[open + 1] != '#')
      open = src.find('{', open + 1);
    if (open == std::string::npos || open + 1 >= src.size()) open = src.size();
    std::string chunk = src.substr(i, open - i);
    if (strip_next) {
      size_t k = 0;
      while (k < chunk.size() && std::isspace(static_cast<unsigned char>(chunk[k]))) ++k;
      chunk.erase(0, k);
    } else if (trim_next_newline && !chunk.empty() && chunk[0] == '\n') {
      chunk.erase(0, 1);
    }
    strip_next = trim_next_newline = false;
    text += chunk;
    if (open >= src.size()) break;

    const char kind = src[open + 1];
    size_t inner = open + 2;
    const bool left_minus = inner < src.size() && src[inner] == '-';
    const bool left_plus = inner < src.size() && src[inner] == '+';
    if (left_minus || left_plus) ++inner;
    // Whitespace control on the text before the tag.
    if (left_minus) {
      rstrip_ws(&text);
    } else if ((kind == '%' || kind == '#') && !left_plus) {
      const size_t nl = text.rfind('\n');
      if (nl != std::string::npos ? only_spaces(text, nl + 1) : (text_at_line_start && only_spaces(text, 0)))
        text.erase(nl == std::string::npos ? 0 : nl + 1);
    }
    size_t close;
    if (kind == '#') {
      close = src.find("#}", inner);
      if (close == std::string::npos) return error_at(src, open, "comment is never closed");
    } else {
      close = find_tag_end(src, inner, kind == '{' ? "}}" : "%}");
      if (close == std::string::npos) return error_at(src, open, std::string("tag is never closed (expected ") + (kind == '{' ? "}}" : "%}") + ")");
    }
    const bool right_minus = close > inner && src[close - 1] == '-';
    const size_t inner_end = right_minus || (close > inner && src[close - 1] == '+') ? close - 1 : close;
    std::string content = src.substr(inner, inner_end - inner);
    i = close + 2;

    if (kind == '%') {
      // {% raw %} ... {% endraw %}: copy verbatim.
      std::string trimmed = content;
      trimmed.erase(0, trimmed.find_first_not_of(" \t\r\n"));
      trimmed.erase(trimmed.find_last_not_of(" \t\r\n") + 1);
      if (trimmed == "raw") {
        size_t end = i;
        while (true) {
          end = src.find("{%", end);
          if (end == std::string::npos) return error_at(src, open, "raw block is never closed");
          size_t k = end + 2;
          if (k < src.size() && (src[k] == '-' || src[k] == '+')) ++k;
          while (k < src.size() && std::isspace(static_cast<unsigned char>(src[k]))) ++k;
          if (src.compare(k, 6, "endraw") == 0) break;
          end += 2;
        }
        std::string raw = src.substr(i, end - i);
        if (right_minus) raw.erase(0, raw.find_first_not_of(" \t\r\n") == std::string::npos ? raw.size() : raw.find_first_not_of(" \t\r\n"));
        else if (!raw.empty() && raw[0] == '\n') raw.erase(0, 1);
        const size_t endraw_close = src.find("%}", end);
        if (endraw_close == std::string::npos) return error_at(src, end, "endraw tag is never closed");
        if (src[end + 2] == '-') rstrip_ws(&raw);
        text += raw;
        i = endraw_close + 2;
        trim_next_newline = true;
        strip_next = src[endraw_close - 1] == '-';
        continue;
      }
    }
    if (kind != '#') {
      flush_text();
      out.push_back({kind == '{' ? Segment::kVar : Segment::kBlock, content, inner});
      text_at_line_start = false;
    }
    strip_next = right_minus;
    trim_next_newline = !right_minus && kind != '{';  // trim_blocks: not after {{ }}
  }
  flush_text();
  return out;
}

// ---- Expression tokens -------------------------------------------------------------------

struct Token {
  enum Kind { kName, kInt, kFloat, kString, kOp, kEnd } kind;
  std::string text;
  Value value;
  size_t offset = 0;
};

Result<std::vector<Token>> tokenize(const std::string& src, const std::string& s, size_t base) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    const size_t start = i;
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_')) ++i;
      out.push_back({Token::kName, s.substr(start, i - start), {}, base + start});
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      bool is_float = false;
      while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '_')) ++i;
      if (i + 1 < s.size() && s[i] == '.' && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
        is_float = true;
        ++i;
        while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
      }
      if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
        is_float = true;
        ++i;
        if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
        while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
      }
      std::string digits = s.substr(start, i - start);
      std::erase(digits, '_');
      Token t{is_float ? Token::kFloat : Token::kInt, digits, {}, base + start};
      try {
        t.value = is_float ? Value(std::stod(digits)) : Value(static_cast<int64_t>(std::stoll(digits)));
      } catch (...) {
        return error_at(src, base + start, "number '" + digits + "' is out of range");
      }
      out.push_back(std::move(t));
    } else if (c == '\'' || c == '"') {
      std::string value;
      ++i;
      while (i < s.size() && s[i] != c) {
        if (s[i] == '\\' && i + 1 < s.size()) {
          const char e = s[++i];
          switch (e) {
            case 'n': value += '\n'; break;
            case 't': value += '\t'; break;
            case 'r': value += '\r'; break;
            case '\\': value += '\\'; break;
            case '\'': value += '\''; break;
            case '"': value += '"'; break;
            default: value += '\\'; value += e;
          }
          ++i;
        } else {
          value += s[i++];
        }
      }
      if (i >= s.size()) return error_at(src, base + start, "string literal is never closed");
      ++i;
      out.push_back({Token::kString, value, Value(value), base + start});
    } else {
      static const char* kOps[] = {"**", "//", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ",", ".", ":",
                                   "|", "~", "+", "-", "*", "/", "%", "<", ">", "="};
      bool matched = false;
      for (const char* op : kOps) {
        const size_t n = std::char_traits<char>::length(op);
        if (s.compare(i, n, op) == 0) {
          out.push_back({Token::kOp, op, {}, base + start});
          i += n;
          matched = true;
          break;
        }
      }
      if (!matched) return error_at(src, base + start, std::string("unexpected character '") + c + "'");
    }
  }
  out.push_back({Token::kEnd, "", {}, base + s.size()});
  return out;
}

// ---- Parser ------------------------------------------------------------------------------

class Parser {
 public:
  explicit Parser(const std::string& source) : src_(source) {}

  Result<Body> parse_all() {
    SS_ASSIGN_OR_RETURN(segments_, split_segments(src_));
    for (const Segment& seg : segments_)
      if (seg.kind == Segment::kBlock) {
        // Macros may be called before their definition in document order: collect names first.
        auto toks = tokenize(src_, seg.content, seg.offset);
        if (toks.ok() && toks->size() > 1 && (*toks)[0].text == "macro" && (*toks)[1].kind == Token::kName)
          macros_.insert((*toks)[1].text);
      }
    std::string end;
    SS_ASSIGN_OR_RETURN(Body body, parse_body({}, &end));
    return body;
  }

 private:
  // ---- statements
  Result<Body> parse_body(const std::vector<std::string>& ends, std::string* found_end) {
    Body body;
    while (seg_ < segments_.size()) {
      const Segment& seg = segments_[seg_];
      if (seg.kind == Segment::kText) {
        ++seg_;
        if (seg.content.empty()) continue;
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kText;
        s->text = seg.content;
        body.push_back(std::move(s));
        continue;
      }
      SS_RETURN_IF_ERROR(begin_tag(seg));
      if (seg.kind == Segment::kVar) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kOutput;
        s->pos = pos_here();
        SS_ASSIGN_OR_RETURN(s->expr, parse_expression());
        SS_RETURN_IF_ERROR(expect_end());
        ++seg_;
        body.push_back(std::move(s));
        continue;
      }
      const Token& kw = tok();
      if (kw.kind != Token::kName) return error("expected a statement name");
      if (std::find(ends.begin(), ends.end(), kw.text) != ends.end()) {
        *found_end = kw.text;
        return body;  // the caller consumes the end tag
      }
      SS_ASSIGN_OR_RETURN(auto stmt, parse_statement());
      if (stmt) body.push_back(std::move(stmt));
    }
    if (!ends.empty()) return error_at(src_, src_.size(), "template ended while looking for {% " + ends.back() + " %}");
    return body;
  }

  Result<std::unique_ptr<Stmt>> parse_statement() {
    const std::string kw = tok().text;
    const SourcePos pos = pos_here();
    ++t_;
    auto s = std::make_unique<Stmt>();
    s->pos = pos;
    if (kw == "if") return parse_if(std::move(s));
    if (kw == "for") return parse_for(std::move(s));
    if (kw == "set") return parse_set(std::move(s));
    if (kw == "macro") return parse_macro(std::move(s));
    if (kw == "break" || kw == "continue") {
      if (loop_depth_ == 0) return error_at_pos(pos, "'" + kw + "' outside a for loop");
      s->kind = kw == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      SS_RETURN_IF_ERROR(expect_end());
      ++seg_;
      return s;
    }
    if (kw == "generation" || kw == "endgeneration") {  // transformers' assistant-mask marker: no output
      SS_RETURN_IF_ERROR(expect_end());
      ++seg_;
      return std::unique_ptr<Stmt>();
    }
    return error_at_pos(pos, "unsupported statement '{% " + kw + " %}' (supported: if, for, set, macro, break, continue, raw)");
  }

  Result<std::unique_ptr<Stmt>> parse_if(std::unique_ptr<Stmt> s) {
    s->kind = Stmt::Kind::kIf;
    ExprPtr cond;
    SS_ASSIGN_OR_RETURN(cond, parse_expression());
    while (true) {
      SS_RETURN_IF_ERROR(expect_end());
      ++seg_;
      std::string end;
      SS_ASSIGN_OR_RETURN(Body body, parse_body({"elif", "else", "endif"}, &end));
      s->branches.emplace_back(std::move(cond), std::move(body));
      ++t_;  // the end keyword
      if (end == "endif") break;
      if (end == "elif") {
        SS_ASSIGN_OR_RETURN(cond, parse_expression());
      } else {
        SS_RETURN_IF_ERROR(expect_end());
        ++seg_;
        std::string end2;
        SS_ASSIGN_OR_RETURN(Body else_body, parse_body({"endif"}, &end2));
        s->branches.emplace_back(nullptr, std::move(else_body));
        ++t_;
        break;
      }
    }
    SS_RETURN_IF_ERROR(expect_end());
    ++seg_;
    return s;
  }

  Result<std::unique_ptr<Stmt>> parse_for(std::unique_ptr<Stmt> s) {
    s->kind = Stmt::Kind::kFor;
    do {
      if (tok().kind != Token::kName) return error("expected a loop variable");
      s->targets.push_back(tok().text);
      ++t_;
    } while (accept(","));
    if (!accept_name("in")) return error("expected 'in'");
    SS_ASSIGN_OR_RETURN(s->expr, parse_or());  // no ternary here: "if" introduces the filter
    if (accept_name("if")) {
SS_ASSIGN_OR_RETURN(s->filter, parse_or());
}
    if (tok().kind == Token::kName && tok().text == "recursive") return error("recursive loops are not supported");
    SS_RETURN_IF_ERROR(expect_end());
    ++seg_;
    ++loop_depth_;
    std::string end;
    SS_ASSIGN_OR_RETURN(s->body, parse_body({"else", "endfor"}, &end));
    --loop_depth_;
    ++t_;
    if (end == "else") {
      SS_RETURN_IF_ERROR(expect_end());
      ++seg_;
      SS_ASSIGN_OR_RETURN(s->else_body, parse_body({"endfor"}, &end));
      ++t_;
    }
    SS_RETURN_IF_ERROR(expect_end());
    ++seg_;
    return s;
  }

  Result<std::unique_ptr<Stmt>> parse_set(std::unique_ptr<Stmt> s) {
    s->kind = Stmt::Kind::kSet;
    do {
      if (tok().kind != Token::kName) return error("expected a variable name after 'set'");
      std::string target = tok().text;
      ++t_;
      if (accept(".")) {
        if (tok().kind != Token::kName) return error("expected an attribute name");
        target += "." + tok().text;
        ++t_;
      }
      s->targets.push_back(target);
    } while (accept(","));
    if (accept("=")) {
      SS_ASSIGN_OR_RETURN(s->expr, parse_tuple_or_expression());
      SS_RETURN_IF_ERROR(expect_end());
      ++seg_;
      return s;
    }
    if (s->targets.size() != 1 || s->targets[0].find('.') != std::string::npos) return error("expected '='");
    s->block_set = true;
    SS_RETURN_IF_ERROR(expect_end());
    ++seg_;
    std::string end;
    SS_ASSIGN_OR_RETURN(s->body, parse_body({"endset"}, &end));
    ++t_;
    SS_RETURN_IF_ERROR(expect_end());
    ++seg_;
    return s;
  }

  Result<std::unique_ptr<Stmt>> parse_macro(std::unique_ptr<Stmt> s) {
    s->kind = Stmt::Kind::kMacro;
    if (tok().kind != Token::kName) return error("expected a macro name");
    s->name = tok().text;
    ++t_;
    if (!accept("(")) return error("expected '(' after the macro name");
    while (!accept(")")) {
      if (tok().kind != Token::kName) return error("expected a parameter name");
      std::string param = tok().text;
      ++t_;
      ExprPtr def;
      if (accept("=")) {
SS_ASSIGN_OR_RETURN(def, parse_expression());
}
      s->params.emplace_back(param, std::move(def));
      if (!accept(",") && !(tok().kind == Token::kOp && tok().text == ")")) return error("expected ',' or ')'");
    }
    SS_RETURN_IF_ERROR(expect_end());
    ++seg_;
    const int saved = loop_depth_;
    loop_depth_ = 0;
    std::string end;
    SS_ASSIGN_OR_RETURN(s->body, parse_body({"endmacro"}, &end));
    loop_depth_ = saved;
    ++t_;
    SS_RETURN_IF_ERROR(expect_end());
    ++seg_;
    return s;
  }

  // ---- expressions (Jinja's precedence)
  Result<ExprPtr> parse_tuple_or_expression() {
    SS_ASSIGN_OR_RETURN(ExprPtr first, parse_expression());
    if (!(tok().kind == Token::kOp && tok().text == ",")) return first;
    auto tuple = make(Expr::Kind::kTuple, first->pos);
    tuple->items.push_back(std::move(first));
    while (accept(",")) {
      if (tok().kind == Token::kEnd) break;
      SS_ASSIGN_OR_RETURN(ExprPtr e, parse_expression());
      tuple->items.push_back(std::move(e));
    }
    return tuple;
  }

  Result<ExprPtr> parse_expression() {
    SS_ASSIGN_OR_RETURN(ExprPtr then, parse_or());
    if (!(tok().kind == Token::kName && tok().text == "if")) return then;
    const SourcePos pos = pos_here();
    ++t_;
    auto e = make(Expr::Kind::kTernary, pos);
    SS_ASSIGN_OR_RETURN(ExprPtr cond, parse_or());
    ExprPtr otherwise;
    if (accept_name("else")) {
SS_ASSIGN_OR_RETURN(otherwise, parse_expression());
}
    e->items.push_back(std::move(then));
    e->items.push_back(std::move(cond));
    e->items.push_back(std::move(otherwise));
    return e;
  }

  Result<ExprPtr> binary(ExprPtr left, const std::string& op, ExprPtr right, SourcePos pos) {
    auto e = make(Expr::Kind::kBinary, pos);
    e->name = op;
    e->left = std::move(left);
    e->right = std::move(right);
    return e;
  }

  Result<ExprPtr> parse_or() {
    SS_ASSIGN_OR_RETURN(ExprPtr left, parse_and());
    while (tok().kind == Token::kName && tok().text == "or") {
      const SourcePos pos = pos_here();
      ++t_;
      SS_ASSIGN_OR_RETURN(ExprPtr right, parse_and());
      SS_ASSIGN_OR_RETURN(left, binary(std::move(left), "or", std::move(right), pos));
    }
    return left;
  }

  Result<ExprPtr> parse_and() {
    SS_ASSIGN_OR_RETURN(ExprPtr left, parse_not());
    while (tok().kind == Token::kName && tok().text == "and") {
      const SourcePos pos = pos_here();
      ++t_;
      SS_ASSIGN_OR_RETURN(ExprPtr right, parse_not());
      SS_ASSIGN_OR_RETURN(left, binary(std::move(left), "and", std::move(right), pos));
    }
    return left;
  }

  Result<ExprPtr> parse_not() {
    if (tok().kind == Token::kName && tok().text == "not") {
      auto e = make(Expr::Kind::kUnary, pos_here());
      ++t_;
      e->name = "not";
      SS_ASSIGN_OR_RETURN(e->object, parse_not());
      return e;
    }
    return parse_compare();
  }

  Result<ExprPtr> parse_compare() {
    SS_ASSIGN_OR_RETURN(ExprPtr left, parse_math1());
    while (true) {
      const SourcePos pos = pos_here();
      std::string op;
      if (tok().kind == Token::kOp && (tok().text == "==" || tok().text == "!=" || tok().text == "<" ||
                                       tok().text == ">" || tok().text == "<=" || tok().text == ">=")) {
        op = tok().text;
        ++t_;
      } else if (tok().kind == Token::kName && tok().text == "in") {
        op = "in";
        ++t_;
      } else if (tok().kind == Token::kName && tok().text == "not" && peek().kind == Token::kName && peek().text == "in") {
        op = "not in";
        t_ += 2;
      } else {
        return left;
      }
      SS_ASSIGN_OR_RETURN(ExprPtr right, parse_math1());
      SS_ASSIGN_OR_RETURN(left, binary(std::move(left), op, std::move(right), pos));
    }
  }

  Result<ExprPtr> parse_math1() {
    SS_ASSIGN_OR_RETURN(ExprPtr left, parse_concat());
    while (tok().kind == Token::kOp && (tok().text == "+" || tok().text == "-")) {
      const std::string op = tok().text;
      const SourcePos pos = pos_here();
      ++t_;
      SS_ASSIGN_OR_RETURN(ExprPtr right, parse_concat());
      SS_ASSIGN_OR_RETURN(left, binary(std::move(left), op, std::move(right), pos));
    }
    return left;
  }

  Result<ExprPtr> parse_concat() {
    SS_ASSIGN_OR_RETURN(ExprPtr left, parse_math2());
    while (tok().kind == Token::kOp && tok().text == "~") {
      const SourcePos pos = pos_here();
      ++t_;
      SS_ASSIGN_OR_RETURN(ExprPtr right, parse_math2());
      SS_ASSIGN_OR_RETURN(left, binary(std::move(left), "~", std::move(right), pos));
    }
    return left;
  }

  Result<ExprPtr> parse_math2() {
    SS_ASSIGN_OR_RETURN(ExprPtr left, parse_pow());
    while (tok().kind == Token::kOp && (tok().text == "*" || tok().text == "/" || tok().text == "//" || tok().text == "%")) {
      const std::string op = tok().text;
      const SourcePos pos = pos_here();
      ++t_;
      SS_ASSIGN_OR_RETURN(ExprPtr right, parse_pow());
      SS_ASSIGN_OR_RETURN(left, binary(std::move(left), op, std::move(right), pos));
    }
    return left;
  }

  Result<ExprPtr> parse_pow() {
    SS_ASSIGN_OR_RETURN(ExprPtr left, parse_unary());
    while (tok().kind == Token::kOp && tok().text == "**") {
      const SourcePos pos = pos_here();
      ++t_;
      SS_ASSIGN_OR_RETURN(ExprPtr right, parse_unary());
      SS_ASSIGN_OR_RETURN(left, binary(std::move(left), "**", std::move(right), pos));
    }
    return left;
  }

  Result<ExprPtr> parse_unary() {
    if (tok().kind == Token::kOp && (tok().text == "-" || tok().text == "+")) {
      auto e = make(Expr::Kind::kUnary, pos_here());
      e->name = tok().text;
      ++t_;
      SS_ASSIGN_OR_RETURN(e->object, parse_unary());
      return parse_filters(std::move(e));
    }
    SS_ASSIGN_OR_RETURN(ExprPtr e, parse_primary());
    SS_ASSIGN_OR_RETURN(e, parse_postfix(std::move(e)));
    return parse_filters(std::move(e));
  }

  Result<ExprPtr> parse_primary() {
    const Token& t = tok();
    const SourcePos pos = pos_here();
    if (t.kind == Token::kString) {
      // Adjacent string literals concatenate, as in Python.
      std::string s;
      while (tok().kind == Token::kString) {
        s += tok().value.str();
        ++t_;
      }
      auto e = make(Expr::Kind::kLiteral, pos);
      e->value = Value(s);
      return e;
    }
    if (t.kind == Token::kInt || t.kind == Token::kFloat) {
      auto e = make(Expr::Kind::kLiteral, pos);
      e->value = t.value;
      ++t_;
      return e;
    }
    if (t.kind == Token::kName) {
      auto e = make(Expr::Kind::kLiteral, pos);
      if (t.text == "true" || t.text == "True") e->value = Value(true);
      else if (t.text == "false" || t.text == "False") e->value = Value(false);
      else if (t.text == "none" || t.text == "None") e->value = Value::none();
      else {
        e->kind = Expr::Kind::kName;
        e->name = t.text;
      }
      ++t_;
      return e;
    }
    if (accept("(")) {
      if (accept(")")) return make(Expr::Kind::kTuple, pos);
      SS_ASSIGN_OR_RETURN(ExprPtr first, parse_expression());
      if (accept(")")) return first;
      auto tuple = make(Expr::Kind::kTuple, pos);
      tuple->items.push_back(std::move(first));
      while (accept(",")) {
        if (tok().kind == Token::kOp && tok().text == ")") break;
        SS_ASSIGN_OR_RETURN(ExprPtr e, parse_expression());
        tuple->items.push_back(std::move(e));
      }
      if (!accept(")")) return error("expected ')'");
      return tuple;
    }
    if (accept("[")) {
      auto list = make(Expr::Kind::kList, pos);
      while (!accept("]")) {
        SS_ASSIGN_OR_RETURN(ExprPtr e, parse_expression());
        list->items.push_back(std::move(e));
        if (!accept(",") && !(tok().kind == Token::kOp && tok().text == "]")) return error("expected ',' or ']'");
      }
      return list;
    }
    if (accept("{")) {
      auto dict = make(Expr::Kind::kDict, pos);
      while (!accept("}")) {
        SS_ASSIGN_OR_RETURN(ExprPtr k, parse_expression());
        if (!accept(":")) return error("expected ':' in a dict literal");
        SS_ASSIGN_OR_RETURN(ExprPtr v, parse_expression());
        dict->items.push_back(std::move(k));
        dict->items.push_back(std::move(v));
        if (!accept(",") && !(tok().kind == Token::kOp && tok().text == "}")) return error("expected ',' or '}'");
      }
      return dict;
    }
    return error(t.kind == Token::kEnd ? "expected an expression" : "unexpected '" + t.text + "'");
  }

  Result<ExprPtr> parse_postfix(ExprPtr e) {
    while (true) {
      const SourcePos pos = pos_here();
      if (accept(".")) {
        if (tok().kind != Token::kName && tok().kind != Token::kInt) return error("expected an attribute name after '.'");
        auto a = make(Expr::Kind::kAttr, pos);
        a->name = tok().text;
        a->object = std::move(e);
        ++t_;
        e = std::move(a);
      } else if (accept("[")) {
        ExprPtr parts[3];
        bool is_slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!(tok().kind == Token::kOp && (tok().text == ":" || tok().text == "]"))) {
            SS_ASSIGN_OR_RETURN(parts[k], parse_expression());
          }
          if (k < 2 && accept(":")) {
            is_slice = true;
            continue;
          }
          break;
        }
        if (!accept("]")) return error("expected ']'");
        auto s = make(is_slice ? Expr::Kind::kSlice : Expr::Kind::kItem, pos);
        s->object = std::move(e);
        if (is_slice) {
          for (auto& p : parts) s->items.push_back(std::move(p));
        } else {
          if (!parts[0]) return error("expected an index");
          s->left = std::move(parts[0]);
        }
        e = std::move(s);
      } else if (tok().kind == Token::kOp && tok().text == "(") {
        auto c = make(Expr::Kind::kCall, pos);
        SS_RETURN_IF_ERROR(check_callable(*e));
        c->object = std::move(e);
        SS_RETURN_IF_ERROR(parse_call_args(c.get()));
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  Status check_callable(const Expr& callee) {
    if (callee.kind == Expr::Kind::kName) {
      if (is_known_global(callee.name) || macros_.count(callee.name)) return Status::Ok();
      return error("unknown function '" + callee.name + "'");
    }
    if (callee.kind == Expr::Kind::kAttr) {
      if (is_known_method(callee.name)) return Status::Ok();
      return error("unsupported method '" + callee.name + "'");
    }
    return error("this expression cannot be called");
  }

  Status parse_call_args(Expr* call) {
    if (!accept("(")) return error("expected '('");
    while (!accept(")")) {
      if (tok().kind == Token::kName && peek().kind == Token::kOp && peek().text == "=") {
        std::string key = tok().text;
        t_ += 2;
        SS_ASSIGN_OR_RETURN(ExprPtr v, parse_expression());
        call->kwargs.emplace_back(key, std::move(v));
      } else {
        SS_ASSIGN_OR_RETURN(ExprPtr v, parse_expression());
        call->args.push_back(std::move(v));
      }
      if (!accept(",") && !(tok().kind == Token::kOp && tok().text == ")")) return error("expected ',' or ')'");
    }
    return Status::Ok();
  }

  Result<ExprPtr> parse_filters(ExprPtr e) {
    while (true) {
      const SourcePos pos = pos_here();
      if (accept("|")) {
        if (tok().kind != Token::kName) return error("expected a filter name after '|'");
        auto f = make(Expr::Kind::kFilter, pos);
        f->name = tok().text;
        if (!is_known_filter(f->name)) return error("unsupported filter '" + f->name + "'");
        ++t_;
        f->object = std::move(e);
        if (tok().kind == Token::kOp && tok().text == "(") SS_RETURN_IF_ERROR(parse_call_args(f.get()));
        e = std::move(f);
      } else if (tok().kind == Token::kName && tok().text == "is") {
        ++t_;
        auto t = make(Expr::Kind::kTest, pos);
        t->negated = accept_name("not");
        if (tok().kind != Token::kName) return error("expected a test name after 'is'");
        t->name = tok().text;
        if (!is_known_test(t->name)) return error("unsupported test '" + t->name + "'");
        ++t_;
        t->object = std::move(e);
        if (tok().kind == Token::kOp && tok().text == "(") {
          SS_RETURN_IF_ERROR(parse_call_args(t.get()));
        } else if (tok().kind == Token::kString || tok().kind == Token::kInt || tok().kind == Token::kFloat ||
                   (tok().kind == Token::kName && tok().text != "and" && tok().text != "or" && tok().text != "else" &&
                    tok().text != "if" && tok().text != "in" && tok().text != "not" && tok().text != "is")) {
          SS_ASSIGN_OR_RETURN(ExprPtr arg, parse_primary());  // "is divisibleby 3"
          t->args.push_back(std::move(arg));
        }
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  // ---- token helpers
  Status begin_tag(const Segment& seg) {
    SS_ASSIGN_OR_RETURN(tokens_, tokenize(src_, seg.content, seg.offset));
    t_ = 0;
    return Status::Ok();
  }
  const Token& tok() const { return tokens_[std::min(t_, tokens_.size() - 1)]; }
  const Token& peek() const { return tokens_[std::min(t_ + 1, tokens_.size() - 1)]; }
  bool accept(const char* op) {
    if (tok().kind == Token::kOp && tok().text == op) {
      ++t_;
      return true;
    }
    return false;
  }
  bool accept_name(const char* name) {
    if (tok().kind == Token::kName && tok().text == name) {
      ++t_;
      return true;
    }
    return false;
  }
  Status expect_end() {
    if (tok().kind == Token::kEnd) return Status::Ok();
    return error("unexpected '" + tok().text + "' (expected the end of the tag)");
  }
  SourcePos pos_here() const { return position_of(src_, tok().offset); }
  Status error(const std::string& message) const { return error_at(src_, tok().offset, message); }
  Status error_at_pos(SourcePos p, const std::string& message) const {
    return invalid_argument("chat template line " + std::to_string(p.line) + " column " + std::to_string(p.column) + ": " + message);
  }
  ExprPtr make(Expr::Kind kind, SourcePos pos) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = pos;
    return e;
  }

  const std::string& src_;
  std::vector<Segment> segments_;
  size_t seg_ = 0;
  std::vector<Token> tokens_;
  size_t t_ = 0;
  int loop_depth_ = 0;
  std::set<std::string> macros_;
};

}  // namespace

bool is_known_filter(const std::string& n) {
  static const std::set<std::string> kFilters = {
      "tojson", "length", "count", "string", "int", "float", "trim", "upper", "lower", "title", "capitalize",
      "first", "last", "join", "default", "d", "list", "items", "safe", "replace", "abs", "round", "reverse",
      "sort", "unique", "map", "select", "reject", "selectattr", "rejectattr", "min", "max", "sum", "indent",
      "e", "escape", "dictsort", "batch", "wordcount", "center"};
  return kFilters.count(n) > 0;
}

bool is_known_test(const std::string& n) {
  static const std::set<std::string> kTests = {
      "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "mapping", "iterable",
      "sequence", "true", "false", "odd", "even", "divisibleby", "eq", "equalto", "ne", "in", "lower", "upper",
      "callable", "sameas", "gt", "ge", "lt", "le"};
  return kTests.count(n) > 0;
}

bool is_known_global(const std::string& n) {
  static const std::set<std::string> kGlobals = {"range", "namespace", "raise_exception", "strftime_now", "dict"};
  return kGlobals.count(n) > 0;
}

bool is_known_method(const std::string& n) {
  static const std::set<std::string> kMethods = {
      "startswith", "endswith", "strip", "lstrip", "rstrip", "split", "rsplit", "replace", "upper", "lower",
      "title", "capitalize", "find", "rfind", "count", "splitlines", "isdigit", "isalpha", "isspace", "join",
      "items", "keys", "values", "get", "index", "format"};
  return kMethods.count(n) > 0;
}

Result<std::shared_ptr<const Template>> parse_template(const std::string& source) {
  auto t = std::make_shared<Template>();
  t->source = source;
  Parser parser(t->source);
  SS_ASSIGN_OR_RETURN(t->body, parser.parse_all());
  return std::shared_ptr<const Template>(std::move(t));
}

}  // namespace seekserve::jinja
