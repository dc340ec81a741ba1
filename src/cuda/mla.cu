// Multi-head latent attention on the GPU, absorbed form (declared in deepseek_kernels.h): the
// cache keeps the normalized latent c_kv [R] and the rotated shared key k_pe [P] per token; the
// query is folded into the latent space per head before attention and the output unfolded after.
#include <algorithm>
#include <cfloat>
#include <cstdlib>

#include "cuda/deepseek_kernels.h"
#include "cuda/kernel_support.cuh"
#include "cuda/mla_support.cuh"

namespace seekserve::cuda {

using namespace detail;

namespace {

// One block per token: the q_a norm, the c_kv norm and the k_pe rotation, written to the cache.
__global__ void mla_prepare_kernel(MlaPrepareParams p) {
  dependency_wait();
  const int64_t t = blockIdx.x;
  const float* row = p.proj + t * p.proj_stride;
  if (p.q_rank > 0) {
    float sum_sq = 0.0f;
    for (int64_t k = threadIdx.x; k < p.q_rank; k += blockDim.x) sum_sq = fmaf(row[k], row[k], sum_sq);
    const float inv = rms_inverse(block_sum(sum_sq), p.q_rank, p.eps);
    for (int64_t k = threadIdx.x; k < p.q_rank; k += blockDim.x)
      p.q_normed[t * p.q_rank + k] = __float2bfloat16_rn(rms_scaled(p.q_norm[k], row[k], inv));
  }
  const float* kv = row + p.q_rank;
  const int64_t R = p.kv_rank, P = p.rope_dim, slot = p.slots[t];
  float sum_sq = 0.0f;
  for (int64_t k = threadIdx.x; k < R; k += blockDim.x) sum_sq = fmaf(kv[k], kv[k], sum_sq);
  const float inv = rms_inverse(block_sum(sum_sq), R, p.eps);
  for (int64_t k = threadIdx.x; k < R; k += blockDim.x) p.c_kv_pool[slot * R + k] = __float2bfloat16_rn(rms_scaled(p.kv_norm[k], kv[k], inv));
  const float* c = p.cos + static_cast<int64_t>(p.positions[t]) * (P / 2);
  const float* s = p.sin + static_cast<int64_t>(p.positions[t]) * (P / 2);
  for (int64_t i = threadIdx.x; i < P / 2; i += blockDim.x) {
    const float a = kv[R + 2 * i], b = kv[R + 2 * i + 1];
    p.k_pe_pool[slot * P + 2 * i] = __float2bfloat16_rn(a * c[i] - b * s[i]);
    p.k_pe_pool[slot * P + 2 * i + 1] = __float2bfloat16_rn(b * c[i] + a * s[i]);
  }
}

// ---- attention ----
// Block = (token, slice of its positions) x (group of 16 heads); 8 warps of 2 heads each. Keys
// come in tiles of 32 positions staged in shared memory as [c_kv | k_pe] rows (bf16 pairs, rows
// padded to an odd number of words: lane j reads row j without bank conflicts). Scores: lane j
// dots key j with the warp's two queries (float, shared memory broadcasts); online softmax per
// head across the warp; then each lane accumulates its kCols latent columns (lane + 32 i) over
// the tile's keys, the probabilities passed by shuffles. Every head of the token shares each
// cache read.
constexpr int kMlaThreads = 256, kMlaHeads = 16, kMlaTile = 32;
constexpr float kLog2e = 1.4426950408889634f;

__host__ __device__ inline int mla_row_words(int width) {
  const int words = width / 2;
  return words % 2 == 0 ? words + 1 : words;
}

template <int kCols>
__global__ void __launch_bounds__(kMlaThreads) mla_attention_kernel(MlaAttentionParams p) {
  dependency_wait();
  extern __shared__ __align__(16) float mla_smem[];
  const int R = static_cast<int>(p.kv_rank), P = static_cast<int>(p.rope_dim), W = R + P, H = static_cast<int>(p.n_heads);
  const int row_words = mla_row_words(W);
  float* qs = mla_smem;                                               // [16][W]
  uint32_t* ks = reinterpret_cast<uint32_t*>(mla_smem + kMlaHeads * W);  // [32][row_words]
  const int splits = static_cast<int>(p.n_splits);
  const int64_t t = blockIdx.x / splits;
  const int split = static_cast<int>(blockIdx.x % splits);
  const int h0 = static_cast<int>(blockIdx.y) * kMlaHeads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int pos = p.positions[t];
  const int32_t* table = p.block_tables + static_cast<int64_t>(p.token_seq[t]) * p.table_stride;
  const int block_size = static_cast<int>(p.block_size);

  // Queries: q_latent as stored (16-byte loads), q_pe rotated here (interleaved pairs).
  for (int idx = threadIdx.x; idx < kMlaHeads * (R / 8); idx += kMlaThreads) {
    const int hh = idx / (R / 8), c = idx % (R / 8), h = h0 + hh;
    float v[8] = {};
    if (h < H) bf16x8_to_float(reinterpret_cast<const uint4*>(p.q_latent + (t * H + h) * R)[c], v);
#pragma unroll
    for (int j = 0; j < 8; ++j) qs[hh * W + 8 * c + j] = v[j];
  }
  for (int idx = threadIdx.x; idx < kMlaHeads * (P / 2); idx += kMlaThreads) {
    const int hh = idx / (P / 2), j = idx % (P / 2);
    const float2 r = rotated_q_pe(p, t, h0 + hh, j, pos);
    qs[hh * W + R + 2 * j] = r.x;
    qs[hh * W + R + 2 * j + 1] = r.y;
  }

  const int visible = pos + 1;
  const int tiles = (visible + kMlaTile - 1) / kMlaTile;
  const int per_split = (tiles + splits - 1) / splits;
  const int tile_begin = split * per_split, tile_end = min(tiles, tile_begin + per_split);
  const float scale = p.scale * kLog2e;  // scores in the log2 domain
  const int ha = 2 * warp, hb = 2 * warp + 1;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;
  float o_a[kCols] = {}, o_b[kCols] = {};
  const int half_w = W / 2;
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    __syncthreads();  // queries staged / the previous tile consumed
    // 8 threads a key row, each loading its 16-byte pieces of [c_kv | k_pe] before storing any.
    {
      const int r = threadIdx.x / 8, part = threadIdx.x % 8, s = tile * kMlaTile + r;
      const int pieces = W / 8, r_pieces = R / 8;
      const uint4* c_kv_row = nullptr;
      const uint4* k_pe_row = nullptr;
      if (s < visible) {
        const int64_t row = static_cast<int64_t>(table[s / block_size]) * block_size + s % block_size;
        c_kv_row = reinterpret_cast<const uint4*>(p.c_kv_pool + row * R);
        k_pe_row = reinterpret_cast<const uint4*>(p.k_pe_pool + row * P);
      }
      constexpr int kPiecesPerThread = (512 + 64) / 8 / 8;  // up to R + P = 576
      uint4 piece[kPiecesPerThread];
#pragma unroll
      for (int i = 0; i < kPiecesPerThread; ++i) {
        const int c = part + 8 * i;
        piece[i] = make_uint4(0, 0, 0, 0);
        if (c_kv_row && c < pieces) piece[i] = c < r_pieces ? c_kv_row[c] : k_pe_row[c - r_pieces];
      }
#pragma unroll
      for (int i = 0; i < kPiecesPerThread; ++i) {
        const int c = part + 8 * i;
        if (c < pieces) {
          uint32_t* dst = ks + r * row_words + 4 * c;
          dst[0] = piece[i].x;
          dst[1] = piece[i].y;
          dst[2] = piece[i].z;
          dst[3] = piece[i].w;
        }
      }
    }
    __syncthreads();
    const uint32_t* key = ks + lane * row_words;
    const float* qa = qs + ha * W;
    const float* qb = qs + hb * W;
    float sa = 0.0f, sb = 0.0f;
#pragma unroll 4
    for (int c2 = 0; c2 < half_w; ++c2) {
      const uint32_t word = key[c2];
      const float2 kf = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&word));
      const float2 fa = *reinterpret_cast<const float2*>(qa + 2 * c2);
      const float2 fb = *reinterpret_cast<const float2*>(qb + 2 * c2);
      sa = fmaf(fa.x, kf.x, fmaf(fa.y, kf.y, sa));
      sb = fmaf(fb.x, kf.x, fmaf(fb.y, kf.y, sb));
    }
    const bool valid = tile * kMlaTile + lane < visible;
    sa = valid ? sa * scale : -INFINITY;
    sb = valid ? sb * scale : -INFINITY;
    const float new_a = fmaxf(m_a, warp_max(sa)), new_b = fmaxf(m_b, warp_max(sb));  // finite: key 0 of a tile is visible
    const float alpha_a = exp2f(m_a - new_a), alpha_b = exp2f(m_b - new_b);
    const float pa = exp2f(sa - new_a), pb = exp2f(sb - new_b);
    l_a = l_a * alpha_a + warp_sum(pa);
    l_b = l_b * alpha_b + warp_sum(pb);
    m_a = new_a;
    m_b = new_b;
#pragma unroll
    for (int i = 0; i < kCols; ++i) {
      o_a[i] *= alpha_a;
      o_b[i] *= alpha_b;
    }
    const int keys = min(kMlaTile, visible - tile * kMlaTile);
    for (int r = 0; r < keys; ++r) {
      const float wa = __shfl_sync(0xffffffffu, pa, r), wb = __shfl_sync(0xffffffffu, pb, r);
      const bf16* c_kv = reinterpret_cast<const bf16*>(ks + r * row_words);
#pragma unroll
      for (int i = 0; i < kCols; ++i) {
        const int col = lane + 32 * i;
        if (col < R) {
          const float v = __bfloat162float(c_kv[col]);
          o_a[i] = fmaf(wa, v, o_a[i]);
          o_b[i] = fmaf(wb, v, o_b[i]);
        }
      }
    }
  }

  // Write the normalized output, or this slice's unnormalized sums and (max, sum) for the merge.
  auto write = [&](int hh, const float* o, float m, float l) {
    const int h = h0 + hh;
    if (h >= H) return;
    if (splits == 1) {
      const float inv = 1.0f / l;
#pragma unroll
      for (int i = 0; i < kCols; ++i)
        if (lane + 32 * i < R) p.out[(t * H + h) * R + lane + 32 * i] = __float2bfloat16_rn(o[i] * inv);
      return;
    }
    float* slot = p.partial + ((t * H + h) * splits + split) * (R + 2);
#pragma unroll
    for (int i = 0; i < kCols; ++i)
      if (lane + 32 * i < R) slot[lane + 32 * i] = o[i];
    if (lane == 0) {
      slot[R] = m;
      slot[R + 1] = l;
    }
  };
  write(ha, o_a, m_a, l_a);
  write(hb, o_b, m_b, l_b);
}

