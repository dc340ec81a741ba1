// W8A8 FP8 kernels (declared in fp8_kernels.h): activation quantization, the decode GEMV, the
// grouped expert GEMVs, and adding a bf16 GEMM output into the residual stream.
#include <cuda_fp8.h>

#include "cuda/fp8_kernels.h"
#include "cuda/kernel_support.cuh"

namespace seekserve::cuda {

using namespace detail;

namespace {

// Row t's group g of 128 channels (t < n; else zeros with scale 1) quantized by one warp, 4 values
// a lane, the group's amax by a warp reduction; returns the group's scale.
__device__ __forceinline__ float quantize_fp8_group(const bf16* x, int64_t t, int64_t n, int64_t K, int64_t g, uint8_t* xq, int lane) {
  float v[4] = {};
  float amax = 0.0f;
  if (t < n) {
    const bf16* src = x + t * K + g * kFp8Group + 4 * lane;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[i] = __bfloat162float(src[i]);
      amax = fmaxf(amax, fabsf(v[i]));
    }
  }
  amax = warp_max(amax);
  const float scale = amax == 0.0f ? 1.0f : amax / 448.0f;  // the reference leaves all-zero groups at 0
  uint8_t* dst = xq + t * K + g * kFp8Group + 4 * lane;
#pragma unroll
  for (int i = 0; i < 4; ++i) dst[i] = __nv_cvt_float_to_fp8(v[i] / scale, __NV_SATFINITE, __NV_E4M3);
  return scale;
}

// One warp per (row, group): scales [K / 128, scale_ld], rows n..scale_ld-1 padding.
__global__ void quantize_fp8_kernel(const bf16* x, int64_t n, int64_t K, uint8_t* xq, float* scales, int64_t scale_ld) {
  dependency_wait();
  const int64_t groups = K / kFp8Group;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (item >= scale_ld * groups) return;
  const int64_t t = item / groups, g = item % groups;
  const float scale = quantize_fp8_group(x, t, n, K, g, xq, threadIdx.x % 32);
  if (threadIdx.x % 32 == 0) scales[g * scale_ld + t] = scale;
}

// The same over the experts' gathered rows: row t belongs to the expert e with padded[e] <= t <
// padded[e + 1] (a binary search), whose scales form a [K / 128, rows_e] block of their own at
// scales + padded[e] * K / 128.
__global__ void quantize_fp8_expert_rows_kernel(const bf16* x, int64_t rows, int64_t K, const int32_t* padded, int64_t E, uint8_t* xq,
                                                float* scales) {
  dependency_wait();
  const int64_t groups = K / kFp8Group;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (item >= rows * groups) return;
  const int64_t t = item / groups, g = item % groups;
  const float scale = quantize_fp8_group(x, t, rows, K, g, xq, threadIdx.x % 32);
  if (threadIdx.x % 32 != 0) return;
  int64_t lo = 0, hi = E;  // the last e with padded[e] <= t (empty experts share their row0)
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (padded[mid] <= t) lo = mid; else hi = mid;
  }
  const int64_t row0 = padded[lo], rows_e = padded[lo + 1] - row0;
  scales[row0 * groups + g * rows_e + (t - row0)] = scale;
}

// 16 e4m3 values (one uint4) to float, two at a time through the hardware's e4m3x2 -> f16x2
// and f16 -> f32 conversions (about 24 conversions per 16 values: the conversion units, not
// memory, bounded the first FP8 GEMV at ~40% of the bandwidth on the H200).
__device__ __forceinline__ void fp8x16_to_float(const uint4& v, float* out) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const auto pair = static_cast<__nv_fp8x2_storage_t>(words[i] >> (16 * h));
      const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3);
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&raw));
      out[4 * i + 2 * h] = f.x;
      out[4 * i + 2 * h + 1] = f.y;
    }
  }
}

// sum_j a[j] * b[j] over 16 values.
__device__ __forceinline__ float dot16(const float* a, const float* b) {
  float d = 0.0f;
#pragma unroll
  for (int j = 0; j < 16; ++j) d = fmaf(a[j], b[j], d);
  return d;
}

