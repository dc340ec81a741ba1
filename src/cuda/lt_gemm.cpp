#include "cuda/lt_gemm.h"

#include <cstdio>
#include <cstdlib>

namespace seekserve::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t{64} << 20;

void check_lt(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  std::fprintf(stderr, "cuBLASLt error %d in %s\n", static_cast<int>(status), what);
  std::abort();
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
// B = x stored as [K, n] and C = y stored as [M, n] — exactly the row-major arrays we hold.
const LtGemm::Plan& LtGemm::plan(int64_t M, int64_t K, int64_t n, cudaDataType_t out_type) {
  const auto key = std::make_tuple(M, K, n, static_cast<int>(out_type));
  if (auto it = plans_.find(key); it != plans_.end()) return it->second;
  Plan p;
  check_lt(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate");
  const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof transa), "TRANSA");
  check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof transb), "TRANSB");
  check_lt(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, static_cast<uint64_t>(K), static_cast<uint64_t>(M), K), "layout A");
  check_lt(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, static_cast<uint64_t>(K), static_cast<uint64_t>(n), K), "layout B");
  check_lt(cublasLtMatrixLayoutCreate(&p.c, out_type, static_cast<uint64_t>(M), static_cast<uint64_t>(n), M), "layout C");
  cublasLtMatmulPreference_t pref;
  check_lt(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
  const size_t workspace = kWorkspaceBytes;
  check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace),
           "workspace pref");
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  check_lt(cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found), "heuristic");
  cublasLtMatmulPreferenceDestroy(pref);
  if (found == 0) {
    std::fprintf(stderr, "cuBLASLt found no algorithm for M=%lld K=%lld n=%lld\n", static_cast<long long>(M),
                 static_cast<long long>(K), static_cast<long long>(n));
    std::abort();
  }
  p.algo = result.algo;
  return plans_.emplace(key, p).first->second;
}

void LtGemm::run(const bf16* w, int64_t M, int64_t K, const bf16* x, int64_t n, bool accumulate, float* y, cudaStream_t stream) {
  if (n == 0 || M == 0) return;
  matmul(plan(M, K, n, CUDA_R_32F), w, x, accumulate, y, stream);
}

void LtGemm::run(const bf16* w, int64_t M, int64_t K, const bf16* x, int64_t n, bf16* y, cudaStream_t stream) {
  if (n == 0 || M == 0) return;
  matmul(plan(M, K, n, CUDA_R_16BF), w, x, false, y, stream);
}

void LtGemm::matmul(const Plan& p, const bf16* w, const bf16* x, bool accumulate, void* y, cudaStream_t stream) {
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  check_lt(cublasLtMatmul(handle_, p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo, workspace_.data(),
                          kWorkspaceBytes, stream),
           "cublasLtMatmul");
}

}  // namespace seekserve::cuda
