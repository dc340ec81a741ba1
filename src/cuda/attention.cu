// Attention kernels: paged decode attention (split-KV, optional fused RoPE) and the tensor-core
// prefill attention; their launchers are declared in kernels.h.
#include <cfloat>

#include "cuda/kernel_support.cuh"

namespace seekserve::cuda {

using namespace detail;

namespace {

constexpr int kAttentionWarps = 8;

// One block per (token, KV head): its kAttentionWarps warps split the visible positions, each
// keeping an online softmax for the G query heads that share the KV head, then merge. A lane
// holds E = D / 32 (at least 1) dims of each head, so each key/value row is one coalesced read.
template <int D, int G>
__global__ void __launch_bounds__(kAttentionWarps * 32) attention_kernel(AttentionParams p) {
  dependency_wait();
  constexpr int E = D >= 32 ? D / 32 : 1;
  const int64_t t = blockIdx.x, kvh = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool active = lane * E < D;
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

  float q[G][E], acc[G][E], m[G], l[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -FLT_MAX;
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      q[g][e] = active ? q_src[g * D + lane * E + e] * p.scale : 0.0f;
      acc[g][e] = 0.0f;
    }
  }
  // Software-pipelined: the next position's key and value are loaded before this one's math,
  // so each warp keeps a table lookup and two row loads in flight behind its shuffles.
  auto load_row = [&](int64_t s, float (&k)[E], float (&v)[E]) {
    const int64_t row = static_cast<int64_t>(table[s / p.block_size]) * p.block_size + s % p.block_size;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      k[e] = active ? __bfloat162float(p.k_pool[row * kv_width + kvh * D + lane * E + e]) : 0.0f;
      v[e] = active ? __bfloat162float(p.v_pool[row * kv_width + kvh * D + lane * E + e]) : 0.0f;
    }
  };
  // Split-KV (flash decoding): block z of p.n_splits takes an equal slice of the positions.
  const int64_t span = (n_visible + p.n_splits - 1) / p.n_splits;
  const int64_t begin = blockIdx.z * span, end = min(n_visible, begin + span);
  float k_next[E], v_next[E];
  if (begin + warp < end) load_row(begin + warp, k_next, v_next);
  for (int64_t s = begin + warp; s < end; s += kAttentionWarps) {
    float k[E], v[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      k[e] = k_next[e];
      v[e] = v_next[e];
    }
    if (s + kAttentionWarps < end) load_row(s + kAttentionWarps, k_next, v_next);
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float dot = 0.0f;
#pragma unroll
      for (int e = 0; e < E; ++e) dot = fmaf(q[g][e], k[e], dot);
      dot = warp_sum(dot);
      const float m_new = fmaxf(m[g], dot);
      const float correction = __expf(m[g] - m_new), weight = __expf(dot - m_new);
      l[g] = l[g] * correction + weight;
#pragma unroll
      for (int e = 0; e < E; ++e) acc[g][e] = fmaf(weight, v[e], acc[g][e] * correction);
      m[g] = m_new;
    }
  }
  __shared__ float s_m[kAttentionWarps][G], s_l[kAttentionWarps][G], s_acc[kAttentionWarps][G][D];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    if (lane == 0) {
      s_m[warp][g] = m[g];
      s_l[warp][g] = l[g];
    }
    if (active)
#pragma unroll
      for (int e = 0; e < E; ++e) s_acc[warp][g][lane * E + e] = acc[g][e];
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
    } else {  // this slice's (max, sum, unnormalized output), merged by attention_combine_kernel
      float* part = p.partial + ((t * p.n_heads + h) * p.n_splits + blockIdx.z) * (D + 2);
      if (d == 0) {
        part[0] = m_all;
        part[1] = l_all;
      }
      part[2 + d] = a_all;
    }
  }
}

// Merges the split-KV slices of one (token, head): rescale each slice to the common max.
__global__ void attention_combine_kernel(const float* partial, int64_t n_heads, int64_t n_splits, int D, bf16* out) {
  dependency_wait();
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const float* part = partial + (t * n_heads + h) * n_splits * (D + 2);
  float m_all = -FLT_MAX;
  for (int64_t s = 0; s < n_splits; ++s)
    if (part[s * (D + 2) + 1] > 0.0f) m_all = fmaxf(m_all, part[s * (D + 2)]);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float l_all = 0.0f, a_all = 0.0f;
    for (int64_t s = 0; s < n_splits; ++s) {
      const float* slice = part + s * (D + 2);
      if (slice[1] == 0.0f) continue;  // an empty slice
      const float f = __expf(slice[0] - m_all);
      l_all += slice[1] * f;
      a_all += slice[2 + d] * f;
    }
    out[t * n_heads * D + h * D + d] = __float2bfloat16_rn(a_all / l_all);
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

// ---- Prefill attention on tensor cores -------------------------------------------------
// FlashAttention-2 style with mma.sync m16n8k16 (bf16 in, float32 accumulate): a block of 4
// warps takes up to 64 query rows of one sequence and one head; each warp owns 16 rows and keeps
// their scores, running max and sum, and output in registers while the block streams the
// sequence's keys and values (gathered through its block table) 64 positions at a time through
// shared memory. Scores are kept in base 2 (scale * log2 e folded into q).

constexpr int kFlashKeys = 64;  // key positions per shared-memory tile

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ uint32_t pack_bf16(bf16 lo, bf16 hi) {
  return static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&lo)) |
         (static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&hi)) << 16);
}

