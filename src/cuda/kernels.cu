// Element-wise, normalization, GEMV, RoPE and sampling kernels of the dense decoder (attention
// lives in attention.cu); declared in kernels.h.
#include <cfloat>

#include "cuda/kernel_support.cuh"

namespace seekserve::cuda {

using namespace detail;

namespace {

__global__ void embedding_kernel(const bf16* table, int64_t dim, const int32_t* ids, float* out) {
  dependency_wait();
  const int64_t t = blockIdx.x;
  const bf16* row = table + static_cast<int64_t>(ids[t]) * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) out[t * dim + i] = __bfloat162float(row[i]);
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024).
__device__ float block_sum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0.0f;
  return warp_sum(v);
}

// One block of 512 threads per row, the row held in registers (kPerThread values a thread):
// one round of loads, one reduction, one round of stores. A decode step's norm is a single row,
// so its latency is what counts (a warp per row was 4x slower: too few loads in flight).
constexpr int kNormThreads = 512;

template <typename OutT, int kPerThread>
__global__ void __launch_bounds__(kNormThreads) rms_norm_kernel(const float* x, const int32_t* rows, const float* weight,
                                                                int64_t dim, float eps, OutT* out) {
  dependency_wait();
  const int64_t t = blockIdx.x;
  const float* xr = x + (rows ? rows[t] : t) * dim;
  float v[kPerThread];
  float sum_sq = 0.0f;
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int64_t i = threadIdx.x + j * kNormThreads;
    v[j] = i < dim ? xr[i] : 0.0f;
    sum_sq += v[j] * v[j];
  }
  sum_sq = block_sum(sum_sq);
  const float inv_rms = 1.0f / sqrtf(sum_sq / static_cast<float>(dim) + eps);
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int64_t i = threadIdx.x + j * kNormThreads;
    if (i < dim) out[t * dim + i] = from_float<OutT>(weight[i] * (v[j] * inv_rms));
  }
}

// kWarpsPerRow warps per weight row (a block of 8 warps covers 8 / kWarpsPerRow rows); each lane
// streams 16-byte chunks (8 bf16) of the row and dots them with the same chunk of every token's
// activations (those stay in L1/L2: n * K * 2 bytes). Several warps per row keep enough loads
// in flight when the matrix has few rows (o_proj, down_proj of small models).
template <int kTokens, int kWarpsPerRow>
__global__ void __launch_bounds__(256) gemv_kernel(const bf16* __restrict__ w, int64_t M, int64_t K, const bf16* __restrict__ x,
                                                   const float* __restrict__ bias, bool accumulate, float* y, int64_t y_stride) {
  dependency_wait();
  constexpr int kRowsPerBlock = 8 / kWarpsPerRow;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int part = warp % kWarpsPerRow;  // which slice of the row's chunks this warp takes
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + warp / kWarpsPerRow;
  float acc[kTokens] = {};
  if (row < M) {
    const bf16* wr = w + row * K;
    if (K % 8 == 0) {
      const int64_t chunks = K / 8;
      const uint4* w4 = reinterpret_cast<const uint4*>(wr);
#pragma unroll 4
      for (int64_t c = part * 32 + lane; c < chunks; c += 32 * kWarpsPerRow) {
        const uint4 wv = __ldcs(w4 + c);  // streamed once: do not keep it in L2 at the expense of x
        const __nv_bfloat162* wp = reinterpret_cast<const __nv_bfloat162*>(&wv);
        float2 wf[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) wf[j] = __bfloat1622float2(wp[j]);
#pragma unroll
        for (int t = 0; t < kTokens; ++t) {
          const uint4 xv = *reinterpret_cast<const uint4*>(x + t * K + c * 8);
          const __nv_bfloat162* xp = reinterpret_cast<const __nv_bfloat162*>(&xv);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const float2 xf = __bfloat1622float2(xp[j]);
            acc[t] = fmaf(wf[j].x, xf.x, acc[t]);
            acc[t] = fmaf(wf[j].y, xf.y, acc[t]);
          }
        }
      }
    } else {
      for (int64_t k = part * 32 + lane; k < K; k += 32 * kWarpsPerRow) {
        const float wk = __bfloat162float(wr[k]);
#pragma unroll
        for (int t = 0; t < kTokens; ++t) acc[t] = fmaf(wk, __bfloat162float(x[t * K + k]), acc[t]);
      }
    }
  }
  __shared__ float partial[8][kTokens];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    const float v = warp_sum(acc[t]);
    if (lane == 0) partial[warp][t] = v;
  }
  if constexpr (kWarpsPerRow > 1) __syncthreads();
  else __syncwarp();
  // The first warp of each row adds the row's slices (in a fixed order: results do not depend
  // on timing) and writes the tokens' outputs.
  if (part == 0 && row < M && lane < kTokens) {
    float v = 0.0f;
#pragma unroll
    for (int p = 0; p < kWarpsPerRow; ++p) v += partial[warp + p][lane];
    if (bias) v += bias[row];
    float* dst = y + lane * y_stride + row;
    *dst = accumulate ? *dst + v : v;
  }
}

