// bf16 GEMMs through cuBLASLt for prefill and large batches: y[n, M] (+)= x[n, K] w[M, K]^T
// with float32 accumulation and float32 output (or bf16 output, for activations that are only
// read again as bf16: half the bytes written and read back). Algorithms are chosen once per shape (heuristic) and
// cached; the workspace is allocated once, so a captured CUDA graph may contain these calls.
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

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  const Plan& plan(int64_t M, int64_t K, int64_t n, cudaDataType_t out_type);
  void matmul(const Plan& p, const bf16* w, const bf16* x, bool accumulate, void* y, cudaStream_t stream);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<uint8_t> workspace_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int>, Plan> plans_;
};

}  // namespace seekserve::cuda
