#include "engine/generator.h"

#include <algorithm>
#include <chrono>

namespace seekserve {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

Result<GenerateResult> generate(CausalLM& model, std::span<const int32_t> prompt, const GenerateOptions& options) {
  SS_RETURN_IF_ERROR(options.sampling.validate());
  if (prompt.empty()) return invalid_argument("the prompt is empty");
  if (options.max_tokens < 0) return invalid_argument("max_tokens must be >= 0");
  const int64_t n_prompt = static_cast<int64_t>(prompt.size());
  const int64_t context = model.info().max_positions;
  if (n_prompt > context)
    return out_of_range("prompt of " + std::to_string(n_prompt) + " tokens exceeds the context of " + std::to_string(context));
  if (options.logits_tail < 0 || options.logits_tail > n_prompt)
    return invalid_argument("logits_tail must be in [0, prompt length]");

  const int64_t vocab = model.info().vocab_size;
  GenerateResult result;
  KvCache cache = model.new_cache();
  Sampler sampler(options.sampling);
  std::vector<float> logits;

  const auto t0 = std::chrono::steady_clock::now();
  ForwardRequest prefill;
  prefill.tokens = prompt;
  prefill.logits_from = n_prompt - std::max<int64_t>(options.logits_tail, 1);
  SS_RETURN_IF_ERROR(model.forward(prefill, cache, &logits));
  result.prefill_seconds = seconds_since(t0);
  for (int64_t k = 0; k < options.logits_tail; ++k)
    result.logits_tail.emplace_back(logits.begin() + k * vocab, logits.begin() + (k + 1) * vocab);
  const float* last = logits.data() + (static_cast<int64_t>(logits.size()) / vocab - 1) * vocab;

  const auto t1 = std::chrono::steady_clock::now();
  const auto& eos = model.info().eos_token_ids;
  result.finish_reason = "length";
  // Never run past the context: generation stops with "length" at the last position.
  const int64_t budget = std::min(options.max_tokens, context - n_prompt + 1);
  for (int64_t step = 0; step < budget; ++step) {
    const int32_t token = sampler.sample(last, vocab);
    result.tokens.push_back(token);
    if (!options.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) {
      result.finish_reason = "stop";
      break;
    }
    if (options.on_token && !options.on_token(token)) {
      result.finish_reason = "stop";
      break;
    }
    if (step + 1 == budget) break;
    ForwardRequest decode;
    decode.tokens = std::span<const int32_t>(&result.tokens.back(), 1);
    SS_RETURN_IF_ERROR(model.forward(decode, cache, &logits));
    last = logits.data();
  }
  result.decode_seconds = seconds_since(t1);
  return result;
}

}  // namespace seekserve
