// Paged decode attention (split-KV, optional fused RoPE); the prefill kernel is in
// flash_prefill.cu. Launchers are declared in kernels.h.
#include <cfloat>

#include "cuda/kernel_support.cuh"

namespace seekserve::cuda {

using namespace detail;

namespace {

constexpr int kAttentionWarps = 8;

// One block per (token, KV head, split): its kAttentionWarps warps split the slice's positions,
// each keeping online softmaxes for the G query heads that share the KV head, then merge.
template <int D, int G>
__global__ void __launch_bounds__(kAttentionWarps * 32, G <= 4 ? 2 : 1) attention_kernel(AttentionParams p) {
  dependency_wait();
  const int64_t t = blockIdx.x, kvh = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int32_t* table = p.block_tables + static_cast<int64_t>(p.token_seq[t]) * p.table_stride;
  const int64_t n_visible = static_cast<int64_t>(p.positions[t]) + 1;
  const int64_t kv_width = p.n_kv_heads * D;

  // Fused RoPE (decode): rotate this KV head's G query heads into shared memory and its key into
  // the cache, copy its value; the barrier makes the new row visible to every warp below.
  __shared__ float s_q[G][D];
  const float* q_src = p.q + t * p.q_stride + kvh * G * D;
  if (p.rope_cos) {
    constexpr int kHalf = D / 2;
    const float* row = p.q + t * p.q_stride;
    const float* c = p.rope_cos + static_cast<int64_t>(p.positions[t]) * kHalf;
    const float* sn = p.rope_sin + static_cast<int64_t>(p.positions[t]) * kHalf;
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
    q_src = &s_q[0][0];
  }

  // Lanes work in groups of kLanes = D / 8, one group per key: a lane holds 8 dims (one 16-byte
  // load per key or value row), so a warp scores kKeys = 32 / kLanes keys at once and each dot
  // product needs log2(kLanes) shuffles (a shuffle per lane per head and key was the bottleneck
  // of a warp-per-key layout). Each group keeps its own online softmax over its positions.
  constexpr int kLanes = D / 8, kKeys = 32 / kLanes, kStride = kKeys * kAttentionWarps;
  const int sub = lane % kLanes, stream = warp * kKeys + lane / kLanes;
  float q[G][8], acc[G][8], m[G], l[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -FLT_MAX;
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      q[g][e] = q_src[g * D + sub * 8 + e] * p.scale;
      acc[g][e] = 0.0f;
    }
  }
  // Split-KV (flash decoding): block z of p.n_splits takes an equal slice of the positions.
  const int span = static_cast<int>((n_visible + p.n_splits - 1) / p.n_splits);
  const int begin = static_cast<int>(blockIdx.z) * span, end = static_cast<int>(min(n_visible, static_cast<int64_t>(begin) + span));
  // The slice's block-table entries in shared memory (when they fit), so a row's address costs a
  // shared read instead of a dependent global load ahead of every row load. Positions and block
  // sizes fit in 32 bits; 64-bit division would cost ~100 instructions a row.
  const int block_size = static_cast<int>(p.block_size);
  constexpr int kTableCache = 512;
  __shared__ int s_table[kTableCache];
  const int first_entry = begin / block_size;
  const bool cached = end <= begin || (end - 1) / block_size - first_entry < kTableCache;
  if (cached)
    for (int i = threadIdx.x; first_entry + i <= (end - 1) / block_size && i < kTableCache; i += blockDim.x) s_table[i] = table[first_entry + i];
  __syncthreads();
  // A row's key and value chunk (8 dims), raw: converted to float when used, so the loads in
  // flight cost 8 registers a position, not 16.
  auto load_row = [&](int s, uint4& kb, uint4& vb) {
    const int entry = cached ? s_table[s / block_size - first_entry] : table[s / block_size];
    const int64_t row = static_cast<int64_t>(entry) * block_size + s % block_size;
    const int64_t at = row * kv_width + kvh * D + sub * 8;
    kb = *reinterpret_cast<const uint4*>(p.k_pool + at);
    vb = *reinterpret_cast<const uint4*>(p.v_pool + at);
  };
  // Software-pipelined two positions deep: the rows of the next two positions of a lane's stream
  // are in flight while it scores this one. Every lane of a warp runs the same trip count (the
  // shuffles need the whole warp); groups past the end compute on zeros and skip the update.
  const int warp_first = begin + warp * kKeys;
  uint4 kb_next[2] = {}, vb_next[2] = {};
#pragma unroll
  for (int d = 0; d < 2; ++d)
    if (begin + stream + d * kStride < end) load_row(begin + stream + d * kStride, kb_next[d], vb_next[d]);
  for (int base = warp_first; base < end; base += kStride) {
    const int s = base + (stream - warp * kKeys);
    float k[8], v[8];
    {
      const __nv_bfloat162* kp = reinterpret_cast<const __nv_bfloat162*>(&kb_next[0]);
      const __nv_bfloat162* vp = reinterpret_cast<const __nv_bfloat162*>(&vb_next[0]);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 kf = __bfloat1622float2(kp[j]), vf = __bfloat1622float2(vp[j]);
        k[2 * j] = kf.x, k[2 * j + 1] = kf.y, v[2 * j] = vf.x, v[2 * j + 1] = vf.y;
      }
    }
    kb_next[0] = kb_next[1];
    vb_next[0] = vb_next[1];
    if (s + 2 * kStride < end) load_row(s + 2 * kStride, kb_next[1], vb_next[1]);
    const bool valid = s < end;
    float dot[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
      dot[g] = 0.0f;
#pragma unroll
      for (int e = 0; e < 8; ++e) dot[g] = fmaf(q[g][e], k[e], dot[g]);
    }
#pragma unroll
    for (int offset = kLanes / 2; offset > 0; offset >>= 1)
#pragma unroll
      for (int g = 0; g < G; ++g) dot[g] += __shfl_xor_sync(0xffffffffu, dot[g], offset);
    if (valid) {
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float m_new = fmaxf(m[g], dot[g]);
        const float correction = __expf(m[g] - m_new), weight = __expf(dot[g] - m_new);
        l[g] = l[g] * correction + weight;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] = fmaf(weight, v[e], acc[g][e] * correction);
        m[g] = m_new;
      }
    }
  }
  // Fold the warp's kKeys groups into one state (lanes with the same sub hold the same dims).
