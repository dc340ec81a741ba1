// Multi-head latent attention (DeepSeek V2/V3), run in the absorbed form: the cache keeps only
// the normalized latent c_kv and the rotated shared key k_pe per token; the k_nope half of
// kv_b_proj is folded into the query and the v half into the output.
#pragma once

#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/weight_binder.h"
#include "models/causal_lm.h"

namespace seekserve {

struct MlaConfig {
  int64_t hidden_size = 0;
  int64_t n_heads = 0;
  int64_t q_lora_rank = 0;       // 0: a plain q_proj (V2-Lite); else q_a_proj -> norm -> q_b_proj
  int64_t kv_lora_rank = 0;      // width of the cached latent c_kv
  int64_t qk_nope_head_dim = 0;  // per-head query/key part without rotary embedding
  int64_t qk_rope_head_dim = 0;  // per-head rotary part; the key's is shared by all heads
  int64_t v_head_dim = 0;
  float norm_eps = 1e-6f;
  float softmax_scale = 1.0f;    // (nope + rope)^-0.5, times m^2 under YaRN
  int64_t q_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
};

struct MlaWeights {
  Weight q_proj;                  // [n_heads * q_head_dim, hidden] (q_lora_rank == 0)
  Weight q_a_proj;                // [q_lora_rank, hidden]
  std::vector<float> q_a_norm;    // [q_lora_rank]
  Weight q_b_proj;                // [n_heads * q_head_dim, q_lora_rank]
  Weight kv_a_proj;               // [kv_lora_rank + rope_dim, hidden]
  std::vector<float> kv_a_norm;   // [kv_lora_rank]
  // Absorbed halves of kv_b_proj [n_heads * (nope + v), kv_lora_rank], made at load:
  Weight w_uk_t;                  // [n_heads * kv_lora_rank, nope]: head h rows = W_uk[h]^T
  Weight w_uv;                    // [n_heads * v_head_dim, kv_lora_rank]: head h rows = W_uv[h]
  Weight o_proj;                  // [hidden, n_heads * v_head_dim]
};

MlaWeights bind_mla(WeightBinder& binder, const std::string& prefix, const MlaConfig& config);

// out[t] = attention output (after o_proj) for x = the normed hidden [n_tokens, hidden].
// Writes the tokens' c_kv and k_pe into the pool rows ctx.slots (layer `layer`).
void mla_forward(Backend& backend, const MlaConfig& config, const MlaWeights& w, const float* x,
                 const ForwardContext& ctx, int64_t layer, float* out);

}  // namespace seekserve
