// The memory-bound matmul of decode steps (a few tokens against a weight matrix streamed once),
// optionally building its input itself (RMSNorm of the residual stream) and finishing with SwiGLU
// (gate and up rows dotted side by side): at batch 1 a small model's step is ~200 kernels of a
// few microseconds each, so each kernel and memory round trip saved shows. Declared in kernels.h.
#include <algorithm>

#include "cuda/kernel_support.cuh"

namespace seekserve::cuda {

using namespace detail;

namespace {

constexpr int kGemvThreads = 256;  // 8 warps

enum class Prologue { kNone, kRmsNorm };

// Builds the block's bf16 input rows [kTokens, K] in shared memory, rounding exactly as the
// rms_norm kernel does, so fused and unfused steps agree.
template <int kTokens, Prologue kPro>
__device__ void stage_input(const GemvInput& in, int64_t K, bf16* xs) {
  if constexpr (kPro == Prologue::kRmsNorm) {
    __shared__ float partial[kGemvThreads / 32][kTokens];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float inv_rms[kTokens];
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      const float* h = in.hidden + (in.rows ? in.rows[t] : t) * K;
      float sum_sq = 0.0f;
      for (int64_t k = threadIdx.x; k < K; k += kGemvThreads) sum_sq = fmaf(h[k], h[k], sum_sq);
      sum_sq = warp_sum(sum_sq);
      if (lane == 0) partial[warp][t] = sum_sq;
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      float sum_sq = 0.0f;
#pragma unroll
      for (int w = 0; w < kGemvThreads / 32; ++w) sum_sq += partial[w][t];
      inv_rms[t] = rms_inverse(sum_sq, K, in.eps);
    }
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      const float* h = in.hidden + (in.rows ? in.rows[t] : t) * K;
      for (int64_t k = threadIdx.x; k < K; k += kGemvThreads) xs[t * K + k] = __float2bfloat16_rn(rms_scaled(in.norm_weight[k], h[k], inv_rms[t]));
    }
  }
  __syncthreads();
}

