// Paged decode attention on tensor cores (the default decode kernel; attention.cu dispatches).
//
// One block of 4 warps per (token, KV head, slice), as the CUDA-core kernel, but the G query
// heads that share the KV head are the rows of an mma.sync m16n8k16 tile (G <= 8 of its 16 rows
// used: tensor-core work is not what decode attention runs short of). The block copies the
// slice's keys and values 64 positions at a time into shared memory with cp.async, the next tile
// in flight while the current one is multiplied, so each SM keeps ~100 KB of KV rows in flight
// without spending registers on them (the CUDA-core kernel holds its loads in registers: 1.4 TB/s
// over the KV rows at batch 256). Warp w scores keys [16 w, 16 w + 16) of each tile with its own
// online softmax (base 2: scale * log2 e folded into q); the block merges its warps at the end.
#include <cfloat>

#include "cuda/decode_attention_support.cuh"
#include "cuda/mma_support.cuh"

namespace seekserve::cuda {

using namespace detail;

namespace {

constexpr int kDecodeKeys = 64;     // key positions per shared-memory tile
constexpr int kDecodeWarps = 4;     // warp w takes keys [16 w, 16 w + 16) of a tile
constexpr int kDecodeThreads = kDecodeWarps * 32;

template <int D, int G>
__global__ void __launch_bounds__(kDecodeThreads, 3) attention_mma_kernel(AttentionParams p) {
  dependency_wait();
  constexpr int kSteps = D / 16;     // k-steps of Q K^T
  constexpr int kDimBlocks = D / 8;  // n-blocks of P V
  using Tiles = KvTiles<D, kDecodeKeys>;
  constexpr int kRow = Tiles::kRow;
  extern __shared__ __align__(16) bf16 smem[];
  bf16* s_k = Tiles::keys(smem);
  bf16* s_v = Tiles::values(smem);
  const int64_t t = blockIdx.x, kvh = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q4 = lane % 4;
  const int32_t* table = p.block_tables + static_cast<int64_t>(p.token_seq[t]) * p.table_stride;
  // Split-KV: block z of p.n_splits takes an equal slice of the positions (32-bit math: 64-bit
  // division costs ~100 instructions).
  const int n_visible = p.positions[t] + 1;
  const int span = (n_visible + static_cast<int>(p.n_splits) - 1) / static_cast<int>(p.n_splits);
  const int begin = static_cast<int>(blockIdx.z) * span, end = min(n_visible, begin + span);
  const int n_tiles = end > begin ? (end - begin + kDecodeKeys - 1) / kDecodeKeys : 0;

  KvTileCopier<D, kDecodeThreads, kDecodeKeys> tiles_in(p, table, kvh, end);
  // The block-table reads go out before the RoPE prologue; the copies after it, whose barrier
  // makes the new key and value rows visible.
  if (n_tiles > 0) tiles_in.look_up(begin);
  __shared__ float s_q[G][D];
  const float* q_src = decode_queries<D, G>(p, t, kvh, s_q);
  if (n_tiles > 0) tiles_in.copy(s_k, s_v, 0);
  if (n_tiles > 1) tiles_in.look_up(begin + kDecodeKeys);

  // Row g of the A tile is query head g of the group (zero for g >= G); rows 8-15 are zero.
  // qa[ks] = {A[g][c..c+1], A[g][c+8..c+9]} with c = 16 ks + 2 q4.
  const float q_scale = p.scale * 1.4426950408889634f;
  uint32_t qa[kSteps][2];
#pragma unroll
  for (int ks = 0; ks < kSteps; ++ks) {
    const int c = ks * 16 + q4 * 2;
    const float* q_row = q_src + g * D;
    qa[ks][0] = g < G ? pack_bf16(q_row[c] * q_scale, q_row[c + 1] * q_scale) : 0u;
    qa[ks][1] = g < G ? pack_bf16(q_row[c + 8] * q_scale, q_row[c + 9] * q_scale) : 0u;
  }
  float o[kDimBlocks][4] = {};  // [db][0..1]: row g, columns 8 db + 2 q4 + {0, 1}
  float m = -INFINITY, l = 0.0f;

  for (int kt = 0; kt < n_tiles; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < n_tiles) {
      tiles_in.copy(s_k, s_v, buf ^ 1);
      if (kt + 2 < n_tiles) tiles_in.look_up(begin + (kt + 2) * kDecodeKeys);  // consumed next iteration
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // this tile has landed for every thread
    const int key0 = begin + kt * kDecodeKeys + warp * 16;
    if (key0 < end) {
      const bf16* k_rows = s_k + (buf * kDecodeKeys + warp * 16) * kRow;
      const bf16* v_rows = s_v + (buf * kDecodeKeys + warp * 16) * kRow;
      // S = Q K^T for the warp's 16 keys: one ldmatrix_x4 gives the B fragments of both 8-key blocks.
      float sc[2][4] = {};
#pragma unroll
      for (int ks = 0; ks < kSteps; ++ks) {
        uint32_t b[4];
        ldmatrix_x4(b, k_rows + ((lane / 16) * 8 + lane % 8) * kRow + ks * 16 + ((lane / 8) % 2) * 8);
        const uint32_t a[4] = {qa[ks][0], 0u, qa[ks][1], 0u};
        mma_bf16(sc[0], a, b[0], b[1]);
        mma_bf16(sc[1], a, b[2], b[3]);
      }
      // Online softmax of row g over the 16 keys (its scores live in one quad); the warp's first
      // key is in the slice, so every row's max is finite.
      float mx = -INFINITY;
#pragma unroll
      for (int nb = 0; nb < 2; ++nb)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          if (key0 + nb * 8 + q4 * 2 + j >= end) sc[nb][j] = -INFINITY;
          mx = fmaxf(mx, sc[nb][j]);
        }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m, mx), correction = fast_exp2(m - m_new);
      m = m_new;
      l *= correction;
#pragma unroll
      for (int db = 0; db < kDimBlocks; ++db) {
        o[db][0] *= correction;
        o[db][1] *= correction;
      }
      const float p00 = fast_exp2(sc[0][0] - m_new), p01 = fast_exp2(sc[0][1] - m_new);
      const float p10 = fast_exp2(sc[1][0] - m_new), p11 = fast_exp2(sc[1][1] - m_new);
      l += (p00 + p01) + (p10 + p11);
      // The score fragment of the two 8-key blocks is the A fragment of P for these 16 keys.
      const uint32_t pa[4] = {pack_bf16(p00, p01), 0u, pack_bf16(p10, p11), 0u};
#pragma unroll
      for (int db = 0; db < kDimBlocks; db += 2) {
        uint32_t b[4];
        const int j = lane / 8;  // matrix j: keys +8 (j % 2), columns +8 (j / 2)
        ldmatrix_x4_trans(b, v_rows + ((j % 2) * 8 + lane % 8) * kRow + (db + j / 2) * 8);
        mma_bf16(o[db], pa, b[0], b[1]);
        mma_bf16(o[db + 1], pa, b[2], b[3]);
      }
    }
    __syncthreads();  // every warp is done with this buffer before the next copy overwrites it
  }
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);

  // The warps' states through shared memory (the tiles' space, free now), then the common end.
  float* s_m = reinterpret_cast<float*>(smem);
  float* s_l = s_m + kDecodeWarps * G;
  float* s_acc = s_l + kDecodeWarps * G;
  if (g < G) {
    if (q4 == 0) {
      s_m[warp * G + g] = m;
      s_l[warp * G + g] = l;
    }
#pragma unroll
    for (int db = 0; db < kDimBlocks; ++db) {
      s_acc[(warp * G + g) * D + db * 8 + q4 * 2] = o[db][0];
      s_acc[(warp * G + g) * D + db * 8 + q4 * 2 + 1] = o[db][1];
    }
  }
  __syncthreads();
  store_decode_attention<D, G, kDecodeWarps, true>(p, t, kvh, s_m, s_l, s_acc);
}

