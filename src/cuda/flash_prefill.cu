// Prefill attention on tensor cores over the paged KV cache; declared in kernels.h.
//
// FlashAttention-2 style with mma.sync m16n8k16 (bf16 in, float32 accumulate): a block of 4
// warps takes up to 64 query rows of one sequence and one head; each warp owns 16 rows and keeps
// their scores, running max and sum, and output in registers while the block streams the
// sequence's keys and values (gathered through its block table) 64 positions at a time through
// shared memory. The next tile is copied in (cp.async) while the current one is multiplied, and
// the mma operands come from shared memory through ldmatrix (values transposed on the way), so
// tensor cores wait neither on global memory nor on scalar shared loads. Scores are kept in
// base 2 (scale * log2 e folded into q).
#include <cfloat>

#include "cuda/kernel_support.cuh"
#include "cuda/mma_support.cuh"

namespace seekserve::cuda {

using namespace detail;

namespace {

constexpr int kFlashKeys = 64;     // key positions per shared-memory tile
constexpr int kFlashThreads = 128;  // 4 warps x 16 query rows

template <int D>
__global__ void __launch_bounds__(kFlashThreads, 3) flash_prefill_kernel(AttentionParams p, const int32_t* tiles, int n_tiles) {
  dependency_wait();
  constexpr int kSteps = D / 16;     // k-steps of Q K^T
  constexpr int kDimBlocks = D / 8;  // n-blocks of P V
  using Tiles = KvTiles<D, kFlashKeys>;
  constexpr int kRow = Tiles::kRow;
  extern __shared__ __align__(16) bf16 smem[];
  bf16* s_k = Tiles::keys(smem);
  bf16* s_v = Tiles::values(smem);

  // Tiles run last-first: the causal tiles far into a sequence take longest, start them early.
  const int tile = n_tiles - 1 - static_cast<int>(blockIdx.x);
  const int32_t seq = tiles[tile * 3], row0 = tiles[tile * 3 + 1], n_rows = tiles[tile * 3 + 2];
  const int64_t h = blockIdx.y, kvh = h / (p.n_heads / p.n_kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q4 = lane % 4;
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.table_stride;
  const int last_position = p.positions[row0 + n_rows - 1];  // positions grow within a chunk

  KvTileCopier<D, kFlashThreads, kFlashKeys> tiles_in(p, table, kvh, last_position + 1);
  tiles_in.look_up(0);
  tiles_in.copy(s_k, s_v, 0);
  tiles_in.look_up(kFlashKeys);

  // This thread's two rows (g and g + 8 of the warp's 16) and the positions they may see.
  const int r_lo = warp * 16 + g, r_hi = r_lo + 8;
  const int pos_lo = r_lo < n_rows ? p.positions[row0 + r_lo] : -1;
  const int pos_hi = r_hi < n_rows ? p.positions[row0 + r_hi] : -1;
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
  // The last key this warp's rows can see: key blocks past it are skipped (diagonal tiles).
  const int warp_last = p.positions[row0 + min(warp * 16 + 15, static_cast<int>(n_rows) - 1)];

  const int n_key_tiles = last_position / kFlashKeys + 1;
  for (int kt = 0; kt < n_key_tiles; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < n_key_tiles) {
      tiles_in.copy(s_k, s_v, buf ^ 1);
      tiles_in.look_up((kt + 2) * kFlashKeys);  // consumed next iteration
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // this tile has landed for every thread
    const int key0 = kt * kFlashKeys;
    const bf16* k_tile = s_k + buf * kFlashKeys * kRow;
    const bf16* v_tile = s_v + buf * kFlashKeys * kRow;
    if (key0 <= warp_last && warp * 16 < n_rows) {
      // S = Q K^T for this warp's 16 rows x 64 keys: 8 n-blocks of 8 keys, k-steps outermost
      // so consecutive mmas are independent.
      float sc[kFlashKeys / 8][4] = {};
#pragma unroll
      for (int ks = 0; ks < kSteps; ++ks) {
        uint32_t b[kFlashKeys / 8][2];
#pragma unroll
        for (int nb = 0; nb < kFlashKeys / 8; ++nb)
          ldmatrix_x2(b[nb][0], b[nb][1], k_tile + (nb * 8 + lane % 8) * kRow + ks * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
        for (int nb = 0; nb < kFlashKeys / 8; ++nb) mma_bf16(sc[nb], qa[ks], b[nb][0], b[nb][1]);
      }
      // Causal mask, then the online softmax per row (a row's 64 scores live in one quad).
      float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
      for (int nb = 0; nb < kFlashKeys / 8; ++nb)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int s = key0 + nb * 8 + q4 * 2 + j;
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
      const float corr_lo = fast_exp2(m_lo - base_lo), corr_hi = fast_exp2(m_hi - base_hi);
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
        const float p0 = fast_exp2(sc[nb][0] - base_lo), p1 = fast_exp2(sc[nb][1] - base_lo);
        const float p2 = fast_exp2(sc[nb][2] - base_hi), p3 = fast_exp2(sc[nb][3] - base_hi);
        l_lo += p0 + p1;
        l_hi += p2 + p3;
        // The score fragment of n-blocks 2k and 2k+1 is the A fragment of keys 16k..16k+15.
        pa[nb / 2][(nb % 2) * 2 + 0] = pack_bf16(p0, p1);
        pa[nb / 2][(nb % 2) * 2 + 1] = pack_bf16(p2, p3);
      }
      // O += P V: one transposed ldmatrix gives the B fragments of two value column blocks.
#pragma unroll
      for (int kk = 0; kk < kFlashKeys / 16; ++kk) {
#pragma unroll
        for (int db = 0; db < kDimBlocks; db += 2) {
          uint32_t b[4];
          const int j = lane / 8;  // matrix j: keys +8 (j % 2), columns +8 (j / 2)
          ldmatrix_x4_trans(b, v_tile + (kk * 16 + (j % 2) * 8 + lane % 8) * kRow + (db + j / 2) * 8);
          mma_bf16(o[db], pa[kk], b[0], b[1]);
          mma_bf16(o[db + 1], pa[kk], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with this buffer before the next load overwrites it
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

template <int D>
void launch_flash_prefill(const AttentionParams& p, const int32_t* tiles, int64_t n_tiles, cudaStream_t stream) {
  static const bool configured = [] {  // above 48 KiB of shared memory a kernel must ask for it
    SS_CUDA_CHECK(cudaFuncSetAttribute(flash_prefill_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(KvTiles<D, kFlashKeys>::kSharedBytes)));
    return true;
  }();
  (void)configured;
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(p.n_heads));
  launch_with_shared(flash_prefill_kernel<D>, grid, kFlashThreads, KvTiles<D, kFlashKeys>::kSharedBytes, stream, p, tiles, static_cast<int>(n_tiles));
}

}  // namespace

bool attention_prefill_supported(int64_t head_dim) { return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128; }

void attention_prefill(const AttentionParams& p, const int32_t* tiles, int64_t n_tiles, cudaStream_t stream) {
  if (n_tiles == 0) return;
  switch (p.head_dim) {
    case 16: launch_flash_prefill<16>(p, tiles, n_tiles, stream); break;
    case 32: launch_flash_prefill<32>(p, tiles, n_tiles, stream); break;
    case 64: launch_flash_prefill<64>(p, tiles, n_tiles, stream); break;
    case 128: launch_flash_prefill<128>(p, tiles, n_tiles, stream); break;
    default: fail("attention_prefill: unsupported head_dim", cudaErrorInvalidValue, __FILE__, __LINE__);
  }
  SS_CUDA_CHECK_LAUNCH();
}

}  // namespace seekserve::cuda