// kRows rows a warp (8 warps a block): lane l reads bytes [16 l, 16 l + 16) of each 512-byte
// chunk of every row, which lie in one 128-channel group, so each 16-product partial sum takes
// that group's two scales. A token's 16 activations are decoded once per chunk for all kRows
// rows. (Decoding by integer operations instead of the conversion units measured slower on the
// H200: 2.10 vs 1.60 ms a V3 FP8 step of 4 layers, batch 1, 2026-11-30; docs/PERF.md.)
constexpr int kFp8GemvWarps = 8;

template <int kTokens, int kRows>
__global__ void __launch_bounds__(kFp8GemvWarps * 32) fp8_gemv_kernel(Fp8Weight w, int64_t M, int64_t K, Fp8Activations x, int n,
                                                                      const float* bias, bool accumulate, float* y, int64_t y_stride) {
  dependency_wait();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kFp8GemvWarps + warp) * kRows;
  if (row0 >= M) return;
  const uint8_t* wr[kRows];
  const float* ws[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t row = min(row0 + r, M - 1);  // rows past the end repeat the last (not stored)
    wr[r] = w.w + row * K;
    ws[r] = w.scales + static_cast<int64_t>(w.scale_row[row]) * w.scale_ld;
  }
  float acc[kRows][kTokens] = {};
#pragma unroll 2
  for (int64_t k = 16 * lane; k < K; k += 512) {
    uint4 wv[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) wv[r] = __ldcs(reinterpret_cast<const uint4*>(wr[r] + k));
    const int64_t g = k / kFp8Group;
    float wf[kRows][16], w_scale[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      fp8x16_to_float(wv[r], wf[r]);
      w_scale[r] = ws[r][g];
    }
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t >= n) break;
      float xf[16];
      fp8x16_to_float(*reinterpret_cast<const uint4*>(x.xq + t * K + k), xf);
      const float x_scale = x.scales[g * x.ld + t];
#pragma unroll
      for (int r = 0; r < kRows; ++r) acc[r][t] = fmaf(dot16(wf[r], xf), w_scale[r] * x_scale, acc[r][t]);
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t row = row0 + r;
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t >= n) break;
      const float v = warp_sum(acc[r][t]);
      if (lane == 0 && row < M) {
        float* out = y + t * y_stride + row;
        const float value = v + (bias ? bias[row] : 0.0f);
        *out = accumulate ? *out + value : value;
      }
    }
  }
}

__global__ void add_bf16_rows_kernel(const bf16* src, int64_t n, int64_t M, const float* bias, bool accumulate, float* y) {
  dependency_wait();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * M) return;
  const float v = __bfloat162float(src[i]) + (bias ? bias[i % M] : 0.0f);
  y[i] = accumulate ? y[i] + v : v;
}

// The grouped expert GEMV over FP8 experts: grid (row groups of 8, active experts), warp w takes
// row blockIdx.x * 8 + w of the expert (with kSwiGLU its gate and up rows side by side) and the
// expert's pairs 8 at a time, as moe_gemv_kernel does for bf16; decoding as fp8_gemv_kernel's.
constexpr int kFp8ExpertTokens = 8;

