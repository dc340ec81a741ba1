// MLA decode attention on tensor cores (declared in deepseek_kernels.h, dispatched by
// mla_attention in mla.cu): for one token, attention over the latent cache is attention with
// H query rows (the heads) against one shared key/value sequence — keys [c_kv | k_pe] (W = R + P
// wide), values c_kv (the first R columns of the same rows). With V3's 128 heads that is
// compute-bound (2 x 128 x (576 + 512) FLOP per cached position against 1,152 bytes), so a block
// takes up to 64 heads of a token: every cache tile read once from memory feeds 64 rows of mma.
//
// Block = (token, slice of its positions, group of kHeads heads); warps laid out kRowGroups x
// kColGroups. Per tile of kKeys positions (cp.async, kStages tiles in shared memory):
//   scores   warp (rg, cg): heads 16 rg.., 32 keys, 1 / kWidthSplits of the width, so one Q
//            fragment feeds four independent mma chains; partial sums to shared memory
//   softmax  every thread: its row's kSoftmaxKeys keys, partial sums added, online max and sum
//            per row kept in shared memory; probabilities (bf16) to shared memory
//   output   O[16 heads, R / kColGroups columns] += P V   warp (rg, cg): every key of the tile,
//            8-column tiles 2 (cg + kColGroups i) and the one after
// Fragments come through ldmatrix (V transposed on the way); shared rows are padded by 16 bytes
// so the 8 rows of each 8x8 matrix fall in distinct banks. Q in bf16 (q_latent as stored, q_pe
// rotated in float then rounded), P in bf16, sums in float32.
#include <cfloat>

#include "cuda/deepseek_kernels.h"
#include "cuda/kernel_support.cuh"
#include "cuda/mla_support.cuh"
#include "cuda/mma_support.cuh"

