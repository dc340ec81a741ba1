// Token sampling: greedy, or temperature -> top-k -> top-p -> min-p filtering (the order
// transformers applies them) followed by a draw from a per-request seeded generator.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "core/status.h"

namespace seekserve {

struct SamplingParams {
  float temperature = 1.0f;  // 0: greedy (argmax)
  int64_t top_k = 0;         // 0: off; else keep the k most likely tokens
  float top_p = 1.0f;        // keep the smallest set whose probability reaches top_p
  float min_p = 0.0f;        // drop tokens below min_p * (probability of the most likely)
  uint64_t seed = 0;
  // Penalties on logits before sampling: OpenAI's presence and frequency penalties over the
  // generated tokens; the multiplicative repetition penalty over prompt and output tokens.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  float repetition_penalty = 1.0f;

  Status validate() const;
  bool greedy() const { return temperature == 0.0f; }
  // Greedy with no penalty: the token is the raw logits' argmax.
  bool plain_argmax() const {
    return greedy() && presence_penalty == 0.0f && frequency_penalty == 0.0f && repetition_penalty == 1.0f;
  }
};

// Index of the largest logit; ties go to the lowest index (as torch.argmax).
int32_t argmax(const float* logits, int64_t n);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}
  // Picks the next token from logits [vocab].
  int32_t sample(const float* logits, int64_t vocab);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;  // scratch: (probability, token)
};

}  // namespace seekserve
