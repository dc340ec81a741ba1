// The reference backend: plain loops in float32, written for clarity. Faster backends are
// tested against it.
#include "backend/reference_backend.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace seekserve {

namespace {

// Dot product with eight partial sums: deterministic, and fast enough for the reference.
float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// Softmax of scores[0, n) in place, float32 with the max subtracted.
void softmax_inplace(float* scores, int64_t n) {
  float max_score = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max_score = std::max(max_score, scores[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    scores[i] = std::exp(scores[i] - max_score);
    sum += scores[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) scores[i] *= inv;
}

}  // namespace

void ReferenceBackend::matmul(const Weight& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
              int64_t y_stride) {
  SS_CHECK(!w.empty(), "matmul with an unbound weight");
  const int64_t cols = w.cols;
  if (w.format == WeightFormat::kI8Row) return matmul_i8(w, x, x_stride, n_tokens, y, y_stride);
  // Inputs as the weight's precision sees them: bf16-rounded for low-precision weights, then for
  // W8A8 FP8 quantized to e4m3 per 128 channels — from bf16, as DeepSeek's inference quantizes its
  // bf16 activations (and the GPU its bf16 buffers).
  xs_.resize(static_cast<size_t>(n_tokens * cols));
  const bool round = w.format != WeightFormat::kF32;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t c = 0; c < cols; ++c) {
      const float v = x[t * x_stride + c];
      xs_[static_cast<size_t>(t * cols + c)] = round ? round_to_bf16(v) : v;
    }
    if (w.fp8_activations) quantize_fp8_groups(xs_.data() + t * cols, cols, w.block_cols);
  }
  // Each weight row is dequantized once and dotted with every token: weights stream once.
  row_.resize(static_cast<size_t>(cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    const float* wr;
    if (w.format == WeightFormat::kF32) {
      wr = static_cast<const float*>(w.data) + r * cols;
    } else {
      w.row_to_f32(r, row_.data());
      wr = row_.data();
    }
    for (int64_t t = 0; t < n_tokens; ++t) y[t * y_stride + r] = dot(wr, xs_.data() + t * cols, cols);
  }
}

void quantize_activations_i8(const float* x, int64_t x_stride, int64_t n_tokens, int64_t cols, int8_t* q, int64_t q_stride,
                             float* scales) {
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* row = x + t * x_stride;
    float amax = 0.0f;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(row[c]));
    const float scale = amax > 0.0f ? amax / 127.0f : 1.0f;
    scales[t] = scale;
    const float inv = 1.0f / scale;
    for (int64_t c = 0; c < cols; ++c)
      q[t * q_stride + c] = static_cast<int8_t>(std::clamp(std::nearbyint(row[c] * inv), -127.0f, 127.0f));
  }
}

// y[t][r] = x_scale[t] * w_scale[r] * sum_k wq[r][k] * xq[t][k]: exact integer dot products.
void ReferenceBackend::matmul_i8(const Weight& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y, int64_t y_stride) {
  const int64_t cols = w.cols;
  std::vector<int8_t> xq(static_cast<size_t>(n_tokens * cols));
  std::vector<float> x_scale(static_cast<size_t>(n_tokens));
  quantize_activations_i8(x, x_stride, n_tokens, cols, xq.data(), cols, x_scale.data());
  const int8_t* wq = static_cast<const int8_t*>(w.data);
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t t = 0; t < n_tokens; ++t) {
      int32_t acc = 0;
      for (int64_t k = 0; k < cols; ++k) acc += static_cast<int32_t>(wq[r * cols + k]) * xq[static_cast<size_t>(t * cols + k)];
      y[t * y_stride + r] = x_scale[static_cast<size_t>(t)] * w.scale_inv[r] * static_cast<float>(acc);
    }
}

