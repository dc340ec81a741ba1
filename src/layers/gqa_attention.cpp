#include "layers/gqa_attention.h"

#include <cmath>

namespace seekserve {

GqaWeights bind_gqa(WeightBinder& binder, const std::string& p, const GqaConfig& c) {
  GqaWeights w;
  const int64_t q_width = c.n_heads * c.head_dim, kv_width = c.n_kv_heads * c.head_dim;
  w.q_proj = binder.linear(p + ".q_proj", q_width, c.hidden_size);
  w.k_proj = binder.linear(p + ".k_proj", kv_width, c.hidden_size);
  w.v_proj = binder.linear(p + ".v_proj", kv_width, c.hidden_size);
  w.o_proj = binder.linear(p + ".o_proj", c.hidden_size, q_width);
  if (c.qkv_bias) {
    w.q_bias = binder.vector(p + ".q_proj.bias", q_width, 0.0f);
    w.k_bias = binder.vector(p + ".k_proj.bias", kv_width, 0.0f);
    w.v_bias = binder.vector(p + ".v_proj.bias", kv_width, 0.0f);
  }
  if (c.o_bias) w.o_bias = binder.vector(p + ".o_proj.bias", c.hidden_size, 0.0f);
  return w;
}

void gqa_forward(Backend& backend, const GqaConfig& c, const GqaWeights& w, const float* x,
                 const ForwardContext& ctx, int64_t layer, float* out) {
  const int64_t n = ctx.n_tokens, D = c.hidden_size, HD = c.head_dim;
  const int64_t q_width = c.n_heads * HD, kv_width = c.n_kv_heads * HD;

  // q [n, H, HD]; k and v [n, Hkv, HD], then scattered into the pool.
  std::vector<float> q(static_cast<size_t>(n * q_width)), k(static_cast<size_t>(n * kv_width)), v(static_cast<size_t>(n * kv_width));
  backend.matmul(w.q_proj, x, D, n, q.data(), q_width);
  backend.matmul(w.k_proj, x, D, n, k.data(), kv_width);
  backend.matmul(w.v_proj, x, D, n, v.data(), kv_width);
  if (!w.q_bias.empty()) {
    backend.add_bias(w.q_bias.data(), n, q_width, q.data(), q_width);
    backend.add_bias(w.k_bias.data(), n, kv_width, k.data(), kv_width);
    backend.add_bias(w.v_bias.data(), n, kv_width, v.data(), kv_width);
  }
  backend.rope(q.data(), n, c.n_heads, q_width, HD, HD, ctx.rope_cos.data(), ctx.rope_sin.data(), RopePairing::kHalfSplit);
  backend.rope(k.data(), n, c.n_kv_heads, kv_width, HD, HD, ctx.rope_cos.data(), ctx.rope_sin.data(), RopePairing::kHalfSplit);
  float* k_pool = ctx.pool->a(layer);
  float* v_pool = ctx.pool->b(layer);
  backend.scatter_rows(k.data(), kv_width, n, kv_width, ctx.slots.data(), k_pool, kv_width);
  backend.scatter_rows(v.data(), kv_width, n, kv_width, ctx.slots.data(), v_pool, kv_width);

  std::vector<float> attn(static_cast<size_t>(n * q_width));
  for (const ForwardContext::Segment& seg : ctx.segments) {
    GqaAttentionArgs args;
    args.q = q.data() + seg.begin * q_width;
    args.q_stride = q_width;
    args.k_pool = k_pool;
    args.v_pool = v_pool;
    args.block_table = seg.block_table;
    args.block_size = ctx.pool->block_size();
    args.positions = ctx.positions.data() + seg.begin;
    args.n_tokens = seg.n;
    args.n_heads = c.n_heads;
    args.n_kv_heads = c.n_kv_heads;
    args.head_dim = HD;
    args.scale = 1.0f / std::sqrt(static_cast<float>(HD));
    args.out = attn.data() + seg.begin * q_width;
    backend.gqa_attention(args);
  }

  backend.matmul(w.o_proj, attn.data(), q_width, n, out, D);
  if (!w.o_bias.empty()) backend.add_bias(w.o_bias.data(), n, D, out, D);
}

}  // namespace seekserve