template <bool kSwiGLU>
__global__ void __launch_bounds__(kFp8GemvWarps * 32) moe_fp8_gemv_kernel(Fp8Weight w, int64_t M, int64_t K, Fp8Activations x,
                                                                          int64_t x_per_pair_div, MoeGroups g, bf16* act, float* out) {
  dependency_wait();
  if (static_cast<int>(blockIdx.y) >= *g.n_active) return;
  constexpr int kOuts = kSwiGLU ? 2 : 1;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t e = g.active[blockIdx.y];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kFp8GemvWarps + warp;
  if (row >= M) return;
  const uint8_t* wr[kOuts];
  const float* ws[kOuts];
#pragma unroll
  for (int o = 0; o < kOuts; ++o) {
    const int64_t r = (e * kOuts + o) * M + row;
    wr[o] = w.w + r * K;
    ws[o] = w.scales + static_cast<int64_t>(w.scale_row[r]) * w.scale_ld;
  }
  const int begin = g.offsets[e], end = g.offsets[e + 1];
  const int div = static_cast<int>(x_per_pair_div);
  for (int chunk = begin; chunk < end; chunk += kFp8ExpertTokens) {
    const int count = min(kFp8ExpertTokens, end - chunk);
    int pair[kFp8ExpertTokens], xrow[kFp8ExpertTokens];
#pragma unroll
    for (int tt = 0; tt < kFp8ExpertTokens; ++tt) {
      pair[tt] = tt < count ? g.sorted[chunk + tt] : 0;
      xrow[tt] = pair[tt] / div;
    }
    float acc[kOuts][kFp8ExpertTokens] = {};
    for (int64_t k = 16 * lane; k < K; k += 512) {
      const int64_t grp = k / kFp8Group;
      float wf[kOuts][16], w_scale[kOuts];
#pragma unroll
      for (int o = 0; o < kOuts; ++o) {
        fp8x16_to_float(__ldcs(reinterpret_cast<const uint4*>(wr[o] + k)), wf[o]);
        w_scale[o] = ws[o][grp];
      }
#pragma unroll
      for (int tt = 0; tt < kFp8ExpertTokens; ++tt) {
        if (tt >= count) break;
        float xf[16];
        fp8x16_to_float(*reinterpret_cast<const uint4*>(x.xq + static_cast<int64_t>(xrow[tt]) * K + k), xf);
        const float x_scale = x.scales[grp * x.ld + xrow[tt]];
#pragma unroll
        for (int o = 0; o < kOuts; ++o) acc[o][tt] = fmaf(dot16(wf[o], xf), w_scale[o] * x_scale, acc[o][tt]);
      }
    }
    store_expert_row<kSwiGLU>(acc, pair, count, M, row, act, out);
  }
}

// The grouped expert matmuls on tensor cores (default_moe_kernel),
// the FP8 counterpart of moe.cu's moe_mma_kernel: block = (16-row tile of one expert, active
// expert), 4 warps taking the 128-channel groups w, w + 4, ...; in a group, four mma.sync
// m16n8k32 e4m3 multiply the tile's rows (A: weight bytes straight from global memory into the
// fragments, no decoding) by 8 of the expert's pairs (B: their quantized rows); the group's sums
// then take the two scales (weight block of the row, activation group of the pair).
//
// A group's 128 channels are dealt to the fragments permuted: lane (gid, tig) reads bytes
// [32 tig, 32 tig + 32) of its rows and of its pair's row as two 16-byte loads, and word 2s + j of
// them is its fragment register j of k-step s (j = 0: a0/a1/b0, j = 1: a2/a3/b1). A and B use the
// same permutation, so each group's sum is the same set of products; the loads are 16 bytes
// (four 4-byte loads at the fragments' natural positions before), and kInFlight groups a warp are
// loaded before any is multiplied, so more weight bytes are in flight an SM.
constexpr int kFp8MmaWarps = 4;
constexpr int kFp8MmaInFlight = 2;

