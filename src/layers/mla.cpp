#include "layers/mla.h"

#include <algorithm>

namespace seekserve {

namespace {

// Rows [begin, begin + n) of a dense (F32 or BF16) weight, sharing its storage.
Weight row_block(const Weight& w, int64_t begin, int64_t n) {
  SS_CHECK(w.format != WeightFormat::kF8Block, "row_block on a block-scaled weight");
  Weight out = w;
  const int64_t element = w.format == WeightFormat::kF32 ? 4 : 2;
  out.data = static_cast<const uint8_t*>(w.data) + begin * w.cols * element;
  out.rows = n;
  return out;
}

// Splits kv_b_proj into the transposed key half and the value half, per head.
void absorb_kv_b(const Weight& kv_b, const MlaConfig& c, ComputeDType dtype, MlaWeights* w) {
  const int64_t H = c.n_heads, R = c.kv_lora_rank, N = c.qk_nope_head_dim, V = c.v_head_dim;
  std::vector<float> uk_t(static_cast<size_t>(H * R * N)), uv(static_cast<size_t>(H * V * R));
  std::vector<float> row(static_cast<size_t>(R));
  for (int64_t h = 0; h < H; ++h) {
    // kv_b rows for head h: [k_nope (N rows), v (V rows)], each [R].
    for (int64_t i = 0; i < N; ++i) {
      kv_b.row_to_f32(h * (N + V) + i, row.data());
      for (int64_t r = 0; r < R; ++r) uk_t[static_cast<size_t>((h * R + r) * N + i)] = row[static_cast<size_t>(r)];
    }
    for (int64_t i = 0; i < V; ++i) kv_b.row_to_f32(h * (N + V) + N + i, uv.data() + (h * V + i) * R);
  }
  w->w_uk_t = weight_from_f32(std::move(uk_t), H * R, N);
  w->w_uv = weight_from_f32(std::move(uv), H * V, R);
  if (dtype != ComputeDType::kF32) {  // the small absorbed halves stay bf16 under int8 too
    w->w_uk_t = weight_to_bf16(w->w_uk_t);
    w->w_uv = weight_to_bf16(w->w_uv);
  }
}

}  // namespace

MlaWeights bind_mla(WeightBinder& binder, const std::string& p, const MlaConfig& c) {
  MlaWeights w;
  const int64_t H = c.n_heads;
  if (c.q_lora_rank > 0) {
    w.q_a_proj = binder.linear(p + ".q_a_proj", c.q_lora_rank, c.hidden_size);
    w.q_a_norm = binder.vector(p + ".q_a_layernorm.weight", c.q_lora_rank, 1.0f);
    w.q_b_proj = binder.linear(p + ".q_b_proj", H * c.q_head_dim(), c.q_lora_rank);
  } else {
    w.q_proj = binder.linear(p + ".q_proj", H * c.q_head_dim(), c.hidden_size);
  }
  w.kv_a_proj = binder.linear(p + ".kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_head_dim, c.hidden_size);
  w.kv_a_norm = binder.vector(p + ".kv_a_layernorm.weight", c.kv_lora_rank, 1.0f);
  const Weight kv_b = binder.linear(p + ".kv_b_proj", H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
  w.o_proj = binder.linear(p + ".o_proj", c.hidden_size, H * c.v_head_dim);
  if (binder.status().ok()) absorb_kv_b(kv_b, c, binder.options().dtype, &w);
  return w;
}

void mla_forward(Backend& backend, const MlaConfig& c, const MlaWeights& w, const float* x,
                 const ForwardContext& ctx, int64_t layer, float* out) {
  const int64_t n = ctx.n_tokens, H = c.n_heads, R = c.kv_lora_rank, P = c.qk_rope_head_dim;
  const int64_t N = c.qk_nope_head_dim, V = c.v_head_dim, QD = c.q_head_dim(), D = c.hidden_size;
  float* c_kv_pool = ctx.pool->a(layer);
  float* k_pe_pool = ctx.pool->b(layer);

  // Queries: q [n, H, nope + rope].
  std::vector<float> q(static_cast<size_t>(n * H * QD));
  if (c.q_lora_rank > 0) {
    std::vector<float> qa(static_cast<size_t>(n * c.q_lora_rank));
    backend.matmul(w.q_a_proj, x, D, n, qa.data(), c.q_lora_rank);
    backend.rms_norm(qa.data(), c.q_lora_rank, w.q_a_norm.data(), n, c.q_lora_rank, c.norm_eps, qa.data(), c.q_lora_rank);
    backend.matmul(w.q_b_proj, qa.data(), c.q_lora_rank, n, q.data(), H * QD);
  } else {
    backend.matmul(w.q_proj, x, D, n, q.data(), H * QD);
  }
  backend.rope(q.data() + N, n, H, H * QD, QD, P, ctx.rope_cos.data(), ctx.rope_sin.data(), RopePairing::kInterleaved);

  // Latent KV: kv [n, R + P] -> normalized c_kv and rotated k_pe, scattered into the pool.
  std::vector<float> kv(static_cast<size_t>(n * (R + P)));
  backend.matmul(w.kv_a_proj, x, D, n, kv.data(), R + P);
  backend.rms_norm(kv.data(), R + P, w.kv_a_norm.data(), n, R, c.norm_eps, kv.data(), R + P);
  backend.rope(kv.data() + R, n, 1, R + P, P, P, ctx.rope_cos.data(), ctx.rope_sin.data(), RopePairing::kInterleaved);
  backend.scatter_rows(kv.data(), R + P, n, R, ctx.slots.data(), c_kv_pool, R);
  backend.scatter_rows(kv.data() + R, R + P, n, P, ctx.slots.data(), k_pe_pool, P);

  // Absorb: q_latent[t, h] = W_uk[h]^T q_nope[t, h] -> [n, H, R]; gather q_pe -> [n, H, P].
  std::vector<float> q_latent(static_cast<size_t>(n * H * R)), q_pe(static_cast<size_t>(n * H * P));
  for (int64_t h = 0; h < H; ++h)
    backend.matmul(row_block(w.w_uk_t, h * R, R), q.data() + h * QD, H * QD, n, q_latent.data() + h * R, H * R);
  backend.copy_rows(q.data() + N, QD, n * H, P, q_pe.data(), P);  // q viewed as [n * H, QD]

  // Attention per sequence over its own blocks.
  std::vector<float> out_latent(static_cast<size_t>(n * H * R));
  for (const ForwardContext::Segment& seg : ctx.segments) {
    MlaAttentionArgs args;
    args.q_latent = q_latent.data() + seg.begin * H * R;
    args.q_pe = q_pe.data() + seg.begin * H * P;
    args.c_kv_pool = c_kv_pool;
    args.k_pe_pool = k_pe_pool;
    args.block_table = seg.block_table;
    args.block_size = ctx.pool->block_size();
    args.positions = ctx.positions.data() + seg.begin;
    args.n_tokens = seg.n;
    args.n_heads = H;
    args.kv_lora_rank = R;
    args.rope_dim = P;
    args.scale = c.softmax_scale;
    args.out_latent = out_latent.data() + seg.begin * H * R;
    backend.mla_attention(args);
  }

  // Un-absorb: v[t, h] = W_uv[h] out_latent[t, h] -> [n, H * V]; then o_proj.
  std::vector<float> attn(static_cast<size_t>(n * H * V));
  for (int64_t h = 0; h < H; ++h)
    backend.matmul(row_block(w.w_uv, h * V, V), out_latent.data() + h * R, H * R, n, attn.data() + h * V, H * V);
  backend.matmul(w.o_proj, attn.data(), H * V, n, out, D);
}

}  // namespace seekserve
