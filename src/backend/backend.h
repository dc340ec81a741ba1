// The operations the model files are written against. The reference CPU backend here is the
// correctness baseline; optimized CPU and CUDA backends implement the same interface, so model
// files never change when a faster backend plugs in.
//
// Conventions: activations are float32, row-major, one row per token; a "stride" is the
// distance in floats between consecutive tokens' rows, so ops can read and write slices of
// wider buffers (one head of a fused projection, say) without copies.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "model/rope.h"
#include "model/weight.h"
#include "models/kv_cache.h"

namespace seekserve {

// Grouped-query attention of one sequence's queries over its paged KV cache (Qwen2, Llama).
struct GqaAttentionArgs {
  const float* q = nullptr;        // [n_tokens, n_heads, head_dim], rows q_stride apart
  int64_t q_stride = 0;
  const float* k_pool = nullptr;   // pool rows [*, n_kv_heads * head_dim]
  const float* v_pool = nullptr;   // pool rows [*, n_kv_heads * head_dim]
  const int32_t* block_table = nullptr;  // position p lives in pool row kv_slot(block_table, block_size, p)
  int64_t block_size = 0;
  const int32_t* positions = nullptr;  // [n_tokens]; a query at position p sees positions [0, p]
  int64_t n_tokens = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;          // n_heads % n_kv_heads == 0; head h reads kv head h / (n_heads / n_kv_heads)
  int64_t head_dim = 0;
  float scale = 1.0f;              // multiplies q.k before softmax
  float* out = nullptr;            // [n_tokens, n_heads, head_dim], dense
};

// MLA in its absorbed form over one sequence's paged latent cache (DeepSeek V2/V3): every head
// scores against the same cached c_kv and k_pe rows and returns a latent-space output.
struct MlaAttentionArgs {
  const float* q_latent = nullptr;  // [n_tokens, n_heads, kv_lora_rank]: q_nope folded through W_uk
  const float* q_pe = nullptr;      // [n_tokens, n_heads, rope_dim], rotated
  const float* c_kv_pool = nullptr; // pool rows [*, kv_lora_rank], normalized latent
  const float* k_pe_pool = nullptr; // pool rows [*, rope_dim], rotated
  const int32_t* block_table = nullptr;
  int64_t block_size = 0;
  const int32_t* positions = nullptr;  // [n_tokens]; a query at position p sees positions [0, p]
  int64_t n_tokens = 0;
  int64_t n_heads = 0;
  int64_t kv_lora_rank = 0;
  int64_t rope_dim = 0;
  float scale = 1.0f;
  float* out_latent = nullptr;      // [n_tokens, n_heads, kv_lora_rank]: softmax-weighted c_kv
};

// A SwiGLU MLP (dense layer, routed expert or shared experts): down(silu(gate(x)) * up(x)).
struct MlpWeights {
  Weight gate;  // [intermediate, hidden]
  Weight up;    // [intermediate, hidden]
  Weight down;  // [hidden, intermediate]
};

// Routed experts: out[t] += sum_j weights[t][j] * expert[ids[t][j]](x[t]).
struct MoeArgs {
  const float* x = nullptr;          // [n_tokens, hidden]
  int64_t n_tokens = 0;
  int64_t hidden = 0;
  int64_t top_k = 0;
  const int32_t* expert_ids = nullptr;  // [n_tokens, top_k]
  const float* expert_weights = nullptr;  // [n_tokens, top_k]
  std::span<const MlpWeights> experts;
  float* out = nullptr;              // [n_tokens, hidden], accumulated into
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // y[t] = W x[t] for t < n_tokens. x: [n_tokens, w.cols]; y: [n_tokens, w.rows].
  // With a BF16 or FP8 weight, x is rounded to bf16 first (what bf16 hardware computes).
  virtual void matmul(const Weight& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
                      int64_t y_stride) = 0;
  // y[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * weight, in float32. x and y may be the same.
  virtual void rms_norm(const float* x, int64_t x_stride, const float* weight, int64_t n_tokens,
                        int64_t dim, float eps, float* y, int64_t y_stride) = 0;
  // Rotates the first rotary_dim elements of n_heads vectors per token, in place. Vector h of
  // token t starts at x + t * token_stride + h * head_stride. cos/sin: [n_tokens, rotary_dim/2].
  virtual void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t token_stride, int64_t head_stride,
                    int64_t rotary_dim, const float* cos, const float* sin, RopePairing pairing) = 0;
  // out[i] = silu(gate[i]) * up[i] for i < n.
  virtual void silu_mul(const float* gate, const float* up, int64_t n, float* out) = 0;
  // out[t] = table[ids[t]] as float32; out: [n_tokens, table.cols]. Ids are valid (checked by the caller).
  virtual void embedding(const Weight& table, const int32_t* ids, int64_t n_tokens, float* out) = 0;
  // dst row r = src row r for r < n_rows, `width` floats each (gathers strided slices).
  virtual void copy_rows(const float* src, int64_t src_stride, int64_t n_rows, int64_t width, float* dst,
                         int64_t dst_stride) = 0;
  // dst row dst_rows[r] = src row r for r < n_rows (writes new tokens into the paged KV pool).
  virtual void scatter_rows(const float* src, int64_t src_stride, int64_t n_rows, int64_t width,
                            const int64_t* dst_rows, float* dst, int64_t dst_stride) = 0;
  // y[i] += x[i] for i < n (residual connections).
  virtual void add(const float* x, int64_t n, float* y) = 0;
  // y[t][d] += bias[d] for t < n_tokens, d < dim; rows y_stride apart.
  virtual void add_bias(const float* bias, int64_t n_tokens, int64_t dim, float* y, int64_t y_stride) = 0;
  virtual void gqa_attention(const GqaAttentionArgs& args) = 0;
  virtual void mla_attention(const MlaAttentionArgs& args) = 0;
  virtual void moe_experts(const MoeArgs& args) = 0;
};

// The scalar float32 reference: simple loops, single-threaded, the correctness baseline.
std::unique_ptr<Backend> make_reference_backend();

}  // namespace seekserve
