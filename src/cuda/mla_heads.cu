// The absorbed MLA's per-head matmuls on the GPU (declared in deepseek_kernels.h): q_nope folded
// into the latent space through W_uk^T per head before attention, the latent output unfolded
// through W_uv per head after it.
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "cuda/deepseek_kernels.h"
#include "cuda/kernel_support.cuh"

namespace seekserve::cuda {

using namespace detail;

namespace {

// Grid (row groups of 8, heads): warp w takes row blockIdx.x * 8 + w of its head; the head's
// inputs for up to 16 tokens are staged in shared memory as float (K <= 512), and lanes stream the
// row in 16-byte chunks. The per-head matrices are small (R x nope and V x R, a few MB a layer).
constexpr int kHeadTokens = 16, kHeadMaxK = 512;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }

template <typename InT>
__global__ void __launch_bounds__(256) head_matmul_kernel(const bf16* w, int64_t H, int64_t M, int64_t K, const InT* x,
                                                         int64_t x_token_stride, int64_t x_head_stride, int64_t n, bf16* out) {
  dependency_wait();
  __shared__ __align__(16) float xs[kHeadTokens * kHeadMaxK];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t h = blockIdx.y, row = static_cast<int64_t>(blockIdx.x) * 8 + warp;
  const uint4* wr = reinterpret_cast<const uint4*>(w + (h * M + row) * K);
  const int chunks = static_cast<int>(K / 8);
  for (int64_t t0 = 0; t0 < n; t0 += kHeadTokens) {
    const int count = n - t0 < kHeadTokens ? static_cast<int>(n - t0) : kHeadTokens;
    __syncthreads();  // the previous pass is done with xs
    for (int i = threadIdx.x; i < count * K; i += blockDim.x) {
      const int tt = i / static_cast<int>(K), k = i % static_cast<int>(K);
      xs[tt * K + k] = to_float(x[(t0 + tt) * x_token_stride + h * x_head_stride + k]);
    }
    __syncthreads();
    if (row >= M) continue;
    float acc[kHeadTokens] = {};
    for (int c = lane; c < chunks; c += 32) {
      float wf[8];
      bf16x8_to_float(wr[c], wf);
#pragma unroll
      for (int tt = 0; tt < kHeadTokens; ++tt) {
        if (tt >= count) break;
        const float4 x0 = *reinterpret_cast<const float4*>(xs + tt * K + 8 * c);
        const float4 x1 = *reinterpret_cast<const float4*>(xs + tt * K + 8 * c + 4);
        acc[tt] = fmaf(wf[0], x0.x, fmaf(wf[1], x0.y, fmaf(wf[2], x0.z, fmaf(wf[3], x0.w, acc[tt]))));
        acc[tt] = fmaf(wf[4], x1.x, fmaf(wf[5], x1.y, fmaf(wf[6], x1.z, fmaf(wf[7], x1.w, acc[tt]))));
      }
    }
#pragma unroll
    for (int tt = 0; tt < kHeadTokens; ++tt) {
      const float v = warp_sum(acc[tt]);
      if (lane == 0 && tt < count) out[(t0 + tt) * H * M + h * M + row] = __float2bfloat16_rn(v);
    }
  }
}

// The same per-head matmul on tensor cores (K a multiple of 32): each block a tile of 16 weight
// rows of one head, its warps splitting K, the tokens as mma.sync m16n8k16's N, 8 at a time, up
// to kHeadMmaTiles tiles per block (grid.z covers the rest). The CUDA-core kernel above stages the head's inputs in
// shared memory behind a barrier in each of its (M / 8) x H small blocks and keeps one 16-byte
// weight load in flight a lane: measured on the H200 (V3 shapes, batch 32) at 76-105 GB/s.
// Here a lane loads 16 contiguous bytes of its rows gid and gid + 8 per 32-channel chunk, four
// chunks in flight, and its token's 8 matching inputs (bf16, or float32 as two bf16 parts): k is
// permuted alike on both sides (mma step 0 takes words 0, 1 of the 16 bytes as its k 2 tig.. and
// 2 tig + 8.., step 1 words 2, 3), which a dot product does not see.
constexpr int kHeadMmaWarps = 4, kHeadMmaTiles = 4, kHeadMmaUnroll = 4;

// 8 inputs as bf16 pairs: bf16 as they are; float32 as a bf16 head plus a bf16 tail (x - head),
// two mma passes whose sum keeps ~16 significant bits — the float32 q of the absorb step rounded
// to bf16 alone moved a near-tie expert choice of random-deepseek-v3-fp8 (tail-logit error 0.45
// against 0.10).
__device__ __forceinline__ uint32_t bf16_pair(float a, float b) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&v);
}
__device__ __forceinline__ void load_x8(const bf16* p, uint4& head, uint4&) { head = *reinterpret_cast<const uint4*>(p); }
__device__ __forceinline__ void load_x8(const float* p, uint4& head, uint4& tail) {
  const float4 v0 = *reinterpret_cast<const float4*>(p), v1 = *reinterpret_cast<const float4*>(p + 4);
  const float x[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
  uint32_t hw[4], tw[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    hw[i] = bf16_pair(x[2 * i], x[2 * i + 1]);
    const __nv_bfloat162 h = *reinterpret_cast<const __nv_bfloat162*>(&hw[i]);
    tw[i] = bf16_pair(x[2 * i] - __low2float(h), x[2 * i + 1] - __high2float(h));
  }
  head = make_uint4(hw[0], hw[1], hw[2], hw[3]);
  tail = make_uint4(tw[0], tw[1], tw[2], tw[3]);
}

template <typename InT>
__global__ void __launch_bounds__(kHeadMmaWarps * 32) head_mma_kernel(const bf16* w, int64_t H, int64_t M, int64_t K, const InT* x,
                                                                     int64_t x_token_stride, int64_t x_head_stride, int64_t n, bf16* out) {
  dependency_wait();
  __shared__ float partial[kHeadMmaWarps][kHeadMmaTiles][32][4];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
  const int64_t h = blockIdx.y, r0 = static_cast<int64_t>(blockIdx.x) * 16;
  const int64_t t0 = static_cast<int64_t>(blockIdx.z) * kHeadMmaTiles * 8;
  const bf16* wr[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) wr[i] = w + (h * M + min(r0 + gid + 8 * i, M - 1)) * K + 8 * tig;  // rows past M repeat the last
  const InT* xr[kHeadMmaTiles];
  bool has_token[kHeadMmaTiles];
#pragma unroll
  for (int j = 0; j < kHeadMmaTiles; ++j) {
    const int64_t t = t0 + 8 * j + gid;
    has_token[j] = t < n;
    xr[j] = x + (has_token[j] ? t : 0) * x_token_stride + h * x_head_stride + 8 * tig;
  }
  const int tiles = static_cast<int>(min(static_cast<int64_t>(kHeadMmaTiles), (n - t0 + 7) / 8));
  const int chunks = static_cast<int>(K / 32);
  float acc[kHeadMmaTiles][4] = {};
  // The warps split the row tile's chunks (warp, warp + kHeadMmaWarps, ...): a batch-1 step of a
  // few heads still has every weight load of the tile in flight at once.
  for (int c0 = warp; c0 < chunks; c0 += kHeadMmaWarps * kHeadMmaUnroll) {
    uint4 a[kHeadMmaUnroll][2];
#pragma unroll
    for (int u = 0; u < kHeadMmaUnroll; ++u) {
      const int64_t k = static_cast<int64_t>(min(c0 + u * kHeadMmaWarps, chunks - 1)) * 32;
      a[u][0] = __ldg(reinterpret_cast<const uint4*>(wr[0] + k));
      a[u][1] = __ldg(reinterpret_cast<const uint4*>(wr[1] + k));
    }
#pragma unroll
    for (int u = 0; u < kHeadMmaUnroll; ++u) {
      if (c0 + u * kHeadMmaWarps >= chunks) break;
      const int64_t k = static_cast<int64_t>(c0 + u * kHeadMmaWarps) * 32;
      const uint32_t step0[4] = {a[u][0].x, a[u][1].x, a[u][0].y, a[u][1].y};
      const uint32_t step1[4] = {a[u][0].z, a[u][1].z, a[u][0].w, a[u][1].w};
#pragma unroll
      for (int j = 0; j < kHeadMmaTiles; ++j) {
        if (j >= tiles) break;
        uint4 b = make_uint4(0, 0, 0, 0), tail = make_uint4(0, 0, 0, 0);
        if (has_token[j]) load_x8(xr[j] + k, b, tail);
        mma_bf16(acc[j], step0, b.x, b.y);
        mma_bf16(acc[j], step1, b.z, b.w);
        if constexpr (std::is_same_v<InT, float>) {
          mma_bf16(acc[j], step0, tail.x, tail.y);
          mma_bf16(acc[j], step1, tail.z, tail.w);
        }
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kHeadMmaTiles; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) partial[warp][j][lane][i] = acc[j][i];
  __syncthreads();
  if (warp != 0) return;
  // acc[j][i]: row r0 + gid + 8 (i / 2), token t0 + 8 j + 2 tig + i % 2; warps summed in order
  // (results do not depend on timing).
#pragma unroll
  for (int j = 0; j < kHeadMmaTiles; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t row = r0 + gid + 8 * (i / 2), t = t0 + 8 * j + 2 * tig + i % 2;
      if (row >= M || t >= n) continue;
      float v = 0.0f;
#pragma unroll
      for (int p = 0; p < kHeadMmaWarps; ++p) v += partial[p][j][lane][i];
      out[t * H * M + h * M + row] = __float2bfloat16_rn(v);
    }
}

template <typename InT>
void launch_head_matmul(const bf16* w, int64_t H, int64_t M, int64_t K, const InT* x, int64_t x_token_stride, int64_t x_head_stride,
                        int64_t n, bf16* out, cudaStream_t stream, HeadMatmulKernel kernel) {
  if (n == 0) return;
  if (K % 8 != 0 || K > kHeadMaxK) fail("head_matmul: K must be a multiple of 8, at most 512", cudaErrorInvalidValue, __FILE__, __LINE__);
  // The tensor-core kernel reads 8 inputs at a time: 16-byte aligned rows of whole 32-channel chunks.
  const bool aligned = x_token_stride % 8 == 0 && x_head_stride % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 32 == 0;
  if (kernel == HeadMatmulKernel::kTensorCores && K % 32 == 0 && aligned) {
    const dim3 grid(static_cast<unsigned>((M + 15) / 16), static_cast<unsigned>(H),
                    static_cast<unsigned>((n + 8 * kHeadMmaTiles - 1) / (8 * kHeadMmaTiles)));
    launch(head_mma_kernel<InT>, grid, kHeadMmaWarps * 32, stream, w, H, M, K, x, x_token_stride, x_head_stride, n, out);
  } else {
    const dim3 grid(static_cast<unsigned>((M + 7) / 8), static_cast<unsigned>(H));
    launch(head_matmul_kernel<InT>, grid, 256, stream, w, H, M, K, x, x_token_stride, x_head_stride, n, out);
  }
  SS_CUDA_CHECK_LAUNCH();
}

}  // namespace

HeadMatmulKernel default_head_matmul_kernel() {
  static const HeadMatmulKernel kernel = std::getenv("SEEKSERVE_CUDA_HEAD_SIMT") ? HeadMatmulKernel::kCudaCores : HeadMatmulKernel::kTensorCores;
  return kernel;
}

void head_matmul(const bf16* w, int64_t H, int64_t M, int64_t K, const float* x, int64_t x_token_stride, int64_t x_head_stride,
                 int64_t n, bf16* out, cudaStream_t stream, HeadMatmulKernel kernel) {
  launch_head_matmul(w, H, M, K, x, x_token_stride, x_head_stride, n, out, stream, kernel);
}
void head_matmul(const bf16* w, int64_t H, int64_t M, int64_t K, const bf16* x, int64_t x_token_stride, int64_t x_head_stride,
                 int64_t n, bf16* out, cudaStream_t stream, HeadMatmulKernel kernel) {
  launch_head_matmul(w, H, M, K, x, x_token_stride, x_head_stride, n, out, stream, kernel);
}

}  // namespace seekserve::cuda
