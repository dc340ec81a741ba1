// Grouped-query self-attention with half-split RoPE (Qwen2, Llama). The cache holds keys and
// values per KV head: a rows = keys [n_kv_heads * head_dim], b rows = values.
#pragma once

#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/weight_binder.h"
#include "models/causal_lm.h"

namespace seekserve {

struct GqaConfig {
  int64_t hidden_size = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;   // n_heads % n_kv_heads == 0
  int64_t head_dim = 0;
  bool qkv_bias = false;    // Qwen2: q/k/v projections carry biases
  bool o_bias = false;
};

struct GqaWeights {
  Weight q_proj;  // [n_heads * head_dim, hidden]
  Weight k_proj;  // [n_kv_heads * head_dim, hidden]
  Weight v_proj;  // [n_kv_heads * head_dim, hidden]
  Weight o_proj;  // [hidden, n_heads * head_dim]
  std::vector<float> q_bias, k_bias, v_bias, o_bias;  // empty without biases
};

GqaWeights bind_gqa(WeightBinder& binder, const std::string& prefix, const GqaConfig& config);

// out = attention(x) after o_proj; x = normed hidden [n_tokens, hidden] of the whole batch.
// Writes the tokens' rotated keys and values into the pool rows ctx.slots (layer `layer`).
void gqa_forward(Backend& backend, const GqaConfig& config, const GqaWeights& w, const float* x,
                 const ForwardContext& ctx, int64_t layer, float* out);

}  // namespace seekserve
