// Element-wise, normalization, RoPE and sampling kernels of the dense decoder (attention lives in
// attention.cu, the decode GEMV in gemv.cu); declared in kernels.h.
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
  const float inv_rms = rms_inverse(sum_sq, dim, eps);
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int64_t i = threadIdx.x + j * kNormThreads;
    if (i < dim) out[t * dim + i] = from_float<OutT>(rms_scaled(weight[i], v[j], inv_rms));
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
  for (int idx = threadIdx.x; idx < (n_heads + n_kv) * half; idx += blockDim.x) {
    const int h = idx / static_cast<int>(half), i = idx % static_cast<int>(half);  // 32-bit: cheap division
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

// One token per blockIdx.x (y: slices of I); each thread makes 4 adjacent outputs from float4 loads of the gate
// and up halves (I % 4 == 0), or one output otherwise.
__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 load4(const bf16* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }

template <typename In, bool kVector>
__global__ void silu_mul_kernel(const In* gate_up, int64_t I, bf16* out) {
  dependency_wait();
  const int64_t t = blockIdx.x, i = (static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x) * (kVector ? 4 : 1);
  if (i >= I) return;
  const In* gate = gate_up + t * 2 * I;
  if constexpr (kVector) {
    const float4 g = load4(gate + i), u = load4(gate + I + i);
    __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(out + t * I + i);
    dst[0] = __floats2bfloat162_rn(silu_times(g.x, u.x), silu_times(g.y, u.y));
    dst[1] = __floats2bfloat162_rn(silu_times(g.z, u.z), silu_times(g.w, u.w));
  } else {
    out[t * I + i] = __float2bfloat16_rn(silu_times(to_float(gate[i]), to_float(gate[I + i])));
  }
}

template <typename In>
void launch_silu_mul(const In* gate_up, int64_t n, int64_t I, bf16* out, cudaStream_t stream) {
  if (n * I == 0) return;
  if (I % 4 == 0) launch(silu_mul_kernel<In, true>, dim3(static_cast<unsigned>(n), blocks_for(I / 4, 256)), 256, stream, gate_up, I, out);
  else launch(silu_mul_kernel<In, false>, dim3(static_cast<unsigned>(n), blocks_for(I, 256)), 256, stream, gate_up, I, out);
  SS_CUDA_CHECK_LAUNCH();
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

void silu_mul(const float* gate_up, int64_t n, int64_t I, bf16* out, cudaStream_t stream) { launch_silu_mul(gate_up, n, I, out, stream); }
void silu_mul(const bf16* gate_up, int64_t n, int64_t I, bf16* out, cudaStream_t stream) { launch_silu_mul(gate_up, n, I, out, stream); }

void argmax_rows(const float* logits, int64_t rows, int64_t vocab, uint64_t* keys, cudaStream_t stream) {
  if (rows == 0) return;
  SS_CUDA_CHECK(cudaMemsetAsync(keys, 0, static_cast<size_t>(rows) * 8, stream));
  launch(argmax_kernel, dim3(static_cast<unsigned>(rows), kArgmaxSlices), 256, stream, logits, vocab,
         reinterpret_cast<unsigned long long*>(keys));
  SS_CUDA_CHECK_LAUNCH();
}

}  // namespace seekserve::cuda
