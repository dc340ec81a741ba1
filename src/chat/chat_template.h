// Chat templates as transformers renders them: the model's Jinja2 template from
// tokenizer_config.json, compiled once at load (unsupported constructs fail there, with line
// and column) and rendered per request with messages, tools and the special tokens.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "chat/jinja_parser.h"

namespace seekserve {

struct ChatTemplateInputs {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();  // [{"role", "content", ...}]
  nlohmann::ordered_json tools;        // null when the request has none
  bool add_generation_prompt = false;
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();  // e.g. {"enable_thinking": false}
  std::string bos_token;
  std::string eos_token;
};

class ChatTemplate {
 public:
  static Result<ChatTemplate> compile(const std::string& source);
  // Renders; errors (raise_exception, a type error on this input) name line and column.
  Result<std::string> render(const ChatTemplateInputs& inputs) const;
  // Whether rendering with add_generation_prompt opens a reasoning block ("<think>\n"), as the
  // DeepSeek-R1 templates do: the generated text then starts inside the reasoning.
  bool opens_reasoning(const ChatTemplateInputs& inputs) const;

 private:
  std::shared_ptr<const jinja::Template> template_;
};

}  // namespace seekserve
