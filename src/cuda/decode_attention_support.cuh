// The two ends of a decode attention block shared by the CUDA-core kernel (attention.cu) and the
// tensor-core kernel (attention_mma.cu): one block per (token, KV head, slice) starts by rotating
// its G query heads and caching its key and value (fused RoPE), and ends by merging its warps'
// softmax states and either storing the output or, split-KV, its slice's partial state, the last
// slice to finish merging them all. Included only by .cu files.
#pragma once

#include <cfloat>

#include "cuda/kernel_support.cuh"

namespace seekserve::cuda::detail {

// The tensor-core decode kernel's launcher (attention_mma.cu); false for a head dim or group it is
// not built for.
bool launch_attention_mma(const AttentionParams& p, cudaStream_t stream);

// Fused RoPE (decode): rotates this KV head's G query heads into s_q and its key into the cache,
// copies its value, and returns s_q after a barrier that makes the new cache row visible to the
// whole block. Without RoPE tables the queries are already rotated: returns them in place.
// Returns query head g of the group at [g * D, g * D + D).
template <int D, int G>
__device__ const float* decode_queries(const AttentionParams& p, int64_t t, int64_t kvh, float (&s_q)[G][D]) {
  if (!p.rope_cos) return p.q + t * p.q_stride + kvh * G * D;
  constexpr int kHalf = D / 2;
  const float* row = p.q + t * p.q_stride;
  const float* c = p.rope_cos + static_cast<int64_t>(p.positions[t]) * kHalf;
  const float* sn = p.rope_sin + static_cast<int64_t>(p.positions[t]) * kHalf;
  const int64_t kv_width = p.n_kv_heads * D;
  const int64_t cache_row = static_cast<int64_t>(p.slots[t]) * kv_width + kvh * D;
  for (int idx = threadIdx.x; idx < (G + 1) * kHalf; idx += blockDim.x) {
    const int h = idx / kHalf, i = idx % kHalf;
    const float* v = h < G ? row + (kvh * G + h) * D : row + (p.n_heads + kvh) * D;
    const int ia = p.rope_interleaved ? 2 * i : i, ib = p.rope_interleaved ? 2 * i + 1 : i + kHalf;
    const float a0 = v[ia], b0 = v[ib];
    const float a = a0 * c[i] - b0 * sn[i], b = b0 * c[i] + a0 * sn[i];
    if (h < G) {
      s_q[h][ia] = a;
      s_q[h][ib] = b;
    } else {
      p.k_pool[cache_row + ia] = __float2bfloat16_rn(a);
      p.k_pool[cache_row + ib] = __float2bfloat16_rn(b);
    }
  }
  const float* v_src = row + (p.n_heads + p.n_kv_heads + kvh) * D;
  for (int i = threadIdx.x; i < D; i += blockDim.x) p.v_pool[cache_row + i] = __float2bfloat16_rn(v_src[i]);
  __syncthreads();
  return &s_q[0][0];
}

// The block's kWarps softmax states of its G heads (shared memory, written before a barrier):
// s_m[w * G + g] running max, s_l[w * G + g] sum (0: warp w saw no positions), s_acc[(w * G + g)
// * D + d] unnormalized output, all in one base (natural or base 2: `base2` says which). Merged
// into the output (one slice) or this slice's (max, sum, output) in p.partial, the last slice of
// the (token, KV head) to finish merging all slices (no separate combine kernel).
template <int D, int G, int kWarps, bool base2>
__device__ void store_decode_attention(const AttentionParams& p, int64_t t, int64_t kvh, const float* s_m, const float* s_l,
                                       const float* s_acc) {
  auto exp_of = [](float x) { return base2 ? exp2f(x) : __expf(x); };
  for (int idx = threadIdx.x; idx < G * D; idx += blockDim.x) {
    const int g = idx / D, d = idx % D;
    float m_all = -FLT_MAX;
    for (int w = 0; w < kWarps; ++w)
      if (s_l[w * G + g] > 0.0f) m_all = fmaxf(m_all, s_m[w * G + g]);
    float l_all = 0.0f, a_all = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      if (s_l[w * G + g] == 0.0f) continue;  // a warp that saw no positions
      const float f = exp_of(s_m[w * G + g] - m_all);
      l_all += s_l[w * G + g] * f;
      a_all += s_acc[(w * G + g) * D + d] * f;
    }
    const int64_t h = kvh * G + g;
    if (p.n_splits == 1) {
      p.out[t * p.n_heads * D + h * D + d] = __float2bfloat16_rn(a_all / l_all);
    } else {  // this slice's (max, sum, unnormalized output)
      float* part = p.partial + ((t * p.n_heads + h) * p.n_splits + blockIdx.z) * (D + 2);
      if (d == 0) {
        part[0] = m_all;
        part[1] = l_all;
      }
      part[2 + d] = a_all;
    }
  }
  if (p.n_splits == 1) return;
  // The last slice of this (token, KV head) to finish merges them all, rescaling each to the
  // common max. The fence makes this block's slice visible before the counter says it is done.
  __shared__ bool s_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    int* counter = p.split_counters + t * p.n_kv_heads + kvh;
    s_last = atomicAdd(counter, 1) == p.n_splits - 1;
    if (s_last) *counter = 0;  // ready for the next step
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  for (int idx = threadIdx.x; idx < G * D; idx += blockDim.x) {
    const int g = idx / D, d = idx % D;
    const int64_t h = kvh * G + g;
    const float* part = p.partial + (t * p.n_heads + h) * p.n_splits * (D + 2);
    float m_all = -FLT_MAX;
    for (int64_t s = 0; s < p.n_splits; ++s)
      if (__ldcg(part + s * (D + 2) + 1) > 0.0f) m_all = fmaxf(m_all, __ldcg(part + s * (D + 2)));
    float l_all = 0.0f, a_all = 0.0f;
    for (int64_t s = 0; s < p.n_splits; ++s) {
      const float* slice = part + s * (D + 2);
      const float l = __ldcg(slice + 1);
      if (l == 0.0f) continue;  // an empty slice
      const float f = exp_of(__ldcg(slice) - m_all);
      l_all += l * f;
      a_all += __ldcg(slice + 2 + d) * f;
    }
    p.out[t * p.n_heads * D + h * D + d] = __float2bfloat16_rn(a_all / l_all);
  }
}

}  // namespace seekserve::cuda::detail
