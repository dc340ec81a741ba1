// Renders a parsed template. Errors (a TypeError in the template's Python semantics,
// raise_exception, limits) come back as a Status naming the line and column.
#pragma once

#include <string>

#include "chat/jinja_parser.h"

namespace seekserve::jinja {

struct RenderLimits {
  size_t max_output_bytes = 64 << 20;  // protects the server from templates that explode
  int max_call_depth = 64;
  int64_t max_loop_iterations = 1'000'000;
};

// `context` is a dict of top-level variables (messages, tools, bos_token, ...).
Result<std::string> render(const Template& tmpl, const Value& context, const RenderLimits& limits = {});

}  // namespace seekserve::jinja