template <int D>
__global__ void __launch_bounds__(128) flash_prefill_kernel(AttentionParams p, const int32_t* tiles) {
  dependency_wait();
  constexpr int kSteps = D / 16;   // k-steps of Q K^T
  constexpr int kDimBlocks = D / 8;  // n-blocks of P V
  constexpr int kPad = 8;          // row padding (16 bytes) against bank conflicts
  __shared__ __align__(16) bf16 s_k[kFlashKeys][D + kPad];
  __shared__ __align__(16) bf16 s_v[kFlashKeys][D + kPad];

  const int32_t seq = tiles[blockIdx.x * 3], row0 = tiles[blockIdx.x * 3 + 1], n_rows = tiles[blockIdx.x * 3 + 2];
  const int64_t h = blockIdx.y, kvh = h / (p.n_heads / p.n_kv_heads), kv_width = p.n_kv_heads * D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q4 = lane % 4;
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.table_stride;
  const int64_t last_position = p.positions[row0 + n_rows - 1];  // positions grow within a chunk

  // This thread's two rows (g and g + 8 of the warp's 16) and the positions they may see.
  const int r_lo = warp * 16 + g, r_hi = r_lo + 8;
  const int64_t pos_lo = r_lo < n_rows ? p.positions[row0 + r_lo] : -1;
  const int64_t pos_hi = r_hi < n_rows ? p.positions[row0 + r_hi] : -1;
  const float q_scale = p.scale * 1.4426950408889634f;
  uint32_t qa[kSteps][4];
  {
    const float* q_lo = p.q + static_cast<int64_t>(row0 + r_lo) * p.q_stride + h * D;
    const float* q_hi = p.q + static_cast<int64_t>(row0 + r_hi) * p.q_stride + h * D;
#pragma unroll
    for (int ks = 0; ks < kSteps; ++ks) {
      const int c = ks * 16 + q4 * 2;
      qa[ks][0] = pos_lo >= 0 ? pack_bf16(q_lo[c] * q_scale, q_lo[c + 1] * q_scale) : 0u;
      qa[ks][1] = pos_hi >= 0 ? pack_bf16(q_hi[c] * q_scale, q_hi[c + 1] * q_scale) : 0u;
      qa[ks][2] = pos_lo >= 0 ? pack_bf16(q_lo[c + 8] * q_scale, q_lo[c + 9] * q_scale) : 0u;
      qa[ks][3] = pos_hi >= 0 ? pack_bf16(q_hi[c + 8] * q_scale, q_hi[c + 9] * q_scale) : 0u;
    }
  }
  float o[kDimBlocks][4] = {};
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;

  for (int64_t key0 = 0; key0 <= last_position; key0 += kFlashKeys) {
    __syncthreads();  // the previous tile is no longer read
    // Gather 64 key and value rows (16-byte chunks) from the paged cache; zero past the end.
    for (int idx = threadIdx.x; idx < kFlashKeys * (D / 8); idx += blockDim.x) {
      const int r = idx / (D / 8), c = (idx % (D / 8)) * 8;
      const int64_t s = key0 + r;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
      if (s <= last_position) {
        const int64_t slot = static_cast<int64_t>(table[s / p.block_size]) * p.block_size + s % p.block_size;
        kv = *reinterpret_cast<const uint4*>(p.k_pool + slot * kv_width + kvh * D + c);
        vv = *reinterpret_cast<const uint4*>(p.v_pool + slot * kv_width + kvh * D + c);
      }
      *reinterpret_cast<uint4*>(&s_k[r][c]) = kv;
      *reinterpret_cast<uint4*>(&s_v[r][c]) = vv;
    }
    __syncthreads();

    // S = Q K^T for this warp's 16 rows x 64 keys: 8 n-blocks of 8 keys.
    float sc[kFlashKeys / 8][4];
#pragma unroll
    for (int nb = 0; nb < kFlashKeys / 8; ++nb) {
      sc[nb][0] = sc[nb][1] = sc[nb][2] = sc[nb][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < kSteps; ++ks) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(&s_k[nb * 8 + g][ks * 16 + q4 * 2]);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(&s_k[nb * 8 + g][ks * 16 + 8 + q4 * 2]);
        mma_bf16(sc[nb], qa[ks], b0, b1);
      }
    }
    // Causal mask, then the online softmax per row (a row's 64 scores live in one quad).
    float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
    for (int nb = 0; nb < kFlashKeys / 8; ++nb)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int64_t s = key0 + nb * 8 + q4 * 2 + j;
        if (s > pos_lo) sc[nb][j] = -INFINITY;
        if (s > pos_hi) sc[nb][2 + j] = -INFINITY;
        mx_lo = fmaxf(mx_lo, sc[nb][j]);
        mx_hi = fmaxf(mx_hi, sc[nb][2 + j]);
      }
