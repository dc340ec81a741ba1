// The optimized CPU backend: the reference backend with matmuls that use AVX-512 (BF16 dot
// products where the CPU has them) or AVX2+FMA, split over a persistent thread pool. Weights are
// read once per call for all tokens, so decoding a batch costs little more than decoding one.
// Numerics follow the reference (bf16-rounded activations against low-precision weights, float32
// accumulation); only the summation order differs.
#pragma once

#include <memory>
#include <vector>

#include "backend/reference_backend.h"
#include "backend/thread_pool.h"

namespace seekserve {

enum class CpuIsa { kPortable, kAvx2, kAvx512, kAvx512Bf16 };
const char* cpu_isa_name(CpuIsa isa);
// The best instruction set this CPU supports.
CpuIsa detect_cpu_isa();

class CpuBackend final : public ReferenceBackend {
 public:
  // n_threads 0: one per hardware thread. isa: capped at what the CPU supports and at the
  // SEEKSERVE_CPU_ISA environment variable (portable, avx2, avx512, avx512-bf16).
  explicit CpuBackend(int n_threads = 0, CpuIsa isa = CpuIsa::kAvx512Bf16);
  const char* name() const override { return "cpu"; }
  CpuIsa isa() const { return isa_; }
  int n_threads() const { return pool_->n_threads(); }
  bool vnni() const { return vnni_; }

  void matmul(const Weight& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y, int64_t y_stride) override;
  // Vectorized; prefill-sized inputs split over the thread pool.
  void rms_norm(const float* x, int64_t x_stride, const float* weight, int64_t n_tokens, int64_t dim, float eps, float* y,
                int64_t y_stride) override;
  void add(const float* x, int64_t n, float* y) override;
  // Vectorized exp; large inputs split over the thread pool.
  void silu_mul(const float* gate, const float* up, int64_t n, float* out) override;
  // Vectorized, one task per (token, head) over the thread pool.
  void gqa_attention(const GqaAttentionArgs& args) override;
  void mla_attention(const MlaAttentionArgs& args) override;
  // Decode-sized steps over int8 experts: all selected experts' gate/up rows in one pool run and
  // their down rows in a second (instead of three runs an expert), bit-identical to the
  // per-expert dispatch; other steps take the per-expert dispatch.
  void moe_experts(const MoeArgs& args) override;

 private:
  void matmul_i8_fast(const Weight& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y, int64_t y_stride);

  CpuIsa isa_;
  bool vnni_ = false;             // AVX512_VNNI int8 dot products (else vpmaddwd on widened int16)
  std::unique_ptr<ThreadPool> pool_;
  std::vector<float> x_f32_;      // [n_tokens, cols] activations, bf16-rounded for low-precision weights
  std::vector<uint16_t> x_bf16_;  // [n_tokens, cols padded to 32] for the AVX-512 BF16 kernel
  std::vector<int8_t> x_i8_;      // [n_tokens, cols padded to 32] quantized activations (int8 weights)
  std::vector<float> x_scale_;    // [n_tokens] their scales
  std::vector<int32_t> x_bias_;   // [n_tokens] 128 * sum of the quantized activations (VNNI)
  // Fused MoE decode scratch (grow-only): pairs (expert, token, weight) in expert order, gate|up
  // and down outputs per pair, SwiGLU activations and their quantization.
  bool fused_moe_ = true;  // SEEKSERVE_CPU_MOE_PER_EXPERT=1: always the per-expert dispatch (to compare)
  struct ExpertPair {
    int32_t expert;
    int64_t token;
    float weight;
  };
  std::vector<ExpertPair> moe_pairs_;
  std::vector<float> moe_gate_up_, moe_act_, moe_down_;
  std::vector<int8_t> moe_act_i8_;
  std::vector<float> moe_act_scale_;
  std::vector<int32_t> moe_act_bias_;
};

std::unique_ptr<Backend> make_cpu_backend(int n_threads = 0);

}  // namespace seekserve
