// seekserve generate: one prompt in, its continuation out (ids, and with --json the logits
// tail for golden checks).
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "backend/cpu_backend.h"
#include "chat/chat_template.h"
#include "cli/batch_generate.h"
#include "cli/commands.h"
#include "tokenizer/streaming.h"
#include "engine/generator.h"
#include "models/model_loader.h"

namespace seekserve {

namespace {

struct GenerateFlags {
  std::string model;
  std::string prompt;
  std::string prompt_ids;
  int64_t max_tokens = 16;
  std::optional<float> temperature;
  std::optional<int64_t> top_k;
  std::optional<float> top_p;
  std::optional<float> min_p;
  uint64_t seed = 0;
  bool ignore_eos = false;
  int64_t logits_tail = 0;
  std::string dtype = "f32";
  bool json = false;
  bool dummy_weights = false;
  bool chat = false;                // --prompt is a user message: apply the chat template
  std::vector<std::string> stop;    // stop strings
  std::string batch_file;           // JSONL requests for the batched engine
  int64_t max_batch = 64;
  int64_t kv_budget = int64_t{256} << 20;
  int64_t step_tokens = 512;
  int64_t latency_guard = 0;        // step_tokens_while_interactive_decodes
  int threads = 0;                  // CPU threads; 0 = all
  std::string device = "cpu";       // cpu or cuda
};

// Tokenizes --prompt (as a chat turn with --chat); reports whether the template opened a
// reasoning block so the output can be split.
Result<std::vector<int32_t>> tokenize_prompt(const GenerateFlags& f, const Tokenizer& tokenizer, bool* in_reasoning) {
  *in_reasoning = false;
  if (!f.chat) return tokenizer.encode(f.prompt, /*add_special_tokens=*/true);
  const TokenizerSettings& settings = tokenizer.settings();
  if (settings.chat_template.empty()) return not_found(f.model + ": --chat needs a chat_template in tokenizer_config.json");
  SS_ASSIGN_OR_RETURN(ChatTemplate tmpl, ChatTemplate::compile(settings.chat_template));
  ChatTemplateInputs inputs;
  inputs.messages = nlohmann::ordered_json::array({{{"role", "user"}, {"content", f.prompt}}});
  inputs.add_generation_prompt = true;
  inputs.bos_token = settings.bos_token;
  inputs.eos_token = settings.eos_token;
  SS_ASSIGN_OR_RETURN(std::string text, tmpl.render(inputs));
  *in_reasoning = tmpl.opens_reasoning(inputs);
  return tokenizer.encode(text, /*add_special_tokens=*/false);
}

// Sampling defaults come from generation_config.json (as transformers does); flags override.
SamplingParams sampling_from(const GenerateFlags& f) {
  SamplingParams p = sampling_defaults(f.model);
  if (f.temperature) p.temperature = *f.temperature;
  if (f.top_k) p.top_k = *f.top_k;
  if (f.top_p) p.top_p = *f.top_p;
  if (f.min_p) p.min_p = *f.min_p;
  p.seed = f.seed;
  return p;
}

Result<std::unique_ptr<CausalLM>> load_for(const GenerateFlags& f) {
  return load_model_for_cli(f.model, f.dtype, f.dummy_weights, f.threads, nullptr, f.device);
}

int run_batch(const GenerateFlags& f) {
  if (!f.prompt.empty() || !f.prompt_ids.empty()) return report_error(invalid_argument("--batch-file replaces --prompt and --prompt-ids"));
  auto model = load_for(f);
  if (!model.ok()) return report_error(model.status());
  BatchFileOptions options;
  options.path = f.batch_file;
  options.engine.kv_budget_bytes = f.kv_budget;
  options.engine.scheduler.max_running = f.max_batch;
  options.engine.scheduler.step_tokens = f.step_tokens;
  options.engine.scheduler.step_tokens_while_interactive_decodes = f.latency_guard;
  options.defaults = sampling_from(f);
  if (f.max_batch < 1 || f.step_tokens < 1 || f.kv_budget < 1)
    return report_error(invalid_argument("--max-batch, --step-tokens and --kv-budget must be positive"));
  return run_batch_file(**model, options);
}

int run_generate(const GenerateFlags& f) {
  if (!f.batch_file.empty()) return run_batch(f);
  if (f.prompt.empty() == f.prompt_ids.empty())
    return report_error(invalid_argument("give exactly one of --prompt and --prompt-ids"));
  // The tokenizer is optional with --prompt-ids (config-only folders have none).
  std::shared_ptr<const Tokenizer> tokenizer;
  if (!f.prompt.empty() || std::filesystem::exists(std::filesystem::path(f.model) / "tokenizer.json")) {
    auto loaded = Tokenizer::load(std::filesystem::is_directory(f.model) ? f.model : std::filesystem::path(f.model).parent_path().string());
    if (!loaded.ok()) return report_error(loaded.status());
    tokenizer = *loaded;
  }
  bool in_reasoning = false;
  Result<std::vector<int32_t>> prompt = f.prompt.empty() ? parse_token_ids(f.prompt_ids, "--prompt-ids")
                                                         : tokenize_prompt(f, *tokenizer, &in_reasoning);
  if (!prompt.ok()) return report_error(prompt.status());
  if (prompt->empty()) return report_error(invalid_argument(f.prompt.empty() ? "--prompt-ids holds no token ids" : "--prompt is empty"));
  auto model = load_for(f);
  if (!model.ok()) return report_error(model.status());

  GenerateOptions options;
  options.max_tokens = f.max_tokens;
  options.ignore_eos = f.ignore_eos;
  options.logits_tail = f.logits_tail;
  options.sampling = sampling_from(f);

  // Text streams out as tokens arrive: whole characters only, stop strings held back.
  std::optional<StreamDecoder> stream;
  StopMatcher stop(f.stop);
  std::string text;
  if (tokenizer) stream.emplace(*tokenizer, /*skip_special_tokens=*/true);
  if (!f.stop.empty() && !tokenizer) return report_error(invalid_argument("--stop needs the model's tokenizer"));
  const auto& eos = (*model)->info().eos_token_ids;
  options.on_token = [&](int32_t token) {
    if (!stream) return true;
    if (!f.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) return true;
    const std::string piece = stop.feed(stream->add(token));
    text += piece;
    if (!f.json) {
      std::cout << piece;
      std::cout.flush();
    }
    return !stop.stopped();
  };
  if (!f.json && tokenizer && !f.prompt.empty() && !f.chat) std::cout << f.prompt;
  auto result = generate(**model, *prompt, options);
  if (!result.ok()) return report_error(result.status());
  if (stream && !stop.stopped()) {
    const std::string rest = stop.feed(stream->finish()) + stop.finish();
    text += rest;
    if (!f.json) std::cout << rest;
  }

  if (f.json) {
    nlohmann::json out;
    out["prompt_ids"] = *prompt;
    out["tokens"] = result->tokens;
    out["finish_reason"] = result->finish_reason;
    if (tokenizer) {
      if (in_reasoning || tokenizer->token_to_id("<think>")) {
        ReasoningSplitter splitter(in_reasoning);
        auto a = splitter.feed(text), b = splitter.finish();
        if (!(a.reasoning + b.reasoning).empty() || in_reasoning) out["reasoning_content"] = a.reasoning + b.reasoning;
        out["text"] = a.content + b.content;
      } else {
        out["text"] = text;
      }
    }
    if (f.logits_tail > 0) out["logits_tail"] = result->logits_tail;
    std::cout << out.dump() << "\n";
  } else {
    if (!tokenizer) {
      std::string ids;
      for (int32_t t : result->tokens) ids += (ids.empty() ? "" : ",") + std::to_string(t);
      std::cout << ids;
    }
    std::cout << std::endl;  // flush before the stats line on stderr
    const double n = static_cast<double>(result->tokens.size());
    std::fprintf(stderr, "[%zu prompt tokens in %.3f s, %zu generated in %.3f s (%.1f tok/s), finish: %s]\n",
                 prompt->size(), result->prefill_seconds, result->tokens.size(), result->decode_seconds,
                 result->decode_seconds > 0 ? n / result->decode_seconds : 0.0, result->finish_reason.c_str());
  }
  return 0;
}

}  // namespace

CommandMain add_generate_command(CLI::App& app) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* cmd = app.add_subcommand("generate", "generate a continuation of one prompt");
  cmd->add_option("--model", flags->model, "model folder (or config.json with --dummy-weights)")->required();
  cmd->add_option("--prompt", flags->prompt, "prompt text");
  cmd->add_option("--prompt-ids", flags->prompt_ids, "prompt token ids, comma-separated or a JSON array");
  cmd->add_option("--max-tokens", flags->max_tokens, "tokens to generate at most")->check(CLI::NonNegativeNumber);
  cmd->add_option("--temperature", flags->temperature, "sampling temperature; 0 = greedy");
  cmd->add_option("--top-k", flags->top_k, "keep the k most likely tokens (0 = off)");
  cmd->add_option("--top-p", flags->top_p, "nucleus sampling threshold");
  cmd->add_option("--min-p", flags->min_p, "drop tokens below min-p times the top probability");
  cmd->add_option("--seed", flags->seed, "sampling seed");
  cmd->add_flag("--ignore-eos", flags->ignore_eos, "keep generating past end-of-sequence tokens");
  cmd->add_option("--logits-tail", flags->logits_tail, "print the logits of the last K prompt positions (--json)");
  cmd->add_option("--dtype", flags->dtype, "weight and compute precision: bf16, int8, fp8 or f32 (reference)");
  cmd->add_flag("--json", flags->json, "print one JSON object");
  cmd->add_flag("--dummy-weights", flags->dummy_weights, "generate weights of the config's shapes");
  cmd->add_flag("--chat", flags->chat, "treat --prompt as a user message and apply the chat template");
  cmd->add_option("--stop", flags->stop, "stop when this text appears (repeatable)");
  cmd->add_option("--batch-file", flags->batch_file, "run every request of a JSONL file through the batched engine");
  cmd->add_option("--max-batch", flags->max_batch, "sequences running at once (--batch-file)");
  cmd->add_option("--kv-budget", flags->kv_budget, "bytes for the paged KV cache (--batch-file)");
  cmd->add_option("--step-tokens", flags->step_tokens, "tokens computed per engine step, prefill chunks included (--batch-file)");
  cmd->add_option("--latency-guard", flags->latency_guard,
                  "while interactive requests decode, cap a step at this many tokens (CPU deployments; --batch-file)");
  cmd->add_option("--device", flags->device, "cpu, or cuda (an NVIDIA GPU: bf16 for Qwen2, Llama and DeepSeek V2/V3; fp8 W8A8 for DeepSeek)");
  cmd->add_option("--threads", flags->threads, "CPU threads for the kernels (0 = all)")->check(CLI::NonNegativeNumber);
  return [cmd, flags]() -> int { return cmd->parsed() ? run_generate(*flags) : -1; };
}

}  // namespace seekserve
