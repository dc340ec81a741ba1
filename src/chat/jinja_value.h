// Values of the Jinja2 subset used by chat templates, with Python's semantics for truthiness,
// equality, str() and repr() (templates are written against Python's jinja2).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"

namespace seekserve::jinja {

class Value;
using List = std::vector<Value>;
// Insertion-ordered, as Python dicts are (tojson output keeps the order messages were sent in).
using Dict = std::vector<std::pair<std::string, Value>>;

struct CallArgs;
using Function = std::function<Result<Value>(CallArgs&)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };

  Value() = default;  // undefined
  static Value none();
  Value(bool b);           // NOLINT
  Value(int64_t i);        // NOLINT
  Value(int i) : Value(static_cast<int64_t>(i)) {}  // NOLINT
  Value(double d);         // NOLINT
  Value(std::string s);    // NOLINT
  Value(const char* s) : Value(std::string(s)) {}  // NOLINT
  Value(List list);        // NOLINT
  Value(Dict dict, bool is_namespace = false);
  static Value function(std::string name, Function fn);
  // For undefined values that remember which name was missing (for error messages).
  static Value undefined(std::string hint);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return kind_ == Kind::kDict && is_namespace_; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return kind_ == Kind::kFloat ? static_cast<int64_t>(d_) : i_; }
  double as_double() const { return kind_ == Kind::kFloat ? d_ : static_cast<double>(i_); }
  const std::string& str() const { return *s_; }
  const List& list() const { return *list_; }
  List& mutable_list() { return *list_; }
  const Dict& dict() const { return *dict_; }
  Dict& mutable_dict() { return *dict_; }
  const std::string& name() const { return *s_; }  // function name or undefined hint
  const Function& fn() const { return *fn_; }

  // Python truthiness.
  bool truthy() const;
  // Dict lookup (nullptr when absent).
  const Value* find(const std::string& key) const;
  void set(const std::string& key, Value v);
  // Python type name, for error messages ("NoneType", "str", ...).
  std::string type_name() const;

  // str(value) as Jinja prints it; undefined prints as "".
  std::string to_output() const;
  // repr(value), as Python prints list elements.
  std::string repr() const;
  // json.dumps(value, ensure_ascii=False, indent=indent) with Python's separators.
  Result<std::string> to_json(int indent = -1, bool sort_keys = false) const;

  static Value from_json(const nlohmann::ordered_json& j);

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  bool is_namespace_ = false;
  int64_t i_ = 0;
  double d_ = 0.0;
  std::shared_ptr<std::string> s_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<Function> fn_;
};

// Python ==, with 1 == 1.0 == True.
bool equal(const Value& a, const Value& b);
// Python's repr of a float (shortest round-trip digits).
std::string python_float_repr(double d);

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // Positional i, or keyword `name`, or undefined.
  Value get(size_t i, const std::string& name) const;
  bool has(size_t i, const std::string& name) const;
};

}  // namespace seekserve::jinja