void ReferenceBackend::rms_norm(const float* x, int64_t x_stride, const float* weight, int64_t n_tokens, int64_t dim,
              float eps, float* y, int64_t y_stride) {
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* xr = x + t * x_stride;
    float* yr = y + t * y_stride;
    float sum_sq = 0.0f;
    for (int64_t i = 0; i < dim; ++i) sum_sq += xr[i] * xr[i];
    const float inv_rms = 1.0f / std::sqrt(sum_sq / static_cast<float>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) yr[i] = weight[i] * (xr[i] * inv_rms);
  }
}

void ReferenceBackend::rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t token_stride, int64_t head_stride,
          int64_t rotary_dim, const float* cos, const float* sin, RopePairing pairing) {
  const int64_t half = rotary_dim / 2;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* c = cos + t * half;
    const float* s = sin + t * half;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + t * token_stride + h * head_stride;
      for (int64_t i = 0; i < half; ++i) {
        // Pair (a, b) rotates by angle i: (a cos - b sin, b cos + a sin).
        float* a = pairing == RopePairing::kInterleaved ? v + 2 * i : v + i;
        float* b = pairing == RopePairing::kInterleaved ? v + 2 * i + 1 : v + i + half;
        const float a0 = *a, b0 = *b;
        *a = a0 * c[i] - b0 * s[i];
        *b = b0 * c[i] + a0 * s[i];
      }
    }
  }
}

void ReferenceBackend::silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void ReferenceBackend::embedding(const Weight& table, const int32_t* ids, int64_t n_tokens, float* out) {
  for (int64_t t = 0; t < n_tokens; ++t) table.row_to_f32(ids[t], out + t * table.cols);
}

void ReferenceBackend::copy_rows(const float* src, int64_t src_stride, int64_t n_rows, int64_t width, float* dst,
               int64_t dst_stride) {
  for (int64_t r = 0; r < n_rows; ++r) std::copy_n(src + r * src_stride, width, dst + r * dst_stride);
}

void ReferenceBackend::scatter_rows(const float* src, int64_t src_stride, int64_t n_rows, int64_t width, const int64_t* dst_rows,
                  float* dst, int64_t dst_stride) {
  for (int64_t r = 0; r < n_rows; ++r) std::copy_n(src + r * src_stride, width, dst + dst_rows[r] * dst_stride);
}

void ReferenceBackend::add(const float* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void ReferenceBackend::add_bias(const float* bias, int64_t n_tokens, int64_t dim, float* y, int64_t y_stride) {
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t d = 0; d < dim; ++d) y[t * y_stride + d] += bias[d];
}

void ReferenceBackend::gqa_attention(const GqaAttentionArgs& a) {
  const int64_t group = a.n_heads / a.n_kv_heads;
  const int64_t kv_row = a.n_kv_heads * a.head_dim;
  for (int64_t t = 0; t < a.n_tokens; ++t) {
    const int64_t n_visible = a.positions[t] + 1;
    scores_.resize(static_cast<size_t>(n_visible));
    for (int64_t h = 0; h < a.n_heads; ++h) {
      const float* q = a.q + t * a.q_stride + h * a.head_dim;
      const int64_t kvh = h / group;
      for (int64_t s = 0; s < n_visible; ++s) {
        const int64_t row = kv_slot(a.block_table, a.block_size, s);
        scores_[static_cast<size_t>(s)] = dot(q, a.k_pool + row * kv_row + kvh * a.head_dim, a.head_dim) * a.scale;
      }
      softmax_inplace(scores_.data(), n_visible);
      float* out = a.out + (t * a.n_heads + h) * a.head_dim;
      std::fill(out, out + a.head_dim, 0.0f);
      for (int64_t s = 0; s < n_visible; ++s) {
        const float p = scores_[static_cast<size_t>(s)];
        const float* v = a.v_pool + kv_slot(a.block_table, a.block_size, s) * kv_row + kvh * a.head_dim;
        for (int64_t d = 0; d < a.head_dim; ++d) out[d] += p * v[d];
      }
    }
  }
}

