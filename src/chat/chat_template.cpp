#include "chat/chat_template.h"

#include "chat/jinja_interpreter.h"

namespace seekserve {

Result<ChatTemplate> ChatTemplate::compile(const std::string& source) {
  ChatTemplate t;
  SS_ASSIGN_OR_RETURN(t.template_, jinja::parse_template(source));
  return t;
}

Result<std::string> ChatTemplate::render(const ChatTemplateInputs& in) const {
  if (!in.messages.is_array()) return invalid_argument("messages must be an array");
  jinja::Dict context;
  context.emplace_back("messages", jinja::Value::from_json(in.messages));
  context.emplace_back("tools", jinja::Value::from_json(in.tools));
  context.emplace_back("documents", jinja::Value::none());
  context.emplace_back("add_generation_prompt", jinja::Value(in.add_generation_prompt));
  context.emplace_back("bos_token", jinja::Value(in.bos_token));
  context.emplace_back("eos_token", jinja::Value(in.eos_token));
  if (in.extra.is_object())
    for (const auto& [k, v] : in.extra.items()) context.emplace_back(k, jinja::Value::from_json(v));
  return jinja::render(*template_, jinja::Value(std::move(context)));
}

bool ChatTemplate::opens_reasoning(const ChatTemplateInputs& in) const {
  if (!in.add_generation_prompt) return false;
  auto text = render(in);
  if (!text.ok()) return false;
  const std::string& s = *text;
  const std::string open = "<think>\n";
  return s.size() >= open.size() && s.compare(s.size() - open.size(), open.size(), open) == 0;
}

}  // namespace seekserve
