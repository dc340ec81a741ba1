// Paged decode attention on CUDA cores (split-KV, optional fused RoPE) and the dispatch between
// it and the tensor-core kernel (attention_mma.cu); the prefill kernel is in flash_prefill.cu.
// Launchers are declared in kernels.h.
#include <cfloat>
#include <cstdlib>

#include "cuda/decode_attention_support.cuh"

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

  __shared__ float s_q[G][D];
  const float* q_src = decode_queries<D, G>(p, t, kvh, s_q);

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
  store_decode_attention<D, G, kAttentionWarps, false>(p, t, kvh, &s_m[0][0], &s_l[0][0], &s_acc[0][0][0]);
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

AttentionKernel attention_kernel_for(int64_t n_tokens) {
  static const bool force_simt = std::getenv("SEEKSERVE_CUDA_ATTENTION_SIMT") != nullptr;
  static const bool force_mma = std::getenv("SEEKSERVE_CUDA_ATTENTION_MMA") != nullptr;
  if (force_simt || force_mma) return force_simt ? AttentionKernel::kCudaCores : AttentionKernel::kTensorCores;
  // Measured side by side on the H200 (128 + 32 tokens, ms a step, tensor / CUDA cores):
  // Llama-8B batch 32 5.53 / 5.45, 64 5.61 / 5.65, 128 6.46 / 6.89, 256 10.07 / 11.10; Qwen-1.5B
  // batch 1 1.70 / 1.50, 128 2.70 / 3.17, 256 3.03 / 3.64. From 64 tokens the tensor-core
  // kernel's deeper copies win; below, the CUDA-core kernel's shorter chain (on the H200 the
  // token count alone separates the two, whatever the KV heads).
  constexpr int64_t kTensorCoreMinTokens = 64;
  return n_tokens >= kTensorCoreMinTokens ? AttentionKernel::kTensorCores : AttentionKernel::kCudaCores;
}

void attention(const AttentionParams& p, cudaStream_t stream, AttentionKernel kernel) {
  if (p.n_tokens == 0) return;
  const int64_t group = p.n_heads / p.n_kv_heads;
  bool launched = false;
  if (kernel == AttentionKernel::kTensorCores) {
    launched = launch_attention_mma(p, stream);
  } else {
    switch (p.head_dim) {
      case 16: launched = launch_attention_d<16>(p, group, stream); break;
      case 32: launched = launch_attention_d<32>(p, group, stream); break;
      case 64: launched = launch_attention_d<64>(p, group, stream); break;
      case 128: launched = launch_attention_d<128>(p, group, stream); break;
      default: break;
    }
  }
  if (!launched) fail("attention: unsupported head_dim or group (check attention_supported first)", cudaErrorInvalidValue, __FILE__, __LINE__);
  SS_CUDA_CHECK_LAUNCH();
}

}  // namespace seekserve::cuda