// One block per (token, head): weights each slice by exp2(m_s - max) and normalizes.
__global__ void mla_merge_kernel(const float* partial, int64_t splits, int64_t R, bf16* out) {
  dependency_wait();
  const float* base = partial + static_cast<int64_t>(blockIdx.x) * splits * (R + 2);
  float m = -INFINITY;
  for (int64_t s = 0; s < splits; ++s) m = fmaxf(m, base[s * (R + 2) + R]);
  float l = 0.0f;
  for (int64_t s = 0; s < splits; ++s) {
    const float ms = base[s * (R + 2) + R];
    if (ms != -INFINITY) l += exp2f(ms - m) * base[s * (R + 2) + R + 1];
  }
  for (int64_t c = threadIdx.x; c < R; c += blockDim.x) {
    float v = 0.0f;
    for (int64_t s = 0; s < splits; ++s) {
      const float ms = base[s * (R + 2) + R];
      if (ms != -INFINITY) v = fmaf(exp2f(ms - m), base[s * (R + 2) + c], v);
    }
    out[static_cast<int64_t>(blockIdx.x) * R + c] = __float2bfloat16_rn(v / l);
  }
}

template <int kCols>
void launch_mla_attention(const MlaAttentionParams& p, cudaStream_t stream) {
  const int W = static_cast<int>(p.kv_rank + p.rope_dim);
  const size_t shared = static_cast<size_t>(kMlaHeads * W) * 4 + static_cast<size_t>(kMlaTile * mla_row_words(W)) * 4;
  static size_t opted_in = 48 * 1024;
  if (shared > opted_in) {
    SS_CUDA_CHECK(cudaFuncSetAttribute(mla_attention_kernel<kCols>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)));
    opted_in = shared;
  }
  const dim3 grid(static_cast<unsigned>(p.n_tokens * p.n_splits), static_cast<unsigned>((p.n_heads + kMlaHeads - 1) / kMlaHeads));
  launch_with_shared(mla_attention_kernel<kCols>, grid, kMlaThreads, shared, stream, p);
  SS_CUDA_CHECK_LAUNCH();
}

