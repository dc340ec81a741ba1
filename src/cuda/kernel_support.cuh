// Device-side helpers shared by the CUDA kernel files (kernels.cu, attention.cu): programmatic
// dependent launch, warp reductions, conversions. Included only by .cu files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdlib>
#include <utility>

#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace seekserve::cuda {
namespace detail {

// Every kernel is launched with programmatic stream serialization (Hopper's programmatic
// dependent launch): it may be scheduled while the kernel before it drains, and waits in
// dependency_wait() until that kernel has finished and its writes are visible. Right after the
// wait each kernel lets the next one be scheduled, so the next kernel's blocks take SMs as this
// one's retire. A decode step is ~200 small kernels; this hides most of the gaps between them.
// (Prefetching a GEMV's weights into L2 before the wait was tried: 9% slower decode on the H200.)
// (SEEKSERVE_PDL_EARLY_TRIGGER=0 at compile time leaves the trigger implicit, at block exit.)
#ifndef SEEKSERVE_PDL_EARLY_TRIGGER
#define SEEKSERVE_PDL_EARLY_TRIGGER 1
#endif
__device__ __forceinline__ void dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#if SEEKSERVE_PDL_EARLY_TRIGGER
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
#endif
}

// SEEKSERVE_CUDA_NO_PDL=1: launch without programmatic dependent launch (to measure what it saves).
inline bool pdl_enabled() {
  static const bool enabled = std::getenv("SEEKSERVE_CUDA_NO_PDL") == nullptr;
  return enabled;
}

template <typename... KernelArgs, typename... Args>
void launch_with_shared(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  config.attrs = attribute;
  config.numAttrs = 1;
  SS_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, static_cast<KernelArgs>(args)...));
}

template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, cudaStream_t stream, Args&&... args) {
  launch_with_shared(kernel, grid, block, 0, stream, std::forward<Args>(args)...);
}

inline unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); safe to call repeatedly in one
// kernel (it ends with a barrier, so its shared slots are free again).
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0.0f;
  v = warp_sum(v);
  __syncthreads();
  return v;
}

// The RMSNorm and SwiGLU arithmetic, shared by their own kernels and the GEMV that fuses them,
// so fused and unfused steps round identically.
__device__ __forceinline__ float rms_inverse(float sum_sq, int64_t dim, float eps) {
  return 1.0f / sqrtf(sum_sq / static_cast<float>(dim) + eps);
}
__device__ __forceinline__ float rms_scaled(float weight, float v, float inv_rms) { return weight * (v * inv_rms); }
__device__ __forceinline__ float silu_times(float gate, float up) { return gate / (1.0f + expf(-gate)) * up; }

// The end of a grouped expert GEMV (moe.cu, fp8.cu): each of the group's `count` pairs gets its
// warp-reduced dot products for one expert row, stored by lane 0 as the SwiGLU activation
// (bf16, act [pairs, M]) or the down projection's output (float32, out [pairs, M]).
template <bool kSwiGLU, int kOuts, int kTokens>
__device__ __forceinline__ void store_expert_row(float (&acc)[kOuts][kTokens], const int (&pair)[kTokens], int count, int64_t M,
                                                 int64_t row, bf16* act, float* out) {
#pragma unroll
  for (int tt = 0; tt < kTokens; ++tt) {
    if (tt >= count) break;
    float v[kOuts];
#pragma unroll
    for (int o = 0; o < kOuts; ++o) v[o] = warp_sum(acc[o][tt]);
    if (threadIdx.x % 32 == 0) {
      if constexpr (kSwiGLU) act[static_cast<int64_t>(pair[tt]) * M + row] = __float2bfloat16_rn(silu_times(v[0], v[1]));
      else out[static_cast<int64_t>(pair[tt]) * M + row] = v[0];
    }
  }
}

