#include <cfloat>

#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace seekserve::cuda {

namespace {

// Every kernel is launched with programmatic stream serialization (Hopper's programmatic
// dependent launch): it may be scheduled while the kernel before it drains, and waits in
// dependency_wait() — its first statement — until that kernel has finished and its writes are
// visible. A decode step is ~200 small kernels; this hides most of the gap between them.
__device__ __forceinline__ void dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  SS_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, static_cast<KernelArgs>(args)...));
}

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float v) { return __float2bfloat16_rn(v); }

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

__global__ void silu_mul_kernel(const float* gate_up, int64_t n, int64_t I, bf16* out) {
  dependency_wait();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * I) return;
  const int64_t t = i / I, j = i % I;
  const float g = gate_up[t * 2 * I + j];
  out[i] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * gate_up[t * 2 * I + I + j]);
}

__global__ void to_bf16_kernel(const float* x, int64_t n, bf16* out) {
  dependency_wait();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(x[i]);
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

void silu_mul(const float* gate_up, int64_t n, int64_t I, bf16* out, cudaStream_t stream) {
  if (n * I == 0) return;
  launch(silu_mul_kernel, blocks_for(n * I, 256), 256, stream, gate_up, n, I, out);
  SS_CUDA_CHECK_LAUNCH();
}

void argmax_rows(const float* logits, int64_t rows, int64_t vocab, uint64_t* keys, cudaStream_t stream) {
  if (rows == 0) return;
  SS_CUDA_CHECK(cudaMemsetAsync(keys, 0, static_cast<size_t>(rows) * 8, stream));
  launch(argmax_kernel, dim3(static_cast<unsigned>(rows), kArgmaxSlices), 256, stream, 
      logits, vocab, reinterpret_cast<unsigned long long*>(keys));
  SS_CUDA_CHECK_LAUNCH();
}

void to_bf16(const float* x, int64_t n, bf16* out, cudaStream_t stream) {
  if (n == 0) return;
  launch(to_bf16_kernel, blocks_for(n, 256), 256, stream, x, n, out);
  SS_CUDA_CHECK_LAUNCH();
}

}  // namespace seekserve::cuda