template <int kTokens>
void launch_gemv(const bf16* w, int64_t M, int64_t K, const bf16* x, const float* bias, bool accumulate, float* y,
                 int64_t y_stride, cudaStream_t stream) {
  // Split rows over more warps while the grid stays under ~4 waves of warps on an H100/H200
  // (132 SMs x 32 warps) and each lane still gets a chunk: small matrices are latency-bound.
  int warps_per_row = 1;
  while (warps_per_row < 8 && M * warps_per_row * 2 <= 16896 && K / 8 >= 32 * warps_per_row * 2) warps_per_row *= 2;
  switch (warps_per_row) {
#define SS_GEMV_SPLIT(W)                                                                                        \
  case W:                                                                                                       \
    launch(gemv_kernel<kTokens, W>, blocks_for(M, 8 / W), 256, stream, w, M, K, x, bias, accumulate, y, y_stride); \
    break;
    SS_GEMV_SPLIT(1)
    SS_GEMV_SPLIT(2)
    SS_GEMV_SPLIT(4)
    SS_GEMV_SPLIT(8)
#undef SS_GEMV_SPLIT
  }
}

__global__ void add_bias_kernel(const float* bias, int64_t n, int64_t M, float* y) {
  dependency_wait();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n * M) y[i] += bias[i % M];
}

__global__ void rope_and_cache_kernel(float* qkv, int64_t n_heads, int64_t n_kv, int64_t D, const float* cos, const float* sin,
                                      const int32_t* positions, bool interleaved, const int32_t* slots, bf16* k_pool, bf16* v_pool) {
  dependency_wait();
  const int64_t t = blockIdx.x, half = D / 2, width = (n_heads + 2 * n_kv) * D;
  float* row = qkv + t * width;
  const float* c = cos + static_cast<int64_t>(positions[t]) * half;
  const float* s = sin + static_cast<int64_t>(positions[t]) * half;
  const int64_t slot = slots[t];
  // Rotations: q heads then k heads, one pair per thread step.
  for (int64_t idx = threadIdx.x; idx < (n_heads + n_kv) * half; idx += blockDim.x) {
    const int64_t h = idx / half, i = idx % half;
    float* v = row + h * D;
    const int64_t ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
    const float a0 = v[ia], b0 = v[ib];
    const float a = a0 * c[i] - b0 * s[i], b = b0 * c[i] + a0 * s[i];
    v[ia] = a;
    v[ib] = b;
    if (h >= n_heads) {
      bf16* k = k_pool + slot * n_kv * D + (h - n_heads) * D;
      k[ia] = __float2bfloat16_rn(a);
      k[ib] = __float2bfloat16_rn(b);
    }
  }
  const float* vsrc = row + (n_heads + n_kv) * D;
  for (int64_t i = threadIdx.x; i < n_kv * D; i += blockDim.x) v_pool[slot * n_kv * D + i] = __float2bfloat16_rn(vsrc[i]);
}

__global__ void silu_mul_kernel(const float* gate_up, int64_t n, int64_t I, bf16* out) {
  dependency_wait();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * I) return;
  const int64_t t = i / I, j = i % I;
  const float g = gate_up[t * 2 * I + j];
  out[i] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * gate_up[t * 2 * I + I + j]);
}

// Argmax as a max over 64-bit keys: the float's bits made order-preserving in the high word,
// the inverted index in the low word (so ties go to the lowest index). Blocks of 256 threads
// scan slices of a row and fold their best into keys[row] with one atomicMax; NaN is skipped.
__device__ __forceinline__ uint64_t argmax_key(float v, int64_t i) {
  const uint32_t bits = __float_as_uint(v);
  const uint32_t ordered = (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
  return (static_cast<uint64_t>(ordered) << 32) | (0xffffffffu - static_cast<uint32_t>(i));
}

constexpr int kArgmaxSlices = 64;

__global__ void __launch_bounds__(256) argmax_kernel(const float* logits, int64_t vocab, unsigned long long* keys) {
  dependency_wait();
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  const int64_t per = (vocab + kArgmaxSlices - 1) / kArgmaxSlices;
  const int64_t begin = blockIdx.y * per, end = min(vocab, begin + per);
  unsigned long long best = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float v = row[i];
    if (v == v) best = max(best, static_cast<unsigned long long>(argmax_key(v, i)));
  }
  for (int offset = 16; offset > 0; offset >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, offset));
  if (threadIdx.x % 32 == 0 && best != 0) atomicMax(keys + blockIdx.x, best);
}

}  // namespace