template <int D>
bool launch_attention_mma_d(const AttentionParams& p, int64_t group, cudaStream_t stream) {
  constexpr size_t kShared = KvTiles<D, kDecodeKeys>::kSharedBytes;
  static_assert(kShared >= (kDecodeWarps * 8 * (D + 2)) * sizeof(float), "merge space fits the tiles");
  const dim3 grid(static_cast<unsigned>(p.n_tokens), static_cast<unsigned>(p.n_kv_heads), static_cast<unsigned>(p.n_splits));
  switch (group) {
#define SS_ATTENTION_MMA_CASE(G)                                                                                                     \
  case G: {                                                                                                                          \
    static const bool configured = [] { /* above 48 KiB of shared memory a kernel must ask for it */                                \
      SS_CUDA_CHECK(cudaFuncSetAttribute(attention_mma_kernel<D, G>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kShared))); \
      return true;                                                                                                                   \
    }();                                                                                                                             \
    (void)configured;                                                                                                                \
    launch_with_shared(attention_mma_kernel<D, G>, grid, kDecodeThreads, kShared, stream, p);                                        \
    return true;                                                                                                                     \
  }
    SS_ATTENTION_MMA_CASE(1)
    SS_ATTENTION_MMA_CASE(2)
    SS_ATTENTION_MMA_CASE(3)
    SS_ATTENTION_MMA_CASE(4)
    SS_ATTENTION_MMA_CASE(5)
    SS_ATTENTION_MMA_CASE(6)
    SS_ATTENTION_MMA_CASE(7)
    SS_ATTENTION_MMA_CASE(8)
#undef SS_ATTENTION_MMA_CASE
    default: return false;
  }
}

}  // namespace

namespace detail {

bool launch_attention_mma(const AttentionParams& p, cudaStream_t stream) {
  const int64_t group = p.n_heads / p.n_kv_heads;
  switch (p.head_dim) {
    case 16: return launch_attention_mma_d<16>(p, group, stream);
    case 32: return launch_attention_mma_d<32>(p, group, stream);
    case 64: return launch_attention_mma_d<64>(p, group, stream);
    case 128: return launch_attention_mma_d<128>(p, group, stream);
    default: return false;
  }
}

}  // namespace detail

}  // namespace seekserve::cuda