// D (+)= A B on tensor cores, m16n8k16, bf16 in, float32 accumulate. Fragments (lane = 4 g + c):
// a[0] = A[g][2c..2c+1], a[1] = A[g+8][2c..], a[2] = A[g][2c+8..], a[3] = A[g+8][2c+8..];
// b0 = B[2c..2c+1][g], b1 = B[2c+8..][g]; acc[0..1] = D[g][2c..2c+1], acc[2..3] = D[g+8][2c..].
// Not volatile: the compiler may interleave independent mmas (a volatile asm keeps program
// order, which chains each mma behind the previous one's latency).
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The end of a tensor-core expert tile (moe.cu, fp8.cu): every warp's accumulators of a 16-row
// tile x 8 pairs (acc[o][i]: row gid + 8 (i / 2), pair 2 tig + i % 2) summed in warp order (results
// do not depend on timing) and stored by warp 0 as moe_gemv's outputs; `sorted_chunk` lists the
// chunk's pairs. Leaves `partial` free for the next chunk.
template <bool kSwiGLU, int kOuts, int kWarps>
__device__ __forceinline__ void store_expert_tile(float (&partial)[kWarps][kOuts][32][4], const float (&acc)[kOuts][4], int64_t r0,
                                                  int64_t M, int count, const int32_t* sorted_chunk, bf16* act, float* out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
#pragma unroll
  for (int o = 0; o < kOuts; ++o)
#pragma unroll
    for (int i = 0; i < 4; ++i) partial[warp][o][lane][i] = acc[o][i];
  __syncthreads();
  if (warp == 0) {
    float v[kOuts][4] = {};
#pragma unroll
    for (int p = 0; p < kWarps; ++p)
#pragma unroll
      for (int o = 0; o < kOuts; ++o)
#pragma unroll
        for (int i = 0; i < 4; ++i) v[o][i] += partial[p][o][lane][i];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t row = r0 + gid + 8 * (i / 2);
      const int token = 2 * tig + i % 2;
      if (row >= M || token >= count) continue;
      const int64_t pair = sorted_chunk[token];
      if constexpr (kSwiGLU) act[pair * M + row] = __float2bfloat16_rn(silu_times(v[0][i], v[1][i]));
      else out[pair * M + row] = v[0][i];
    }
  }
  __syncthreads();
}

// Word i (0-7) of two consecutive 16-byte loads: the expert kernels (moe.cu, fp8.cu) load a
// lane's 32 bytes of a row that way and deal the words to mma fragments (i a compile-time constant
// after unrolling, so this is a register pick).
__device__ __forceinline__ uint32_t word_of(const uint4 (&v)[2], int i) {
  const uint4& q = v[i / 4];
  switch (i % 4) {
    case 0: return q.x;
    case 1: return q.y;
    case 2: return q.z;
    default: return q.w;
  }
}

// The A fragment of k-step `step` (0-3) dealt from a lane's words of its rows gid (rows[0]) and
// gid + 8 (rows[1]): words 2 step and 2 step + 1, as load_expert_words' callers permute the channels.
__device__ __forceinline__ void expert_a_fragment(const uint4 (&rows)[2][2], int step, uint32_t (&af)[4]) {
  af[0] = word_of(rows[0], 2 * step);
  af[1] = word_of(rows[1], 2 * step);
  af[2] = word_of(rows[0], 2 * step + 1);
  af[3] = word_of(rows[1], 2 * step + 1);
}

// A lane's 32 bytes (two 16-byte loads) at element k of its two weight rows of each output,
// a[o][h][half] for row gid + 8 h (streamed once: evict-first), and of its B row, b[half] (zeros
// without one): what the expert kernels (moe.cu, fp8.cu) deal to mma fragments with word_of.
template <int kOuts, typename T>
__device__ __forceinline__ void load_expert_words(const T* const (&wr)[kOuts][2], const T* xr, bool has_b, int64_t k, uint4 (&a)[kOuts][2][2],
                                                  uint4 (&b)[2]) {
#pragma unroll
  for (int o = 0; o < kOuts; ++o)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int half = 0; half < 2; ++half) a[o][h][half] = __ldcs(reinterpret_cast<const uint4*>(wr[o][h] + k) + half);
#pragma unroll
  for (int half = 0; half < 2; ++half) b[half] = has_b ? *(reinterpret_cast<const uint4*>(xr + k) + half) : make_uint4(0, 0, 0, 0);
}

// c += a b on tensor cores for e4m3 operands: a 16 x 32 (rows gid, gid + 8; 4 bytes of k each
// per register: a[0] row gid k 4 tig.., a[1] row gid + 8, a[2]/a[3] the same at k + 16), b 32 x 8
// (b0 column gid k 4 tig.., b1 at k + 16), c 16 x 8 float32 as in mma_bf16.
__device__ __forceinline__ void mma_e4m3(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Eight bf16 (one 16-byte load) as float.
__device__ __forceinline__ void bf16x8_to_float(const uint4& v, float* out) {
  const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = __bfloat1622float2(p[j]);
    out[2 * j] = f.x;
    out[2 * j + 1] = f.y;
  }
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float v) { return __float2bfloat16_rn(v); }
}  // namespace detail
}  // namespace seekserve::cuda
