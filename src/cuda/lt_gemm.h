// GEMMs through cuBLASLt for prefill and large batches: y[n, M] (+)= x[n, K] w[M, K]^T with
// float32 accumulation.
//  - bf16 operands, float32 output (or bf16 output, for activations that are only read again as
//    bf16: half the bytes written and read back);
//  - W8A8 FP8 as DeepSeek's own inference, on Hopper through cuBLASLt's block scaling (cuBLAS
//    12.9+, sm_90): weights e4m3 with one float32 scale per 128 x 128 block (the checkpoints'
//    weight_scale_inv grid, row-major [ceil(M/128), fp8_weight_scale_ld(K)]: rows padded to a
//    multiple of 4 blocks), activations e4m3 with one scale per token per 128 channels
//    ([K/128, n] with the token index contiguous, from quantize_fp8_rows), bf16 output. The token
//    count n must be a multiple of 4 (fp8_rows pads it).
// Algorithms are chosen once per shape (heuristic) and cached; the workspace is allocated once,
// so a captured CUDA graph may contain these calls.
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace seekserve::cuda {

class LtGemm {
 public:
  LtGemm();
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  void run(const bf16* w, int64_t M, int64_t K, const bf16* x, int64_t n, bool accumulate, float* y, cudaStream_t stream);
  void run(const bf16* w, int64_t M, int64_t K, const bf16* x, int64_t n, bf16* y, cudaStream_t stream);

  // FP8: false when cuBLASLt has no block-scaled algorithm here (not Hopper, an old cuBLAS) or
  // the shape does not fit it (K a multiple of 128, M of 16, n of 4, y_stride of 8; 0: M).
  bool fp8_available(int64_t M, int64_t K, int64_t n, int64_t y_stride = 0);
  static int64_t fp8_rows(int64_t n) { return (n + 3) / 4 * 4; }
  static int64_t fp8_weight_scale_ld(int64_t K) { return (K / 128 + 3) / 4 * 4; }
  // y: [n, y_stride] bf16 (y_stride >= M: a column slice of a wider output).
  void run_fp8(const uint8_t* w, const float* w_scales, int64_t M, int64_t K, const uint8_t* xq, const float* x_scales, int64_t n, bf16* y,
               int64_t y_stride, cudaStream_t stream);

 private:
  enum class Operands { kBf16FloatOut, kBf16Bf16Out, kFp8BlockScaled };
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool found = false;
  };
  Plan& plan(int64_t M, int64_t K, int64_t n, Operands operands, int64_t ldc = 0);  // ldc 0: M
  void matmul(const Plan& p, const void* w, const void* x, bool accumulate, void* y, cudaStream_t stream);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<uint8_t> workspace_;
  std::map<std::tuple<int64_t, int64_t, int64_t, Operands, int64_t>, Plan> plans_;
};

}  // namespace seekserve::cuda