template <bool kSwiGLU>
__global__ void __launch_bounds__(kFp8MmaWarps * 32) moe_fp8_mma_kernel(Fp8Weight w, int64_t M, int64_t K, Fp8Activations x,
                                                                        int64_t x_per_pair_div, MoeGroups g, bf16* act, float* out) {
  dependency_wait();
  if (static_cast<int>(blockIdx.y) >= *g.n_active) return;
  constexpr int kOuts = kSwiGLU ? 2 : 1;
  __shared__ float partial[kFp8MmaWarps][kOuts][32][4];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
  const int64_t e = g.active[blockIdx.y];
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * 16;
  // This lane's two weight rows (gid, gid + 8) of each output, clamped inside the matrix, and
  // their scale rows.
  const uint8_t* wr[kOuts][2];
  const float* ws[kOuts][2];
#pragma unroll
  for (int o = 0; o < kOuts; ++o)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = (e * kOuts + o) * M + (r0 + gid + 8 * h < M ? r0 + gid + 8 * h : M - 1);
      wr[o][h] = w.w + row * K + 32 * tig;
      ws[o][h] = w.scales + static_cast<int64_t>(w.scale_row[row]) * w.scale_ld;
    }
  const int groups = static_cast<int>(K / kFp8Group);
  const int begin = g.offsets[e], end = g.offsets[e + 1];
  const int div = static_cast<int>(x_per_pair_div);
  for (int chunk = begin; chunk < end; chunk += kFp8ExpertTokens) {
    const int count = min(kFp8ExpertTokens, end - chunk);
    // B fragments: this lane reads pair gid of the chunk (zeros past its end); the accumulators
    // hold pairs 2 tig and 2 tig + 1, whose activation rows give their scales.
    const bool has_pair = gid < count;
    const uint8_t* xr = x.xq + static_cast<int64_t>(has_pair ? g.sorted[chunk + gid] / div : 0) * K + 32 * tig;
    int acc_row[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) acc_row[j] = 2 * tig + j < count ? g.sorted[chunk + 2 * tig + j] / div : 0;
    float acc[kOuts][4] = {};
    for (int grp0 = warp; grp0 < groups; grp0 += kFp8MmaWarps * kFp8MmaInFlight) {
      uint4 a[kFp8MmaInFlight][kOuts][2][2], b[kFp8MmaInFlight][2];  // [group][out][row gid + 8 h][half]
#pragma unroll
      for (int f = 0; f < kFp8MmaInFlight; ++f) {
        if (grp0 + f * kFp8MmaWarps >= groups) break;
        load_expert_words<kOuts>(wr, xr, has_pair, static_cast<int64_t>(grp0 + f * kFp8MmaWarps) * kFp8Group, a[f], b[f]);
      }
#pragma unroll
      for (int f = 0; f < kFp8MmaInFlight; ++f) {
        const int grp = grp0 + f * kFp8MmaWarps;
        if (grp >= groups) break;
        float sum[kOuts][4] = {};
#pragma unroll
        for (int step = 0; step < 4; ++step)
#pragma unroll
          for (int o = 0; o < kOuts; ++o) {
            uint32_t af[4];
            expert_a_fragment(a[f][o], step, af);
            mma_e4m3(sum[o], af, word_of(b[f], 2 * step), word_of(b[f], 2 * step + 1));
          }
        // sum[o][i]: row gid + 8 (i / 2), pair 2 tig + i % 2 of the chunk.
        float x_scale[2];
#pragma unroll
        for (int j = 0; j < 2; ++j) x_scale[j] = x.scales[grp * x.ld + acc_row[j]];
#pragma unroll
        for (int o = 0; o < kOuts; ++o)
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[o][i] = fmaf(sum[o][i], ws[o][i / 2][grp] * x_scale[i % 2], acc[o][i]);
      }
    }
    store_expert_tile<kSwiGLU>(partial, acc, r0, M, count, g.sorted + chunk, act, out);
  }
}

void check_fp8_width(int64_t K, const char* what) {
  if (K % kFp8Group != 0) fail(what, cudaErrorInvalidValue, __FILE__, __LINE__);
}

template <int kRows>
void launch_fp8_gemv(const Fp8Weight& w, int64_t M, int64_t K, const Fp8Activations& x, int64_t n, const float* bias, bool accumulate,
                     float* y, int64_t y_stride, cudaStream_t stream) {
  const unsigned grid = blocks_for(M, kFp8GemvWarps * kRows);
  const int tokens = static_cast<int>(n);
  if (n == 1) launch(fp8_gemv_kernel<1, kRows>, grid, kFp8GemvWarps * 32, stream, w, M, K, x, tokens, bias, accumulate, y, y_stride);
  else if (n <= 4) launch(fp8_gemv_kernel<4, kRows>, grid, kFp8GemvWarps * 32, stream, w, M, K, x, tokens, bias, accumulate, y, y_stride);
  else launch(fp8_gemv_kernel<8, kRows>, grid, kFp8GemvWarps * 32, stream, w, M, K, x, tokens, bias, accumulate, y, y_stride);
}

}  // namespace

void quantize_fp8_rows(const bf16* x, int64_t n, int64_t K, uint8_t* xq, float* scales, int64_t scale_ld, cudaStream_t stream) {
  if (scale_ld == 0) return;
  check_fp8_width(K, "quantize_fp8_rows: K must be a multiple of 128");
  if (scale_ld < n) fail("quantize_fp8_rows: scale_ld < n", cudaErrorInvalidValue, __FILE__, __LINE__);
  const int64_t items = scale_ld * (K / kFp8Group);
  launch(quantize_fp8_kernel, blocks_for(items * 32, 256), 256, stream, x, n, K, xq, scales, scale_ld);
  SS_CUDA_CHECK_LAUNCH();
}