namespace seekserve::cuda {

using namespace detail;

namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kMaxLatentColumns = 512;  // R <= 512 (mla_attention_supported)

template <int kRowGroups_, int kColGroups_, int kKeys_, int kStages_>
struct MlaTiling {
  static constexpr int kRowGroups = kRowGroups_;  // warps along the heads, 16 heads each
  static constexpr int kColGroups = kColGroups_;  // warps sharing those heads (scores: keys x width; output: columns)
  static constexpr int kKeys = kKeys_;            // cache positions a tile
  static constexpr int kStages = kStages_;        // tiles in shared memory (kStages - 1 in flight)
  static constexpr int kHeads = 16 * kRowGroups, kWarps = kRowGroups * kColGroups, kThreads = 32 * kWarps;
  // Scores: a warp takes 32 keys (four 8-key mma tiles, one Q fragment feeding four mma) over
  // 1 / kWidthSplits of the width; the row group's partial sums meet in shared memory.
  static constexpr int kScoreKeys = 32, kKeyGroups = kKeys / kScoreKeys, kWidthSplits = kColGroups / kKeyGroups;
  static constexpr int kScoreStride = kKeys + 8;  // floats a row of the partial scores (rows 8 banks apart)
  // Softmax: kSoftmaxKeys consecutive keys of one row a thread, kRowThreads threads a row.
  static constexpr int kSoftmaxKeys = kHeads * kKeys / kThreads, kRowThreads = kKeys / kSoftmaxKeys;
  static constexpr int kPairs = kMaxLatentColumns / 16 / kColGroups;  // pairs of 8-column output tiles a warp holds
  static constexpr int kProbStride = kKeys + 8;                      // bf16 a row of P
  static_assert(kKeys % kScoreKeys == 0 && kColGroups % kKeyGroups == 0 && kKeys % kWarps == 0 && kStages >= 2);
  static_assert((kSoftmaxKeys == 4 || kSoftmaxKeys == 8) && 32 % kRowThreads == 0);
};

// bf16 elements a shared Q/K row: W rounded up to whole k-steps of 16, plus 16 bytes of padding
// (an odd number of 16-byte units a row).
__host__ __device__ inline int mla_tile_stride(int W) { return (W + 15) / 16 * 16 + 8; }

template <class T>
size_t mla_tile_shared_bytes(int W) {
  return static_cast<size_t>((T::kHeads + T::kStages * T::kKeys) * mla_tile_stride(W) + T::kHeads * T::kProbStride) * sizeof(bf16) +
         static_cast<size_t>((T::kWidthSplits * T::kScoreStride + 3) * T::kHeads) * sizeof(float);
}

// kR, kP: the latent and rotary widths fixed at compile time (V2/V3's 512 and 64: every address
// and bound folds into immediates), or 0 to read them from the parameters.
template <class T, int kR, int kP>
__global__ void __launch_bounds__(T::kThreads, 1) mla_decode_mma_kernel(MlaAttentionParams p) {
  dependency_wait();
  extern __shared__ __align__(16) unsigned char mla_tile_smem[];
  const int R = kR > 0 ? kR : static_cast<int>(p.kv_rank), P = kP > 0 ? kP : static_cast<int>(p.rope_dim), W = R + P;
  const int H = static_cast<int>(p.n_heads);
  const int Wp = (W + 15) / 16 * 16, stride = mla_tile_stride(W);
  bf16* qs = reinterpret_cast<bf16*>(mla_tile_smem);  // [kHeads][stride]
  bf16* ks = qs + T::kHeads * stride;                  // [kStages][kKeys][stride]
  bf16* ps = ks + T::kStages * T::kKeys * stride;      // [kHeads][kProbStride]
  float* s_part = reinterpret_cast<float*>(ps + T::kHeads * T::kProbStride);  // [kWidthSplits][kHeads][kScoreStride]
  float* row_m = s_part + T::kWidthSplits * T::kHeads * T::kScoreStride;      // running max, sum, last rescale a row
  float* row_l = row_m + T::kHeads;
  float* row_alpha = row_l + T::kHeads;

  // Head groups vary fastest, so the blocks reading the same slice of a sequence run together
  // (the second read of each tile comes from L2).
  const int groups = (H + T::kHeads - 1) / T::kHeads, splits = static_cast<int>(p.n_splits);
  const int group = static_cast<int>(blockIdx.x % groups);
  const int split = static_cast<int>(blockIdx.x / groups % splits);
  const int64_t t = blockIdx.x / groups / splits;
  const int h0 = group * T::kHeads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
  const int rg = warp / T::kColGroups, cg = warp % T::kColGroups;
  const int pos = p.positions[t], visible = pos + 1;
  const int tiles = (visible + T::kKeys - 1) / T::kKeys;
  const int per_split = (tiles + splits - 1) / splits;
  const int tile_begin = split * per_split, tile_end = min(tiles, tile_begin + per_split);

  auto partial_slot = [&](int row) { return p.partial + ((t * H + h0 + row) * splits + split) * (R + 2); };
  if (tile_begin >= tile_end) {  // an empty slice (short context): nothing to merge from here
    for (int row = threadIdx.x; row < T::kHeads; row += T::kThreads)
      if (h0 + row < H) {
        partial_slot(row)[R] = -INFINITY;
        partial_slot(row)[R + 1] = 0.0f;
      }
    return;
  }

  // Tile copies: kKeys rows of W / 8 16-byte pieces ([c_kv | k_pe]); warp w copies rows w,
  // w + kWarps, ..., lane l its pieces l, l + 32, l + 64. Rows past the token's position are
  // zero-filled (their scores are masked).
  const int32_t* table = p.block_tables + static_cast<int64_t>(p.token_seq[t]) * p.table_stride;
  const int block_size = static_cast<int>(p.block_size), pieces = W / 8, r_pieces = R / 8;
  constexpr int kRowsPerWarp = T::kKeys / T::kWarps, kPiecesPerLane = (576 / 8 + 31) / 32;
  // Lane i < kRowsPerWarp looks up the cache block and offset of the warp's row i of a tile
  // (block -1 past the position or the slice); the copy reads them by shuffles. The loop reads
  // the next tile's table entries one iteration ahead (the raw entry, not yet used), so the
  // table read's latency hides behind the mma work.
  struct RowRef {
    int block, offset;
  };
  auto lookup = [&](int tile) {
    const int s = tile * T::kKeys + warp + T::kWarps * lane;
    const bool valid = tile < tile_end && lane < kRowsPerWarp && s < visible;
    return RowRef{valid ? table[s / block_size] : -1, valid ? s % block_size : 0};
  };
  auto issue = [&](int tile, int stage, RowRef ref) {
    if (tile < tile_end) {
      bf16* dst = ks + stage * T::kKeys * stride;
      const int my_row = ref.block < 0 ? -1 : ref.block * block_size + ref.offset;
      int64_t rows[kRowsPerWarp];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) rows[i] = __shfl_sync(0xffffffffu, my_row, i);
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const int64_t row = rows[i] < 0 ? 0 : rows[i];
        bf16* dst_row = dst + (warp + T::kWarps * i) * stride;
#pragma unroll
        for (int j = 0; j < kPiecesPerLane; ++j) {
          const int c = lane + 32 * j;
          if (c < pieces)
            cp_async_16(dst_row + 8 * c, c < r_pieces ? p.c_kv_pool + row * R + 8 * c : p.k_pe_pool + row * P + 8 * (c - r_pieces),
                        rows[i] < 0 ? 0 : 16);
        }
      }
    }
    cp_async_commit();  // an empty group past the slice keeps the wait counts uniform
  };