void launch_mla_attention_cuda_cores(const MlaAttentionParams& p, cudaStream_t stream) {
  const int64_t cols = (p.kv_rank + 31) / 32;
  if (cols <= 1) launch_mla_attention<1>(p, stream);
  else if (cols <= 2) launch_mla_attention<2>(p, stream);
  else if (cols <= 4) launch_mla_attention<4>(p, stream);
  else if (cols <= 8) launch_mla_attention<8>(p, stream);
  else launch_mla_attention<16>(p, stream);
}


}  // namespace

void mla_prepare(const MlaPrepareParams& p, cudaStream_t stream) {
  if (p.n_tokens == 0) return;
  launch(mla_prepare_kernel, static_cast<unsigned>(p.n_tokens), 256, stream, p);
  SS_CUDA_CHECK_LAUNCH();
}

bool mla_attention_supported(int64_t kv_rank, int64_t rope_dim) {
  return kv_rank > 0 && rope_dim > 0 && kv_rank % 8 == 0 && rope_dim % 8 == 0 && kv_rank + rope_dim <= 576;
}

int64_t mla_splits(int64_t n_tokens, int64_t n_heads, int64_t max_positions) {
  // Blocks of the tensor-core kernel (one resident a multiprocessor: 185-208 KB of shared memory at
  // V3's widths; two for the 103 KB 16-head blocks of long contexts): the fewest slices that fill
  // the last wave of those slots to >= 90%, slices of at least 256 positions (H200, V3 widths,
  // batch 1 x 8k: 32 slices 0.060 ms, 60 slices of 137 positions 0.074, 16 slices 0.077; 16 heads
  // 0.038 / 0.048 / 0.040).
  const int64_t base = n_tokens * ((n_heads + mla_heads_per_block(n_heads) - 1) / mla_heads_per_block(n_heads));
  const int64_t most = std::max<int64_t>(1, max_positions / 256);
  int64_t best = 1;
  double best_fill = 0.0;
  const int64_t slots = mla_two_blocks_per_sm(n_tokens, n_heads, max_positions) ? 2 * 132 : 132;
  for (int64_t s = 1; s <= most; ++s) {
    const int64_t blocks = base * s, waves = (blocks + slots - 1) / slots;
    const double fill = static_cast<double>(blocks) / static_cast<double>(waves * slots);
    if (fill > best_fill + 1e-9) {
      best = s;
      best_fill = fill;
    }
    if (fill >= 0.9) break;
  }
  return best;
}