void ReferenceBackend::mla_attention(const MlaAttentionArgs& a) {
  const int64_t R = a.kv_lora_rank, P = a.rope_dim;
  for (int64_t t = 0; t < a.n_tokens; ++t) {
    const int64_t n_visible = a.positions[t] + 1;
    scores_.resize(static_cast<size_t>(n_visible));
    for (int64_t h = 0; h < a.n_heads; ++h) {
      const float* ql = a.q_latent + (t * a.n_heads + h) * R;
      const float* qp = a.q_pe + (t * a.n_heads + h) * P;
      for (int64_t s = 0; s < n_visible; ++s) {
        const int64_t row = kv_slot(a.block_table, a.block_size, s);
        scores_[static_cast<size_t>(s)] = (dot(ql, a.c_kv_pool + row * R, R) + dot(qp, a.k_pe_pool + row * P, P)) * a.scale;
      }
      softmax_inplace(scores_.data(), n_visible);
      float* out = a.out_latent + (t * a.n_heads + h) * R;
      std::fill(out, out + R, 0.0f);
      for (int64_t s = 0; s < n_visible; ++s) {
        const float p = scores_[static_cast<size_t>(s)];
        const float* c = a.c_kv_pool + kv_slot(a.block_table, a.block_size, s) * R;
        for (int64_t d = 0; d < R; ++d) out[d] += p * c[d];
      }
    }
  }
}

void ReferenceBackend::moe_experts(const MoeArgs& a) {
  // Group tokens by expert so each selected expert's weights are read once per call.
  routed_.resize(a.experts.size());
  for (auto& tokens : routed_) tokens.clear();  // keeps their capacity
  for (int64_t t = 0; t < a.n_tokens; ++t)
    for (int64_t j = 0; j < a.top_k; ++j) {
      const int32_t e = a.expert_ids[t * a.top_k + j];
      SS_CHECK(e >= 0 && static_cast<size_t>(e) < a.experts.size(), "expert id out of range");
      routed_[static_cast<size_t>(e)].emplace_back(t, a.expert_weights[t * a.top_k + j]);
    }
  for (size_t e = 0; e < routed_.size(); ++e) {
    const auto& tokens = routed_[e];
    if (tokens.empty()) continue;
    const MlpWeights& ew = a.experts[e];
    const int64_t m = static_cast<int64_t>(tokens.size());
    const int64_t inter = ew.gate.rows;
    // Grow-only scratch: resize() to a size no larger than before does not allocate.
    expert_x_.resize(static_cast<size_t>(m * a.hidden));
    expert_gate_.resize(static_cast<size_t>(m * inter));
    expert_up_.resize(static_cast<size_t>(m * inter));
    expert_y_.resize(static_cast<size_t>(m * a.hidden));
    for (int64_t i = 0; i < m; ++i) std::copy_n(a.x + tokens[static_cast<size_t>(i)].first * a.hidden, a.hidden, expert_x_.data() + i * a.hidden);
    matmul(ew.gate, expert_x_.data(), a.hidden, m, expert_gate_.data(), inter);
    matmul(ew.up, expert_x_.data(), a.hidden, m, expert_up_.data(), inter);
    silu_mul(expert_gate_.data(), expert_up_.data(), m * inter, expert_gate_.data());
    matmul(ew.down, expert_gate_.data(), inter, m, expert_y_.data(), a.hidden);
    for (int64_t i = 0; i < m; ++i) {
      const auto [t, weight] = tokens[static_cast<size_t>(i)];
      for (int64_t d = 0; d < a.hidden; ++d) a.out[t * a.hidden + d] += weight * expert_y_[static_cast<size_t>(i * a.hidden + d)];
    }
  }
}


std::unique_ptr<Backend> make_reference_backend() { return std::make_unique<ReferenceBackend>(); }

}  // namespace seekserve