#pragma unroll
  for (int s = 0; s < T::kStages - 1; ++s) issue(tile_begin + s, s, lookup(tile_begin + s));
  RowRef next_rows = lookup(tile_begin + T::kStages - 1);

  // Queries (heads past H zero); zero columns W..Wp of Q and of every key row (never copied).
  for (int idx = threadIdx.x; idx < T::kHeads * (R / 8); idx += T::kThreads) {
    const int hh = idx / (R / 8), c = idx % (R / 8), h = h0 + hh;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (h < H) v = reinterpret_cast<const uint4*>(p.q_latent + (t * H + h) * R)[c];
    *reinterpret_cast<uint4*>(qs + hh * stride + 8 * c) = v;
  }
  for (int idx = threadIdx.x; idx < T::kHeads * (P / 2); idx += T::kThreads) {
    const int hh = idx / (P / 2), j = idx % (P / 2);
    const float2 r = rotated_q_pe(p, t, h0 + hh, j, pos);
    *reinterpret_cast<uint32_t*>(qs + hh * stride + R + 2 * j) = pack_bf16(r.x, r.y);
  }
  if constexpr (kR == 0) {  // the fixed widths (576) need no padding
    const int pad = Wp - W;
    if (pad > 0)
      for (int idx = threadIdx.x; idx < (T::kHeads + T::kStages * T::kKeys) * pad; idx += T::kThreads)
        qs[idx / pad * stride + W + idx % pad] = __float2bfloat16_rn(0.0f);  // qs rows, then ks rows
  }

  const float scale = p.scale * kLog2e;  // scores in the log2 domain
  const int col_tiles = R / 8;
  const int row_lo = 16 * rg + gid;  // this thread's rows of its row group: row_lo, row_lo + 8
  float o[T::kPairs][2][4] = {};
  for (int row = threadIdx.x; row < T::kHeads; row += T::kThreads) {
    row_m[row] = -INFINITY;
    row_l[row] = 0.0f;
  }
  // Scores: this warp's keys (key group kg) over its k-steps (width split ws) of Wp / 16.
  const int kg = cg % T::kKeyGroups, ws = cg / T::kKeyGroups;
  const int steps = Wp / 16, split_steps = (steps + T::kWidthSplits - 1) / T::kWidthSplits;
  const int my_steps = min(split_steps, steps - ws * split_steps);  // may be <= 0 for narrow widths
  constexpr int kFixedSplitSteps = ((kR + kP) / 16 + T::kWidthSplits - 1) / T::kWidthSplits;
  const bf16* q_frag = qs + (16 * rg + lane % 8 + 8 * ((lane / 8) % 2)) * stride + 8 * (lane / 16) + 16 * ws * split_steps;
  const bf16* p_frag = ps + (16 * rg + lane % 8 + 8 * ((lane / 8) % 2)) * T::kProbStride + 8 * (lane / 16);
  for (int tile = tile_begin, it = 0; tile < tile_end; ++tile, ++it) {
    cp_async_wait<T::kStages - 2>();
    __syncthreads();  // this tile landed for every thread; the stage refilled next was consumed
    issue(tile + T::kStages - 1, (it + T::kStages - 1) % T::kStages, next_rows);
    next_rows = lookup(tile + T::kStages);
    const bf16* kt = ks + (it % T::kStages) * T::kKeys * stride;

    // Partial scores: sc[j][0..1] row_lo, sc[j][2..3] row_lo + 8; keys 32 kg + 8 j + 2 tig (+1).
    // Each k-step: one Q fragment, two K loads (8-key tiles j, j + 1: matrix m = lane / 8 holds
    // keys + 8 (m / 2), columns + 8 (m % 2)), four independent mma chains.
    float sc[4][4] = {};
    const bf16* k_frag = kt + (T::kScoreKeys * kg + 8 * (lane / 16) + lane % 8) * stride + 8 * ((lane / 8) % 2) + 16 * ws * split_steps;
    auto score_step = [&](int step) {
      uint32_t a[4], b[4], c[4];
      ldmatrix_x4(a, q_frag + 16 * step);
      ldmatrix_x4(b, k_frag + 16 * step);
      ldmatrix_x4(c, k_frag + 16 * stride + 16 * step);
      mma_bf16(sc[0], a, b[0], b[1]);
      mma_bf16(sc[1], a, b[2], b[3]);
      mma_bf16(sc[2], a, c[0], c[1]);
      mma_bf16(sc[3], a, c[2], c[3]);
    };
    if constexpr (kR > 0) {
#pragma unroll
      for (int step = 0; step < kFixedSplitSteps; ++step) score_step(step);
    } else {
      for (int step = 0; step < my_steps; ++step) score_step(step);
    }
    float* my_part = s_part + ws * T::kHeads * T::kScoreStride + T::kScoreKeys * kg + 2 * tig;
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half)
        *reinterpret_cast<float2*>(my_part + (row_lo + 8 * half) * T::kScoreStride + 8 * j) = make_float2(sc[j][2 * half], sc[j][2 * half + 1]);
    __syncthreads();  // every partial score of the tile

    {  // Online softmax: row `row`, keys key0 .. key0 + kSoftmaxKeys - 1 of the tile.
      constexpr int kN = T::kSoftmaxKeys;
      const int row = threadIdx.x / T::kRowThreads, key0 = threadIdx.x % T::kRowThreads * kN;
      float v[kN] = {};
#pragma unroll
      for (int w = 0; w < T::kWidthSplits; ++w)
#pragma unroll
        for (int e = 0; e < kN; e += 4) {
          const float4 part = *reinterpret_cast<const float4*>(s_part + (w * T::kHeads + row) * T::kScoreStride + key0 + e);
          v[e] += part.x;
          v[e + 1] += part.y;
          v[e + 2] += part.z;
          v[e + 3] += part.w;
        }
      float mx = -INFINITY;
#pragma unroll
      for (int e = 0; e < kN; ++e) {
        v[e] = tile * T::kKeys + key0 + e < visible ? v[e] * scale : -INFINITY;
        mx = fmaxf(mx, v[e]);
      }
#pragma unroll
      for (int offset = 1; offset < T::kRowThreads; offset *= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, offset));
      const float m_old = row_m[row], m_new = fmaxf(m_old, mx);  // finite: a tile's first key is visible
      float sum = 0.0f;
      uint32_t packed[kN / 2];
