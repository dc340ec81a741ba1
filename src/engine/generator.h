// Single-sequence generation: prefill the prompt, then decode token by token through the KV
// cache until max_tokens or an end-of-sequence token.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "models/causal_lm.h"

namespace seekserve {

struct GenerateOptions {
  int64_t max_tokens = 16;
  bool ignore_eos = false;      // keep going past EOS
  SamplingParams sampling;
  int64_t logits_tail = 0;      // also return the float32 logits of the last K prompt positions
  // Called with each generated token as soon as it is sampled; returning false stops generation
  // (finish reason "stop"), e.g. when a stop string completes.
  std::function<bool(int32_t token)> on_token;
};

struct GenerateResult {
  std::vector<int32_t> tokens;                  // generated ids (EOS included when it stopped there)
  std::vector<std::vector<float>> logits_tail;  // [K][vocab]
  std::string finish_reason;                    // "stop" (EOS) or "length"
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;
};

Result<GenerateResult> generate(CausalLM& model, std::span<const int32_t> prompt, const GenerateOptions& options);

}  // namespace seekserve
