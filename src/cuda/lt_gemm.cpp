#include "cuda/lt_gemm.h"

#include <cstdio>
#include <cstdlib>

#include "cuda/fp8_kernels.h"

namespace seekserve::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t{64} << 20;

void check_lt(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  std::fprintf(stderr, "cuBLASLt error %d in %s\n", static_cast<int>(status), what);
  std::abort();
}

template <typename T>
void set(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, const T& value, const char* what) {
  check_lt(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof value), what);
}

}  // namespace

LtGemm::LtGemm() {
  check_lt(cublasLtCreate(&handle_), "cublasLtCreate");
  const Status status = workspace_.reserve(kWorkspaceBytes);
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", status.to_string().c_str());
    std::abort();
  }
}

LtGemm::~LtGemm() {
  for (auto& [shape, p] : plans_) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.desc);
  }
  cublasLtDestroy(handle_);
}

// Column-major view: C[M, n] = op(A)[M, K] * B[K, n] with A = w stored as [K, M] (transposed),
// B = x stored as [K, n] and C = y stored as [M, n] — exactly the row-major arrays we hold. FP8
// scales in that view: A's 128 x 128 blocks K-block-major with the leading dimension rounded up
// to 4 blocks, B's 128-element vectors token-major ([K/128, n]).
LtGemm::Plan& LtGemm::plan(int64_t M, int64_t K, int64_t n, Operands operands, int64_t ldc) {
  if (ldc == 0) ldc = M;
  const auto key = std::make_tuple(M, K, n, operands, ldc);
  if (auto it = plans_.find(key); it != plans_.end()) return it->second;
  const bool fp8 = operands == Operands::kFp8BlockScaled;
  const cudaDataType_t in_type = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
  const cudaDataType_t out_type = operands == Operands::kBf16FloatOut ? CUDA_R_32F : CUDA_R_16BF;
  Plan p;
  check_lt(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate");
  set(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T, "TRANSA");
  set(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N, "TRANSB");
  if (fp8) {
    set(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, static_cast<int32_t>(CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F), "A scale mode");
    set(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, static_cast<int32_t>(CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F), "B scale mode");
    // The scale pointers are set per call; the heuristic wants some set (any device address).
    set(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(workspace_.data()), "A scale pointer");
    set(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(workspace_.data()), "B scale pointer");
  }
  check_lt(cublasLtMatrixLayoutCreate(&p.a, in_type, static_cast<uint64_t>(K), static_cast<uint64_t>(M), K), "layout A");
  check_lt(cublasLtMatrixLayoutCreate(&p.b, in_type, static_cast<uint64_t>(K), static_cast<uint64_t>(n), K), "layout B");
  check_lt(cublasLtMatrixLayoutCreate(&p.c, out_type, static_cast<uint64_t>(M), static_cast<uint64_t>(n), ldc), "layout C");
  cublasLtMatmulPreference_t pref;
  check_lt(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
  const size_t workspace = kWorkspaceBytes;
  check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace),
           "workspace pref");
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (!fp8) check_lt(status, "heuristic");  // FP8: a refusal only means "not here"
  p.found = status == CUBLAS_STATUS_SUCCESS && found > 0;
  if (p.found) p.algo = result.algo;
  return plans_.emplace(key, p).first->second;
}

void LtGemm::run(const bf16* w, int64_t M, int64_t K, const bf16* x, int64_t n, bool accumulate, float* y, cudaStream_t stream) {
  if (n == 0 || M == 0) return;
  matmul(plan(M, K, n, Operands::kBf16FloatOut), w, x, accumulate, y, stream);
}

void LtGemm::run(const bf16* w, int64_t M, int64_t K, const bf16* x, int64_t n, bf16* y, cudaStream_t stream) {
  if (n == 0 || M == 0) return;
  matmul(plan(M, K, n, Operands::kBf16Bf16Out), w, x, false, y, stream);
}

bool LtGemm::fp8_available(int64_t M, int64_t K, int64_t n, int64_t y_stride) {
  if (y_stride == 0) y_stride = M;
  return K % kFp8Group == 0 && M % 16 == 0 && n > 0 && n % 4 == 0 && y_stride % 8 == 0 &&
         plan(M, K, n, Operands::kFp8BlockScaled, y_stride).found;
}

void LtGemm::run_fp8(const uint8_t* w, const float* w_scales, int64_t M, int64_t K, const uint8_t* xq, const float* x_scales, int64_t n,
                     bf16* y, int64_t y_stride, cudaStream_t stream) {
  if (n == 0 || M == 0) return;
  if (n % 4 != 0) {
    std::fprintf(stderr, "run_fp8: the token count must be a multiple of 4 (LtGemm::fp8_rows)\n");
    std::abort();
  }
  Plan& p = plan(M, K, n, Operands::kFp8BlockScaled, y_stride);
  set(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(w_scales), "A scale pointer");
  set(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(x_scales), "B scale pointer");
  matmul(p, w, xq, false, y, stream);
}

void LtGemm::matmul(const Plan& p, const void* w, const void* x, bool accumulate, void* y, cudaStream_t stream) {
  if (!p.found) {
    std::fprintf(stderr, "cuBLASLt found no algorithm for this matmul\n");
    std::abort();
  }
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  check_lt(cublasLtMatmul(handle_, p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo, workspace_.data(), kWorkspaceBytes,
                          stream),
           "cublasLtMatmul");
}

}  // namespace seekserve::cuda
