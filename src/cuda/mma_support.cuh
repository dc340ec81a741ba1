// Tensor-core plumbing shared by the attention kernels on tensor cores (flash_prefill.cu,
// attention_mma.cu, mla_decode_mma.cu): shared-memory matrix loads, asynchronous global -> shared copies, exp2 and
// bf16 packing. mma_bf16 itself is in kernel_support.cuh. Included only by .cu files.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/kernels.h"

namespace seekserve::cuda::detail {

__device__ __forceinline__ uint32_t shared_address(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// Two 8x8 bf16 matrices (rows given by lanes 0-7 and 8-15): lane i gets row i/4, columns
// 2(i%4) and 2(i%4)+1 of each — with keys as rows, the B fragment of Q K^T.
__device__ __forceinline__ void ldmatrix_x2(uint32_t& r0, uint32_t& r1, const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r0), "=r"(r1) : "r"(shared_address(row)));
}

// Four such matrices (rows given by lanes 0-7, 8-15, 16-23, 24-31).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}

// Four 8x8 matrices transposed: lane i gets rows 2(i%4), 2(i%4)+1 of column i/4 of each, the B
// fragment of P V with keys as rows.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}

// 16 bytes global -> shared without passing through registers; src_bytes 0 writes zeros.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Double-buffered tiles of kKeys cache rows of one KV head, keys and values D wide, in a block's
// dynamic shared memory: keys(smem) and values(smem) are [2][kKeys][kRow], rows padded by 16 bytes
// so the 8 rows an ldmatrix reads fall in distinct banks.
template <int D, int kKeys>
struct KvTiles {
  static constexpr int kRow = D + 8;  // shared row length in elements
  static constexpr size_t kSharedBytes = size_t{2} * 2 * kKeys * kRow * sizeof(bf16);  // {K, V} x 2 buffers
  __device__ static bf16* keys(bf16* smem) { return smem; }
  __device__ static bf16* values(bf16* smem) { return smem + 2 * kKeys * kRow; }
};

// Copies tiles of kKeys cache rows of one KV head into KvTiles buffers with kThreads threads: thread i moves 16-byte chunk i % (D / 8) of rows
// i / (D / 8) + j * kRowsPerPass. A tile's pool rows are looked up (look_up) ahead of its copy
// (copy), so the block-table reads are in flight behind other work instead of stalling the copy.
// Positions at or past `limit` are zero-filled. Positions fit in 32 bits: 64-bit division costs
// ~100 instructions a row.
template <int D, int kThreads, int kKeys>
struct KvTileCopier {
  static constexpr int kRow = KvTiles<D, kKeys>::kRow;
  static constexpr int kChunks = D / 8, kRowsPerPass = kThreads / kChunks, kPasses = kKeys / kRowsPerPass;
  const bf16* k_pool;
  const bf16* v_pool;
  const int32_t* table;  // the sequence's block table
  int block_size, limit;
  int64_t column;  // kvh * D + this thread's chunk
  int64_t kv_width;
  int my_row, my_col;
  int slots[kPasses];  // -1 at or past the limit

  __device__ KvTileCopier(const AttentionParams& p, const int32_t* table_, int64_t kvh, int limit_)
      : k_pool(p.k_pool), v_pool(p.v_pool), table(table_), block_size(static_cast<int>(p.block_size)), limit(limit_),
        kv_width(p.n_kv_heads * D), my_row(static_cast<int>(threadIdx.x) / kChunks), my_col((static_cast<int>(threadIdx.x) % kChunks) * 8) {
    column = kvh * D + my_col;
  }
  __device__ __forceinline__ void look_up(int key0) {
#pragma unroll
    for (int j = 0; j < kPasses; ++j) {
      const int s = key0 + my_row + j * kRowsPerPass;
      slots[j] = s < limit ? table[s / block_size] * block_size + s % block_size : -1;
    }
  }
  // The looked-up rows into buffer `buf` of s_k and s_v, as one commit group.
  __device__ __forceinline__ void copy(bf16* s_k, bf16* s_v, int buf) const {
#pragma unroll
    for (int j = 0; j < kPasses; ++j) {
      const int r = my_row + j * kRowsPerPass;
      const int64_t offset = static_cast<int64_t>(max(slots[j], 0)) * kv_width + column;
      cp_async_16(s_k + (buf * kKeys + r) * kRow + my_col, k_pool + offset, slots[j] >= 0 ? 16 : 0);
      cp_async_16(s_v + (buf * kKeys + r) * kRow + my_col, v_pool + offset, slots[j] >= 0 ? 16 : 0);
    }
    cp_async_commit();
  }
};

}  // namespace seekserve::cuda::detail
