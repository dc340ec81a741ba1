// Parsed form of a template: expressions and statements, each with the line and column it
// came from for error messages.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "chat/jinja_value.h"

namespace seekserve::jinja {

struct SourcePos {
  int line = 1;
  int column = 1;
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,    // value
    kName,       // name
    kList,       // items
    kTuple,      // items
    kDict,       // items as key, value pairs
    kAttr,       // object.name
    kItem,       // object[index]
    kSlice,      // object[start:stop:step] (items: start, stop, step, each may be null)
    kCall,       // callee(args..., name=kwargs...)
    kFilter,     // object | name(args)
    kTest,       // object is [not] name(args)
    kUnary,      // op object ("not", "-", "+")
    kBinary,     // left op right
    kTernary,    // then if cond else otherwise (items: then, cond, otherwise)
  };
  Kind kind;
  SourcePos pos;
  Value value;
  std::string name;  // identifier, attribute, filter/test/function name, or operator
  bool negated = false;  // kTest: "is not"
  ExprPtr object, left, right;
  std::vector<ExprPtr> items;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // branches: (condition, body) pairs; a null condition is else
    kFor,       // targets in iterable [if filter] body [else else_body]
    kSet,       // targets (names or ns.attr) = expr, or a block set when body is used
    kMacro,     // name(params with defaults) body
    kBreak,
    kContinue,
  };
  Kind kind;
  SourcePos pos;
  std::string text;
  ExprPtr expr;     // output, set value, for iterable
  ExprPtr filter;   // for ... if filter
  std::vector<std::string> targets;       // for/set targets; set "ns.attr" keeps the dot
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body, else_body;
  bool block_set = false;
  std::string name;                       // macro name
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters and defaults
};

}  // namespace seekserve::jinja
