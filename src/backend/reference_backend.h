// The reference backend: plain float32 loops, single-threaded, written for clarity. It is the
// correctness baseline every faster backend is tested against; faster backends may derive from
// it and override the ops they speed up (its moe_experts calls the virtual matmul).
#pragma once

#include <utility>
#include <vector>

#include "backend/backend.h"

namespace seekserve {

// Per-token symmetric int8 quantization of activations (what int8 matmuls multiply):
// scale = max|x| / 127, q = x * (1 / scale) rounded half to even (as vector conversions round).
void quantize_activations_i8(const float* x, int64_t x_stride, int64_t n_tokens, int64_t cols, int8_t* q, int64_t q_stride,
                             float* scales);

class ReferenceBackend : public Backend {
 public:
  const char* name() const override { return "reference"; }
  void matmul(const Weight& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
              int64_t y_stride) override;
  void rms_norm(const float* x, int64_t x_stride, const float* weight, int64_t n_tokens, int64_t dim,
                float eps, float* y, int64_t y_stride) override;
  void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t token_stride, int64_t head_stride,
            int64_t rotary_dim, const float* cos, const float* sin, RopePairing pairing) override;
  void silu_mul(const float* gate, const float* up, int64_t n, float* out) override;
  void embedding(const Weight& table, const int32_t* ids, int64_t n_tokens, float* out) override;
  void copy_rows(const float* src, int64_t src_stride, int64_t n_rows, int64_t width, float* dst,
                 int64_t dst_stride) override;
  void scatter_rows(const float* src, int64_t src_stride, int64_t n_rows, int64_t width, const int64_t* dst_rows,
                    float* dst, int64_t dst_stride) override;
  void add(const float* x, int64_t n, float* y) override;
  void add_bias(const float* bias, int64_t n_tokens, int64_t dim, float* y, int64_t y_stride) override;
  void gqa_attention(const GqaAttentionArgs& a) override;
  void mla_attention(const MlaAttentionArgs& a) override;
  void moe_experts(const MoeArgs& a) override;

 protected:
  // Int8 weights: activations quantized per token (symmetric, max |x| / 127), exact int32 dots.
  void matmul_i8(const Weight& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y, int64_t y_stride);

 private:
  std::vector<float> xs_, row_, scores_;  // scratch, reused across calls
  // moe_experts scratch, reused across calls (no allocation in a decode step once warm):
  std::vector<std::vector<std::pair<int64_t, float>>> routed_;  // per expert: (token, weight)
  std::vector<float> expert_x_, expert_gate_, expert_up_, expert_y_;
};

}  // namespace seekserve