#pragma unroll
    for (int offset = 1; offset < 4; offset <<= 1) {
      mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, offset));
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, offset));
    }
    const float new_lo = fmaxf(m_lo, mx_lo), new_hi = fmaxf(m_hi, mx_hi);
    const float base_lo = new_lo == -INFINITY ? 0.0f : new_lo, base_hi = new_hi == -INFINITY ? 0.0f : new_hi;
    const float corr_lo = exp2f(m_lo - base_lo), corr_hi = exp2f(m_hi - base_hi);
    m_lo = new_lo;
    m_hi = new_hi;
    l_lo *= corr_lo;
    l_hi *= corr_hi;
#pragma unroll
    for (int db = 0; db < kDimBlocks; ++db) {
      o[db][0] *= corr_lo;
      o[db][1] *= corr_lo;
      o[db][2] *= corr_hi;
      o[db][3] *= corr_hi;
    }
    uint32_t pa[kFlashKeys / 16][4];
#pragma unroll
    for (int nb = 0; nb < kFlashKeys / 8; ++nb) {
      const float p0 = exp2f(sc[nb][0] - base_lo), p1 = exp2f(sc[nb][1] - base_lo);
      const float p2 = exp2f(sc[nb][2] - base_hi), p3 = exp2f(sc[nb][3] - base_hi);
      l_lo += p0 + p1;
      l_hi += p2 + p3;
      // The score fragment of n-blocks 2k and 2k+1 is the A fragment of keys 16k..16k+15.
      pa[nb / 2][(nb % 2) * 2 + 0] = pack_bf16(p0, p1);
      pa[nb / 2][(nb % 2) * 2 + 1] = pack_bf16(p2, p3);
    }
    // O += P V: B fragments pair two keys of one value column.
#pragma unroll
    for (int db = 0; db < kDimBlocks; ++db)
#pragma unroll
      for (int kk = 0; kk < kFlashKeys / 16; ++kk) {
        const int k = kk * 16 + q4 * 2, d = db * 8 + g;
        const uint32_t b0 = pack_bf16(s_v[k][d], s_v[k + 1][d]);
        const uint32_t b1 = pack_bf16(s_v[k + 8][d], s_v[k + 9][d]);
        mma_bf16(o[db], pa[kk], b0, b1);
      }
  }
#pragma unroll
  for (int offset = 1; offset < 4; offset <<= 1) {
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, offset);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, offset);
  }
  const int64_t out_stride = p.n_heads * D;
#pragma unroll
  for (int db = 0; db < kDimBlocks; ++db) {
    const int d = db * 8 + q4 * 2;
    if (pos_lo >= 0)
      *reinterpret_cast<__nv_bfloat162*>(p.out + (row0 + r_lo) * out_stride + h * D + d) =
          __floats2bfloat162_rn(o[db][0] / l_lo, o[db][1] / l_lo);
    if (pos_hi >= 0)
      *reinterpret_cast<__nv_bfloat162*>(p.out + (row0 + r_hi) * out_stride + h * D + d) =
          __floats2bfloat162_rn(o[db][2] / l_hi, o[db][3] / l_hi);
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
  if (p.n_splits > 1) {
    launch(attention_combine_kernel, dim3(static_cast<unsigned>(p.n_tokens), static_cast<unsigned>(p.n_heads)), 128, stream,
        p.partial, p.n_heads, p.n_splits, static_cast<int>(p.head_dim), p.out);
    SS_CUDA_CHECK_LAUNCH();
  }
}

bool attention_prefill_supported(int64_t head_dim) { return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128; }

void attention_prefill(const AttentionParams& p, const int32_t* tiles, int64_t n_tiles, cudaStream_t stream) {
  if (n_tiles == 0) return;
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(p.n_heads));
  switch (p.head_dim) {
    case 16: launch(flash_prefill_kernel<16>, grid, 128, stream, p, tiles); break;
    case 32: launch(flash_prefill_kernel<32>, grid, 128, stream, p, tiles); break;
    case 64: launch(flash_prefill_kernel<64>, grid, 128, stream, p, tiles); break;
    case 128: launch(flash_prefill_kernel<128>, grid, 128, stream, p, tiles); break;
    default: fail("attention_prefill: unsupported head_dim", cudaErrorInvalidValue, __FILE__, __LINE__);
  }
  SS_CUDA_CHECK_LAUNCH();
}

}  // namespace seekserve::cuda