// kWarpsPerRow warps per weight row (a group of 8 / kWarpsPerRow rows per pass of the block);
// each lane streams 16-byte chunks (8 bf16) of the row and dots them with the same chunk of
// every token's input (L1/shared resident: n * K * 2 bytes). Several warps per row keep enough
// loads in flight when the matrix has few rows (o_proj, down_proj of small models). Blocks loop
// over row groups, so a prologue's input is built once per block, not once per group.
// kSwiGLU: w holds 2M rows (gate rows, then up rows); a warp dots gate row r and up row r side by
// side and writes act[t][r] = bf16(silu(gate) * up) instead of y (no bias, no accumulation).
template <int kTokens, int kWarpsPerRow, Prologue kPro, bool kSwiGLU>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const bf16* __restrict__ w, int64_t M, int64_t K, GemvInput in,
                                                            const float* __restrict__ bias, bool accumulate, float* y, int64_t y_stride,
                                                            bf16* act) {
  constexpr int kOuts = kSwiGLU ? 2 : 1;  // dot products per row and token
  constexpr int kRowsPerBlock = 8 / kWarpsPerRow;
  const int64_t groups = (M + kRowsPerBlock - 1) / kRowsPerBlock;
  dependency_wait();
  extern __shared__ __align__(16) bf16 staged[];
  const bf16* x = in.x;
  if constexpr (kPro != Prologue::kNone) {
    stage_input<kTokens, kPro>(in, K, staged);
    x = staged;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int part = warp % kWarpsPerRow;  // which slice of the row's chunks this warp takes
  __shared__ float partial[8][kOuts][kTokens];
  for (int64_t group = blockIdx.x; group < groups; group += gridDim.x) {
    const int64_t row = group * kRowsPerBlock + warp / kWarpsPerRow;
    float acc[kOuts][kTokens] = {};
    if (row < M) {
      if (K % 8 == 0) {
        const int64_t chunks = K / 8;
#pragma unroll 4
        for (int64_t c = part * 32 + lane; c < chunks; c += 32 * kWarpsPerRow) {
          float2 wf[kOuts][4];
#pragma unroll
          for (int o = 0; o < kOuts; ++o) {
            // Streamed once: do not keep it in L2 at the expense of x.
            const uint4 wv = __ldcs(reinterpret_cast<const uint4*>(w + (row + o * M) * K) + c);
            const __nv_bfloat162* wp = reinterpret_cast<const __nv_bfloat162*>(&wv);
#pragma unroll
            for (int j = 0; j < 4; ++j) wf[o][j] = __bfloat1622float2(wp[j]);
          }
#pragma unroll
          for (int t = 0; t < kTokens; ++t) {
            const uint4 xv = *reinterpret_cast<const uint4*>(x + t * K + c * 8);
            const __nv_bfloat162* xp = reinterpret_cast<const __nv_bfloat162*>(&xv);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              const float2 xf = __bfloat1622float2(xp[j]);
#pragma unroll
              for (int o = 0; o < kOuts; ++o) {
                acc[o][t] = fmaf(wf[o][j].x, xf.x, acc[o][t]);
                acc[o][t] = fmaf(wf[o][j].y, xf.y, acc[o][t]);
              }
            }
          }
        }
      } else {
        for (int64_t k = part * 32 + lane; k < K; k += 32 * kWarpsPerRow)
#pragma unroll
          for (int o = 0; o < kOuts; ++o) {
            const float wk = __bfloat162float(w[(row + o * M) * K + k]);
#pragma unroll
            for (int t = 0; t < kTokens; ++t) acc[o][t] = fmaf(wk, __bfloat162float(x[t * K + k]), acc[o][t]);
          }
      }
    }
#pragma unroll
    for (int o = 0; o < kOuts; ++o)
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        const float v = warp_sum(acc[o][t]);
        if (lane == 0) partial[warp][o][t] = v;
      }
    if constexpr (kWarpsPerRow > 1) __syncthreads();
    else __syncwarp();
    // The first warp of each row adds the row's slices (in a fixed order: results do not depend
    // on timing) and writes the tokens' outputs.
    if (part == 0 && row < M && lane < kTokens) {
      float v[kOuts] = {};
#pragma unroll
      for (int p = 0; p < kWarpsPerRow; ++p)
#pragma unroll
        for (int o = 0; o < kOuts; ++o) v[o] += partial[warp + p][o][lane];
      if constexpr (kSwiGLU) {
        act[lane * M + row] = __float2bfloat16_rn(silu_times(v[0], v[1]));
      } else {
        if (bias) v[0] += bias[row];
        float* dst = y + lane * y_stride + row;
        *dst = accumulate ? *dst + v[0] : v[0];
      }
    }
    if constexpr (kWarpsPerRow > 1) __syncthreads();  // partial is rewritten by the next group
    else __syncwarp();
  }
}

int device_sm_count() {
  static const int count = [] {
    int device = 0, sms = 0;
    SS_CUDA_CHECK(cudaGetDevice(&device));
    SS_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return sms;
  }();
  return count;
}

template <int kTokens, int kWarpsPerRow, Prologue kPro, bool kSwiGLU>
void launch_gemv_kernel(const bf16* w, int64_t M, int64_t K, const GemvInput& in, const float* bias, bool accumulate, float* y,
                        int64_t y_stride, bf16* act, cudaStream_t stream) {
  auto kernel = gemv_kernel<kTokens, kWarpsPerRow, kPro, kSwiGLU>;
  const int64_t groups = (M + 8 / kWarpsPerRow - 1) / (8 / kWarpsPerRow);
  const size_t shared = kPro == Prologue::kNone ? 0 : static_cast<size_t>(kTokens * K) * 2;
  int64_t grid = groups;
  if (kPro != Prologue::kNone) {  // as many blocks as fit at once, each building the input once
    int per_sm = 0;
    SS_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kGemvThreads, shared));
    grid = std::min<int64_t>(groups, static_cast<int64_t>(std::max(per_sm, 1)) * device_sm_count());
  }
  launch_with_shared(kernel, static_cast<unsigned>(grid), kGemvThreads, shared, stream, w, M, K, in, bias, accumulate, y, y_stride, act);
}

