// Per-token, per-128-channel e4m3 quantization of activations (declared in kernels.h).
#include <cuda_fp8.h>

#include "cuda/kernel_support.cuh"

namespace seekserve::cuda {

using namespace detail;

namespace {

// One warp per (token, group of 128): 4 values a lane, the group's amax by a warp reduction.
__global__ void quantize_fp8_kernel(const bf16* x, int64_t n, int64_t K, uint8_t* xq, float* scales, int64_t scale_ld) {
  dependency_wait();
  const int64_t groups = K / kFp8Group;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (item >= n * groups) return;
  const int lane = threadIdx.x % 32;
  const int64_t t = item / groups, g = item % groups;
  const bf16* src = x + t * K + g * kFp8Group + 4 * lane;
  float v[4];
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[i] = __bfloat162float(src[i]);
    amax = fmaxf(amax, fabsf(v[i]));
  }
  amax = warp_max(amax);
  const float scale = amax == 0.0f ? 1.0f : amax / 448.0f;  // the reference leaves all-zero groups at 0
  uint8_t* dst = xq + t * K + g * kFp8Group + 4 * lane;
#pragma unroll
  for (int i = 0; i < 4; ++i) dst[i] = __nv_cvt_float_to_fp8(v[i] / scale, __NV_SATFINITE, __NV_E4M3);
  if (lane == 0) scales[g * scale_ld + t] = scale;
}

}  // namespace

void quantize_fp8_rows(const bf16* x, int64_t n, int64_t K, uint8_t* xq, float* scales, int64_t scale_ld, cudaStream_t stream) {
  if (n == 0) return;
  if (K % kFp8Group != 0) fail("quantize_fp8_rows: K must be a multiple of 128", cudaErrorInvalidValue, __FILE__, __LINE__);
  if (scale_ld < n) fail("quantize_fp8_rows: scale_ld < n", cudaErrorInvalidValue, __FILE__, __LINE__);
  const int64_t items = n * (K / kFp8Group);
  launch(quantize_fp8_kernel, blocks_for(items * 32, 256), 256, stream, x, n, K, xq, scales, scale_ld);
  SS_CUDA_CHECK_LAUNCH();
}

}  // namespace seekserve::cuda