MlaKernel default_mla_kernel() {
  static const MlaKernel kernel = std::getenv("SEEKSERVE_CUDA_MLA_SIMT") ? MlaKernel::kCudaCores : MlaKernel::kTensorCores;
  return kernel;
}

void mla_attention(const MlaAttentionParams& p, cudaStream_t stream, MlaKernel kernel) {
  if (p.n_tokens == 0) return;
  if (!mla_attention_supported(p.kv_rank, p.rope_dim)) fail("mla_attention: unsupported latent width", cudaErrorInvalidValue, __FILE__, __LINE__);
  if (kernel == MlaKernel::kTensorCores) mla_attention_tensor_cores(p, stream);
  else launch_mla_attention_cuda_cores(p, stream);
  if (p.n_splits > 1) {
    launch(mla_merge_kernel, static_cast<unsigned>(p.n_tokens * p.n_heads), 128, stream, static_cast<const float*>(p.partial), p.n_splits,
           p.kv_rank, p.out);
    SS_CUDA_CHECK_LAUNCH();
  }
}


}  // namespace seekserve::cuda

// ---- prefill through GEMMs ----

namespace seekserve::cuda {

namespace {

// One block per key position: its c_kv | k_pe row into keys, and c_kv into column s of c_kv_t.
__global__ void mla_gather_kernel(const bf16* c_kv_pool, const bf16* k_pe_pool, const int32_t* table, int64_t block_size, int64_t L,
                                  int64_t R, int64_t P, bf16* keys, bf16* c_kv_t, int64_t L_pad) {
  dependency_wait();
  const int64_t s = blockIdx.x;
  const bool valid = s < L;
  const int64_t row = valid ? static_cast<int64_t>(table[s / block_size]) * block_size + s % block_size : 0;
  const bf16 zero = __float2bfloat16_rn(0.0f);
  for (int64_t c = threadIdx.x; c < R + P; c += blockDim.x) {
    const bf16 v = !valid ? zero : c < R ? c_kv_pool[row * R + c] : k_pe_pool[row * P + c - R];
    keys[s * (R + P) + c] = v;
    if (c < R) c_kv_t[c * L_pad + s] = v;
  }
}

// One block per (token, head) row.
__global__ void mla_prefill_queries_kernel(const bf16* q_latent, const float* q, int64_t q_stride, int64_t q_head_stride,
                                           int64_t q_pe_offset, const int32_t* positions, const float* cos, const float* sin, int64_t H,
                                           int64_t R, int64_t P, bf16* out) {
  dependency_wait();
  const int64_t t = blockIdx.x / H, h = blockIdx.x % H;
  bf16* dst = out + static_cast<int64_t>(blockIdx.x) * (R + P);
  for (int64_t c = threadIdx.x; c < R; c += blockDim.x) dst[c] = q_latent[(t * H + h) * R + c];
  const float* cs = cos + static_cast<int64_t>(positions[t]) * (P / 2);
  const float* sn = sin + static_cast<int64_t>(positions[t]) * (P / 2);
  const float* qp = q + t * q_stride + h * q_head_stride + q_pe_offset;
  for (int64_t j = threadIdx.x; j < P / 2; j += blockDim.x) {
    const float a = qp[2 * j], b = qp[2 * j + 1];
    dst[R + 2 * j] = __float2bfloat16_rn(a * cs[j] - b * sn[j]);
    dst[R + 2 * j + 1] = __float2bfloat16_rn(b * cs[j] + a * sn[j]);
  }
}

// One block per row (t, h): masked, scaled softmax over its keys, as bf16 probabilities.
__global__ void mla_prefill_softmax_kernel(const float* scores, int64_t H, int64_t L_pad, int64_t first_position, float scale,
                                           bf16* probs) {
  dependency_wait();
  __shared__ float reduce[32];
  const int64_t r = blockIdx.x, t = r / H;
  const int64_t visible = first_position + t + 1;
  const float* row = scores + r * L_pad;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  float m = -INFINITY;
  for (int64_t s = threadIdx.x; s < visible; s += blockDim.x) m = fmaxf(m, row[s] * scale);
  m = warp_max(m);
  if (lane == 0) reduce[warp] = m;
  __syncthreads();
  m = lane < warps ? reduce[lane] : -INFINITY;
  m = warp_max(m);
  __syncthreads();
  float sum = 0.0f;
  for (int64_t s = threadIdx.x; s < visible; s += blockDim.x) sum += expf(row[s] * scale - m);
  sum = warp_sum(sum);
  if (lane == 0) reduce[warp] = sum;
  __syncthreads();
  sum = lane < warps ? reduce[lane] : 0.0f;
  sum = warp_sum(sum);
  const float inv = 1.0f / sum;
  for (int64_t s = threadIdx.x; s < L_pad; s += blockDim.x)
    probs[r * L_pad + s] = __float2bfloat16_rn(s < visible ? expf(row[s] * scale - m) * inv : 0.0f);
}

}  // namespace

void mla_gather_latent(const bf16* c_kv_pool, const bf16* k_pe_pool, const int32_t* block_table, int64_t block_size, int64_t L,
                       int64_t L_pad, int64_t R, int64_t P, bf16* keys, bf16* c_kv_t, cudaStream_t stream) {
  launch(mla_gather_kernel, static_cast<unsigned>(L_pad), 256, stream, c_kv_pool, k_pe_pool, block_table, block_size, L, R, P, keys, c_kv_t,
         L_pad);
  SS_CUDA_CHECK_LAUNCH();
}

void mla_prefill_queries(const bf16* q_latent, const float* q, int64_t q_stride, int64_t q_head_stride, int64_t q_pe_offset,
                         const int32_t* positions, const float* cos, const float* sin, int64_t n, int64_t H, int64_t R, int64_t P,
                         bf16* out, cudaStream_t stream) {
  if (n == 0) return;
  launch(mla_prefill_queries_kernel, static_cast<unsigned>(n * H), 128, stream, q_latent, q, q_stride, q_head_stride, q_pe_offset, positions,
         cos, sin, H, R, P, out);
  SS_CUDA_CHECK_LAUNCH();
}

void mla_prefill_softmax(const float* scores, int64_t n, int64_t H, int64_t L_pad, int64_t first_position, float scale, bf16* probs,
                         cudaStream_t stream) {
  if (n == 0) return;
  launch(mla_prefill_softmax_kernel, static_cast<unsigned>(n * H), 256, stream, scores, H, L_pad, first_position, scale, probs);
  SS_CUDA_CHECK_LAUNCH();
}

}  // namespace seekserve::cuda