#pragma unroll
  for (int offset = kLanes; offset < 32; offset <<= 1)
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float m_other = __shfl_xor_sync(0xffffffffu, m[g], offset), l_other = __shfl_xor_sync(0xffffffffu, l[g], offset);
      const float m_new = fmaxf(m[g], m_other);
      const float f_mine = l[g] > 0.0f ? __expf(m[g] - m_new) : 0.0f, f_other = l_other > 0.0f ? __expf(m_other - m_new) : 0.0f;
      l[g] = l[g] * f_mine + l_other * f_other;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] = acc[g][e] * f_mine + __shfl_xor_sync(0xffffffffu, acc[g][e], offset) * f_other;
      m[g] = m_new;
    }
  __shared__ float s_m[kAttentionWarps][G], s_l[kAttentionWarps][G], s_acc[kAttentionWarps][G][D];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    if (lane == 0) {
      s_m[warp][g] = m[g];
      s_l[warp][g] = l[g];
    }
    if (lane < kLanes)
#pragma unroll
      for (int e = 0; e < 8; ++e) s_acc[warp][g][sub * 8 + e] = acc[g][e];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < G * D; idx += blockDim.x) {
    const int g = idx / D, d = idx % D;
    float m_all = -FLT_MAX;
    for (int w = 0; w < kAttentionWarps; ++w) m_all = fmaxf(m_all, s_m[w][g]);
    float l_all = 0.0f, a_all = 0.0f;
    for (int w = 0; w < kAttentionWarps; ++w) {
      if (s_l[w][g] == 0.0f) continue;  // a warp that saw no positions
      const float f = __expf(s_m[w][g] - m_all);
      l_all += s_l[w][g] * f;
      a_all += s_acc[w][g][d] * f;
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
  // Split-KV: the last slice of this (token, KV head) to finish merges them all, rescaling each
  // to the common max (no separate combine kernel: one launch less per layer). The fence makes
  // this block's slice visible before the counter says it is done.
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
      const float f = __expf(__ldcg(slice) - m_all);
      l_all += l * f;
      a_all += __ldcg(slice + 2 + d) * f;
    }
    p.out[t * p.n_heads * D + h * D + d] = __float2bfloat16_rn(a_all / l_all);
  }
}

template <int D>
bool launch_attention_d(const AttentionParams& p, int64_t group, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.n_tokens), static_cast<unsigned>(p.n_kv_heads), static_cast<unsigned>(p.n_splits));
  switch (group) {
#define SS_ATTENTION_CASE(G) \
  case G: launch(attention_kernel<D, G>, grid, kAttentionWarps * 32, stream, p); return true;
    SS_ATTENTION_CASE(1)
    SS_ATTENTION_CASE(2)
    SS_ATTENTION_CASE(3)
    SS_ATTENTION_CASE(4)
    SS_ATTENTION_CASE(5)
    SS_ATTENTION_CASE(6)
    SS_ATTENTION_CASE(7)
    SS_ATTENTION_CASE(8)
#undef SS_ATTENTION_CASE
    default: return false;
  }
}

}  // namespace

bool attention_supported(int64_t head_dim, int64_t group) {
  return (head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128) && group >= 1 && group <= 8;
}

void attention(const AttentionParams& p, cudaStream_t stream) {
  if (p.n_tokens == 0) return;
  const int64_t group = p.n_heads / p.n_kv_heads;
  bool launched = false;
  switch (p.head_dim) {
    case 16: launched = launch_attention_d<16>(p, group, stream); break;
    case 32: launched = launch_attention_d<32>(p, group, stream); break;
    case 64: launched = launch_attention_d<64>(p, group, stream); break;
    case 128: launched = launch_attention_d<128>(p, group, stream); break;
    default: break;
  }
  if (!launched) fail("attention: unsupported head_dim or group (check attention_supported first)", cudaErrorInvalidValue, __FILE__, __LINE__);
  SS_CUDA_CHECK_LAUNCH();
}

}  // namespace seekserve::cuda