void embedding(const bf16* table, int64_t dim, const int32_t* ids, int64_t n, float* out, cudaStream_t stream) {
  if (n == 0) return;
  launch(embedding_kernel, static_cast<unsigned>(n), 256, stream, table, dim, ids, out);
  SS_CUDA_CHECK_LAUNCH();
}

template <typename OutT>
void rms_norm(const float* x, const int32_t* rows, const float* weight, int64_t n, int64_t dim, float eps, OutT* out,
              cudaStream_t stream) {
  if (n == 0) return;
  const unsigned grid = static_cast<unsigned>(n);
  const int64_t per_thread = (dim + kNormThreads - 1) / kNormThreads;
  if (per_thread <= 1) launch(rms_norm_kernel<OutT, 1>, grid, kNormThreads, stream, x, rows, weight, dim, eps, out);
  else if (per_thread <= 4) launch(rms_norm_kernel<OutT, 4>, grid, kNormThreads, stream, x, rows, weight, dim, eps, out);
  else if (per_thread <= 8) launch(rms_norm_kernel<OutT, 8>, grid, kNormThreads, stream, x, rows, weight, dim, eps, out);
  else if (per_thread <= 16) launch(rms_norm_kernel<OutT, 16>, grid, kNormThreads, stream, x, rows, weight, dim, eps, out);
  else if (per_thread <= 32) launch(rms_norm_kernel<OutT, 32>, grid, kNormThreads, stream, x, rows, weight, dim, eps, out);
  else fail("rms_norm: hidden sizes above 16384 are not built", cudaErrorInvalidValue, __FILE__, __LINE__);
  SS_CUDA_CHECK_LAUNCH();
}
template void rms_norm<float>(const float*, const int32_t*, const float*, int64_t, int64_t, float, float*, cudaStream_t);
template void rms_norm<bf16>(const float*, const int32_t*, const float*, int64_t, int64_t, float, bf16*, cudaStream_t);

void gemv(const bf16* w, int64_t M, int64_t K, const bf16* x, int64_t n, const float* bias, bool accumulate, float* y,
          int64_t y_stride, cudaStream_t stream) {
  if (n == 0 || M == 0) return;
  switch (n) {
#define SS_GEMV_CASE(T) \
  case T: launch_gemv<T>(w, M, K, x, bias, accumulate, y, y_stride, stream); break;
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

void add_bias(const float* bias, int64_t n, int64_t M, float* y, cudaStream_t stream) {
  if (n * M == 0) return;
  launch(add_bias_kernel, blocks_for(n * M, 256), 256, stream, bias, n, M, y);
  SS_CUDA_CHECK_LAUNCH();
}

void rope_and_cache(float* qkv, int64_t n, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, const float* cos,
                    const float* sin, const int32_t* positions, bool interleaved, const int32_t* slots, bf16* k_pool,
                    bf16* v_pool, cudaStream_t stream) {
  if (n == 0) return;
  launch(rope_and_cache_kernel, static_cast<unsigned>(n), 256, stream, qkv, n_heads, n_kv_heads, head_dim, cos, sin, positions, interleaved,
                                                                      slots, k_pool, v_pool);
  SS_CUDA_CHECK_LAUNCH();
}

void silu_mul(const float* gate_up, int64_t n, int64_t I, bf16* out, cudaStream_t stream) {
  if (n * I == 0) return;
  launch(silu_mul_kernel, blocks_for(n * I, 256), 256, stream, gate_up, n, I, out);
  SS_CUDA_CHECK_LAUNCH();
}

void argmax_rows(const float* logits, int64_t rows, int64_t vocab, uint64_t* keys, cudaStream_t stream) {
  if (rows == 0) return;
  SS_CUDA_CHECK(cudaMemsetAsync(keys, 0, static_cast<size_t>(rows) * 8, stream));
  launch(argmax_kernel, dim3(static_cast<unsigned>(rows), kArgmaxSlices), 256, stream, logits, vocab,
         reinterpret_cast<unsigned long long*>(keys));
  SS_CUDA_CHECK_LAUNCH();
}

}  // namespace seekserve::cuda
