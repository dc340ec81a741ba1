// Jinja2 template parsing with transformers' settings (trim_blocks, lstrip_blocks, loop
// controls). Constructs outside the supported subset are compile errors with line and column.
#pragma once

#include <string>

#include "chat/jinja_ast.h"

namespace seekserve::jinja {

struct Template {
  Body body;
  std::string source;
};

Result<std::shared_ptr<const Template>> parse_template(const std::string& source);

// Names the interpreter knows; the parser refuses anything else at compile time.
bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);
bool is_known_global(const std::string& name);
bool is_known_method(const std::string& name);

}  // namespace seekserve::jinja