void quantize_fp8_expert_rows(const bf16* x, int64_t rows, int64_t K, const int32_t* padded, int64_t E, uint8_t* xq, float* scales,
                              cudaStream_t stream) {
  if (rows == 0) return;
  check_fp8_width(K, "quantize_fp8_expert_rows: K must be a multiple of 128");
  const int64_t items = rows * (K / kFp8Group);
  launch(quantize_fp8_expert_rows_kernel, blocks_for(items * 32, 256), 256, stream, x, rows, K, padded, E, xq, scales);
  SS_CUDA_CHECK_LAUNCH();
}

void fp8_gemv(const Fp8Weight& w, int64_t M, int64_t K, const Fp8Activations& x, int64_t n, const float* bias, bool accumulate, float* y,
              int64_t y_stride, cudaStream_t stream) {
  if (n == 0 || M == 0) return;
  check_fp8_width(K, "fp8_gemv: K must be a multiple of 128");
  if (n > 8) fail("fp8_gemv: at most 8 tokens", cudaErrorInvalidValue, __FILE__, __LINE__);
  launch_fp8_gemv<1>(w, M, K, x, n, bias, accumulate, y, y_stride, stream);
  SS_CUDA_CHECK_LAUNCH();
}

void add_bf16_rows(const bf16* src, int64_t n, int64_t M, const float* bias, bool accumulate, float* y, cudaStream_t stream) {
  if (n * M == 0) return;
  launch(add_bf16_rows_kernel, blocks_for(n * M, 256), 256, stream, src, n, M, bias, accumulate, y);
  SS_CUDA_CHECK_LAUNCH();
}

void moe_fp8_gemv_swiglu(MoeKernel kernel_choice, const Fp8Weight& w_gate_up, int64_t I, int64_t K, const Fp8Activations& x, int64_t top_k,
                         const MoeGroups& groups, int64_t max_active, bf16* act, cudaStream_t stream) {
  if (max_active == 0) return;
  check_fp8_width(K, "moe_fp8_gemv_swiglu: hidden size must be a multiple of 128");
  if (kernel_choice == MoeKernel::kTensorCores) {
    const dim3 grid(static_cast<unsigned>((I + 15) / 16), static_cast<unsigned>(max_active));
    launch(moe_fp8_mma_kernel<true>, grid, kFp8MmaWarps * 32, stream, w_gate_up, I, K, x, top_k, groups, act, static_cast<float*>(nullptr));
    SS_CUDA_CHECK_LAUNCH();
    return;
  }
  const dim3 grid(blocks_for(I, kFp8GemvWarps), static_cast<unsigned>(max_active));
  launch(moe_fp8_gemv_kernel<true>, grid, kFp8GemvWarps * 32, stream, w_gate_up, I, K, x, top_k, groups, act, static_cast<float*>(nullptr));
  SS_CUDA_CHECK_LAUNCH();
}

void moe_fp8_gemv_down(MoeKernel kernel_choice, const Fp8Weight& w_down, int64_t M, int64_t I, const Fp8Activations& act, const MoeGroups& groups,
                       int64_t max_active, float* out, cudaStream_t stream) {
  if (max_active == 0) return;
  check_fp8_width(I, "moe_fp8_gemv_down: expert width must be a multiple of 128");
  if (kernel_choice == MoeKernel::kTensorCores) {
    const dim3 grid(static_cast<unsigned>((M + 15) / 16), static_cast<unsigned>(max_active));
    launch(moe_fp8_mma_kernel<false>, grid, kFp8MmaWarps * 32, stream, w_down, M, I, act, int64_t{1}, groups, static_cast<bf16*>(nullptr), out);
    SS_CUDA_CHECK_LAUNCH();
    return;
  }
  const dim3 grid(blocks_for(M, kFp8GemvWarps), static_cast<unsigned>(max_active));
  launch(moe_fp8_gemv_kernel<false>, grid, kFp8GemvWarps * 32, stream, w_down, M, I, act, int64_t{1}, groups, static_cast<bf16*>(nullptr), out);
  SS_CUDA_CHECK_LAUNCH();
}

}  // namespace seekserve::cuda