#pragma unroll
      for (int e = 0; e < kN; e += 2) {
        const float p0 = exp2f(v[e] - m_new), p1 = exp2f(v[e + 1] - m_new);
        sum += p0 + p1;
        packed[e / 2] = pack_bf16(p0, p1);
      }
      bf16* p_row = ps + row * T::kProbStride + key0;
      if constexpr (kN == 8) *reinterpret_cast<uint4*>(p_row) = make_uint4(packed[0], packed[1], packed[2], packed[3]);
      else *reinterpret_cast<uint2*>(p_row) = make_uint2(packed[0], packed[1]);
#pragma unroll
      for (int offset = 1; offset < T::kRowThreads; offset *= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
      __syncwarp();  // every thread of the row has read row_m before its first thread rewrites it
      if (threadIdx.x % T::kRowThreads == 0) {
        const float alpha = exp2f(m_old - m_new);
        row_alpha[row] = alpha;
        row_l[row] = row_l[row] * alpha + sum;
        row_m[row] = m_new;
      }
    }
    __syncthreads();  // P and the rescale factors of the whole tile
    const float alpha[2] = {row_alpha[row_lo], row_alpha[row_lo + 8]};
    if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f))  // once the maxima settle, rarely
#pragma unroll
      for (int i = 0; i < T::kPairs; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          o[i][j][0] *= alpha[0];
          o[i][j][1] *= alpha[0];
          o[i][j][2] *= alpha[1];
          o[i][j][3] *= alpha[1];
        }

    // O += P V: value fragments of column tiles nt, nt + 1 from one transposed load (matrix
    // m = lane / 8: keys + 8 (m % 2), columns + 8 (m / 2)). With an odd number of column tiles
    // the last load reads k_pe columns for the partner and that mma is skipped.
#pragma unroll
    for (int k = 0; k < T::kKeys / 16; ++k) {
      uint32_t a[4];
      ldmatrix_x4(a, p_frag + 16 * k);
      const bf16* v_frag = kt + (16 * k + 8 * ((lane / 8) % 2) + lane % 8) * stride + 8 * (lane / 16);
#pragma unroll
      for (int i = 0; i < T::kPairs; ++i) {
        const int nt = 2 * (cg + T::kColGroups * i);
        if (nt < col_tiles) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, v_frag + 8 * nt);
          mma_bf16(o[i][0], a, b[0], b[1]);
          if (nt + 1 < col_tiles) mma_bf16(o[i][1], a, b[2], b[3]);
        }
      }
    }
  }

  // row_m / row_l are final: the last tile's softmax came before its last block barrier.
  const float l[2] = {row_l[row_lo], row_l[row_lo + 8]};

  // The normalized output, or this slice's unnormalized sums and (max, sum) for the merge.
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row_lo + 8 * half, h = h0 + row;
    if (h >= H) continue;
    const float inv = 1.0f / l[half];
