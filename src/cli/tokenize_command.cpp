// seekserve tokenize / chat-template: the tokenizer and chat template of a model folder (or a
// folder holding only tokenizer.json and tokenizer_config.json) from the command line.
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "chat/chat_template.h"
#include "cli/commands.h"
#include "tokenizer/tokenizer.h"

namespace seekserve {

namespace {

std::string read_stdin() {
  std::cin >> std::noskipws;
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

struct TokenizeFlags {
  std::string model;
  bool add_special_tokens = false;
  bool decode = false;
  bool skip_special_tokens = false;
  bool json = false;
};

int run_tokenize(const TokenizeFlags& f) {
  auto tokenizer = Tokenizer::load(f.model);
  if (!tokenizer.ok()) return report_error(tokenizer.status());
  const std::string input = read_stdin();
  if (!f.decode) {
    const std::vector<int32_t> ids = (*tokenizer)->encode(input, f.add_special_tokens);
    if (f.json) std::cout << nlohmann::json{{"ids", ids}}.dump() << "\n";
    else std::cout << join_ids(ids) << "\n";
    return 0;
  }
  auto ids = parse_token_ids(input, "stdin");
  if (!ids.ok()) return report_error(ids.status());
  for (int32_t id : *ids)
    if (!(*tokenizer)->is_valid_id(id))
      return report_error(out_of_range("token id " + std::to_string(id) + " is not in the vocabulary"));
  const std::string text = (*tokenizer)->decode(*ids, f.skip_special_tokens);
  if (f.json) std::cout << nlohmann::json{{"text", text}}.dump() << "\n";
  else std::cout << text;
  return 0;
}

struct ChatTemplateFlags {
  std::string model;
  bool add_generation_prompt = false;
  bool json = false;
};

int run_chat_template(const ChatTemplateFlags& f) {
  auto tokenizer = Tokenizer::load(f.model);
  if (!tokenizer.ok()) return report_error(tokenizer.status());
  const TokenizerSettings& settings = (*tokenizer)->settings();
  if (settings.chat_template.empty())
    return report_error(not_found(f.model + ": tokenizer_config.json has no chat_template"));
  auto tmpl = ChatTemplate::compile(settings.chat_template);
  if (!tmpl.ok()) return report_error(tmpl.status());

  const auto input = nlohmann::ordered_json::parse(read_stdin(), nullptr, /*allow_exceptions=*/false);
  ChatTemplateInputs inputs;
  if (input.is_array()) {
    inputs.messages = input;
  } else if (input.is_object() && input.contains("messages")) {  // {"messages": [...], "tools": [...], ...}
    inputs.messages = input["messages"];
    if (input.contains("tools")) inputs.tools = input["tools"];
    for (const auto& [k, v] : input.items())
      if (k != "messages" && k != "tools") inputs.extra[k] = v;
  } else {
    return report_error(invalid_argument("stdin must hold a JSON array of messages (or {\"messages\": [...]})"));
  }
  inputs.add_generation_prompt = f.add_generation_prompt;
  inputs.bos_token = settings.bos_token;
  inputs.eos_token = settings.eos_token;
  auto text = tmpl->render(inputs);
  if (!text.ok()) return report_error(text.status());
  if (f.json) std::cout << nlohmann::json{{"text", *text}, {"ids", (*tokenizer)->encode(*text, false)}}.dump() << "\n";
  else std::cout << *text;
  return 0;
}

}  // namespace

Result<std::vector<int32_t>> parse_token_ids(const std::string& text, const std::string& what) {
  std::vector<int32_t> ids;
  std::string s = text;
  for (char& c : s)
    if (c == '[' || c == ']' || c == ',') c = ' ';
  std::istringstream in(s);
  std::string item;
  while (in >> item) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (...) {
      used = 0;
    }
    if (used != item.size() || v < 0 || v > INT32_MAX) return invalid_argument(what + ": '" + item + "' is not a token id");
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

CommandMain add_tokenize_command(CLI::App& app) {
  auto flags = std::make_shared<TokenizeFlags>();
  CLI::App* cmd = app.add_subcommand("tokenize", "text on stdin -> token ids (or ids -> text with --decode)");
  cmd->add_option("--model", flags->model, "model folder, or a folder with tokenizer.json (+ tokenizer_config.json)")->required();
  cmd->add_flag("--add-special-tokens", flags->add_special_tokens, "add BOS/EOS as the tokenizer config says");
  cmd->add_flag("--decode", flags->decode, "read ids (JSON array or comma-separated) and print the text");
  cmd->add_flag("--skip-special-tokens", flags->skip_special_tokens, "with --decode: leave special tokens out");
  cmd->add_flag("--json", flags->json, "print {\"ids\": [...]} (or {\"text\": ...} with --decode)");
  return [cmd, flags]() -> int { return cmd->parsed() ? run_tokenize(*flags) : -1; };
}

CommandMain add_chat_template_command(CLI::App& app) {
  auto flags = std::make_shared<ChatTemplateFlags>();
  CLI::App* cmd = app.add_subcommand("chat-template", "render the model's chat template for messages (JSON on stdin)");
  cmd->add_option("--model", flags->model, "model folder, or a folder with tokenizer.json + tokenizer_config.json")->required();
  cmd->add_flag("--add-generation-prompt", flags->add_generation_prompt, "open the assistant's turn");
  cmd->add_flag("--json", flags->json, "print {\"text\": ..., \"ids\": [...]}");
  return [cmd, flags]() -> int { return cmd->parsed() ? run_chat_template(*flags) : -1; };
}

}  // namespace seekserve