template <int kTokens, Prologue kPro, bool kSwiGLU>
void launch_gemv(const bf16* w, int64_t M, int64_t K, const GemvInput& in, const float* bias, bool accumulate, float* y,
                 int64_t y_stride, bf16* act, cudaStream_t stream) {
  // Split rows over more warps while the grid stays under ~4 waves of warps on an H100/H200
  // (132 SMs x 32 warps) and each lane still gets a chunk: small matrices are latency-bound.
  int warps_per_row = 1;
  while (warps_per_row < 8 && M * warps_per_row * 2 <= 16896 && K / 8 >= 32 * warps_per_row * 2) warps_per_row *= 2;
  switch (warps_per_row) {
    case 1: return launch_gemv_kernel<kTokens, 1, kPro, kSwiGLU>(w, M, K, in, bias, accumulate, y, y_stride, act, stream);
    case 2: return launch_gemv_kernel<kTokens, 2, kPro, kSwiGLU>(w, M, K, in, bias, accumulate, y, y_stride, act, stream);
    case 4: return launch_gemv_kernel<kTokens, 4, kPro, kSwiGLU>(w, M, K, in, bias, accumulate, y, y_stride, act, stream);
    default: return launch_gemv_kernel<kTokens, 8, kPro, kSwiGLU>(w, M, K, in, bias, accumulate, y, y_stride, act, stream);
  }
}

// The kernel variants built: plain, RMSNorm prologue, RMSNorm prologue with the SwiGLU epilogue.
template <int kTokens>
void launch_gemv_variant(const bf16* w, int64_t M, int64_t K, const GemvInput& in, const float* bias, bool accumulate, float* y,
                         int64_t y_stride, bf16* act, cudaStream_t stream) {
  if (act) return launch_gemv<kTokens, Prologue::kRmsNorm, true>(w, M, K, in, nullptr, false, nullptr, 0, act, stream);
  if (in.hidden) return launch_gemv<kTokens, Prologue::kRmsNorm, false>(w, M, K, in, bias, accumulate, y, y_stride, nullptr, stream);
  launch_gemv<kTokens, Prologue::kNone, false>(w, M, K, in, bias, accumulate, y, y_stride, nullptr, stream);
}

void gemv_any(const bf16* w, int64_t M, int64_t K, const GemvInput& x, int64_t n, const float* bias, bool accumulate, float* y,
              int64_t y_stride, bf16* act, cudaStream_t stream) {
  if (n == 0 || M == 0) return;
  if (!x.x && !gemv_builds_input(n, K)) fail("gemv: a prologue input wider than its shared memory", cudaErrorInvalidValue, __FILE__, __LINE__);
  switch (n) {
#define SS_GEMV_CASE(T) \
  case T: launch_gemv_variant<T>(w, M, K, x, bias, accumulate, y, y_stride, act, stream); break;
    SS_GEMV_CASE(1)
    SS_GEMV_CASE(2)
    SS_GEMV_CASE(3)
    SS_GEMV_CASE(4)
    SS_GEMV_CASE(5)
    SS_GEMV_CASE(6)
    SS_GEMV_CASE(7)
    SS_GEMV_CASE(8)
#undef SS_GEMV_CASE
    default: fail("gemv with more than kGemvMaxTokens tokens", cudaErrorInvalidValue, __FILE__, __LINE__);
  }
  SS_CUDA_CHECK_LAUNCH();
}

}  // namespace

bool gemv_builds_input(int64_t n, int64_t K) { return n >= 1 && n <= kGemvMaxTokens && n * K * 2 <= kGemvStagedBytes; }

void gemv(const bf16* w, int64_t M, int64_t K, const GemvInput& x, int64_t n, const float* bias, bool accumulate, float* y,
          int64_t y_stride, cudaStream_t stream) {
  gemv_any(w, M, K, x, n, bias, accumulate, y, y_stride, nullptr, stream);
}

void gemv_swiglu(const bf16* w, int64_t I, int64_t K, const GemvInput& x, int64_t n, bf16* act, cudaStream_t stream) {
  if (!x.hidden) fail("gemv_swiglu: built for RMSNorm inputs only", cudaErrorInvalidValue, __FILE__, __LINE__);
  gemv_any(w, I, K, x, n, nullptr, false, nullptr, 0, act, stream);
}

}  // namespace seekserve::cuda