#pragma unroll
    for (int i = 0; i < T::kPairs; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int nt = 2 * (cg + T::kColGroups * i) + j;
        if (nt >= col_tiles) continue;
        const int col = 8 * nt + 2 * tig;
        const float v0 = o[i][j][2 * half], v1 = o[i][j][2 * half + 1];
        if (splits == 1) *reinterpret_cast<uint32_t*>(p.out + (t * H + h) * R + col) = pack_bf16(v0 * inv, v1 * inv);
        else *reinterpret_cast<float2*>(partial_slot(row) + col) = make_float2(v0, v1);
      }
    if (splits > 1 && cg == 0 && tig == 0) {
      partial_slot(row)[R] = row_m[row];
      partial_slot(row)[R + 1] = l[half];
    }
  }
}

// Heads per block: 64 with many heads (V3/R1's 128: two blocks a token); fewer when there are
// fewer, so small head counts (a tensor-parallel slice, V2-Lite's 16) waste no mma rows.
using MlaTiling64 = MlaTiling<4, 2, 32, 3>;  // 208 KB of shared memory at W = 576 (32: 205 KB, 16: 185 KB)
using MlaTiling32 = MlaTiling<2, 4, 64, 2>;
using MlaTiling16 = MlaTiling<1, 8, 64, 2>;
// 16 heads at long contexts and batches of 8 or more: 4 warps and 2 stages of 32 keys (103 KB), so
// two blocks share a multiprocessor and twice the tiles are in flight (H200, V3 widths, 16 heads x
// 8k: batch 64 0.175 vs 0.188 ms, batch 128 0.324 vs 0.343; batch 1 0.040 vs 0.037, and short
// contexts favour the 64-key tiles).
using MlaTiling16Narrow = MlaTiling<1, 4, 32, 2>;

template <class T, int kR, int kP>
void launch_mla_decode_mma(const MlaAttentionParams& p, cudaStream_t stream) {
  const size_t shared = mla_tile_shared_bytes<T>(static_cast<int>(p.kv_rank + p.rope_dim));
  static size_t opted_in = 48 * 1024;
  if (shared > opted_in) {
    SS_CUDA_CHECK(cudaFuncSetAttribute(mla_decode_mma_kernel<T, kR, kP>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)));
    opted_in = shared;
  }
  const int64_t groups = (p.n_heads + T::kHeads - 1) / T::kHeads;
  launch_with_shared(mla_decode_mma_kernel<T, kR, kP>, static_cast<unsigned>(p.n_tokens * p.n_splits * groups), T::kThreads, shared, stream, p);
  SS_CUDA_CHECK_LAUNCH();
}

template <class T>
void launch_mla_decode_mma(const MlaAttentionParams& p, cudaStream_t stream) {
  if (p.kv_rank == 512 && p.rope_dim == 64) launch_mla_decode_mma<T, 512, 64>(p, stream);  // DeepSeek V2, V2-Lite, V3, R1
  else launch_mla_decode_mma<T, 0, 0>(p, stream);
}

}  // namespace

bool mla_two_blocks_per_sm(int64_t n_tokens, int64_t n_heads, int64_t max_positions) {
  return mla_heads_per_block(n_heads) == 16 && n_tokens >= 8 && max_positions >= 2048;
}

int64_t mla_heads_per_block(int64_t n_heads) { return n_heads > 32 ? 64 : n_heads > 16 ? 32 : 16; }

void mla_attention_tensor_cores(const MlaAttentionParams& p, cudaStream_t stream) {
  switch (mla_heads_per_block(p.n_heads)) {
    case 64: return launch_mla_decode_mma<MlaTiling64>(p, stream);
    case 32: return launch_mla_decode_mma<MlaTiling32>(p, stream);
    default:
      if (mla_two_blocks_per_sm(p.n_tokens, p.n_heads, p.table_stride * p.block_size)) return launch_mla_decode_mma<MlaTiling16Narrow>(p, stream);
      return launch_mla_decode_mma<MlaTiling16>(p, stream);
  }
}

}  // namespace seekserve::cuda
