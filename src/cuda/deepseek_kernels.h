// The CUDA kernels of DeepSeek's layers (mla.cu, moe.cu): multi-head latent attention over the
// paged latent cache in the absorbed form, and the mixture-of-experts routing and expert
// matmuls. Conventions as in kernels.h: activations row-major, one row per token, the residual
// stream float32, matmul inputs bf16, the cache bf16.
#pragma once

#include "cuda/kernels.h"

namespace seekserve::cuda {

// ---- MLA ---------------------------------------------------------------------------------

// Per token t, from the fused projection row proj[t] (stride proj_stride):
//   [q_a (q_rank) | c_kv (R) | k_pe (P)] when q_rank > 0, else [c_kv (R) | k_pe (P)];
// writes q_normed[t] = bf16(rms_norm(q_a) * q_norm) (q_rank > 0), and into pool row slots[t]:
// c_kv_pool = bf16(rms_norm(c_kv) * kv_norm), k_pe_pool = bf16(k_pe rotated on interleaved pairs
// by the tables cos/sin [positions, P/2] at positions[t]).
struct MlaPrepareParams {
  const float* proj = nullptr;
  int64_t proj_stride = 0;
  int64_t n_tokens = 0;
  int64_t q_rank = 0;
  const float* q_norm = nullptr;
  bf16* q_normed = nullptr;  // [n, q_rank]
  int64_t kv_rank = 0;       // R
  int64_t rope_dim = 0;      // P
  const float* kv_norm = nullptr;
  float eps = 1e-6f;
  const float* cos = nullptr;
  const float* sin = nullptr;
  const int32_t* positions = nullptr;
  const int32_t* slots = nullptr;
  bf16* c_kv_pool = nullptr;  // [rows, R]
  bf16* k_pe_pool = nullptr;  // [rows, P]
};
void mla_prepare(const MlaPrepareParams& p, cudaStream_t stream);

// Per-head matmul: out[t][h * M + m] = bf16(sum_k w[h * M + m][k] * x[t * x_token_stride +
// h * x_head_stride + k]) for heads h < H. w: [H * M, K] bf16 (K a multiple of 8, at most 512);
// x float32 or bf16. The absorbed
// MLA's q_nope -> q_latent (W_uk^T per head) and out_latent -> v (W_uv per head).
// The kernel: tensor cores where K is a multiple of 32 (float32 x as a bf16 head and tail; float32
// sums), or CUDA cores (float32 x as it is; other K, or SEEKSERVE_CUDA_HEAD_SIMT=1).
enum class HeadMatmulKernel { kCudaCores, kTensorCores };
HeadMatmulKernel default_head_matmul_kernel();
void head_matmul(const bf16* w, int64_t H, int64_t M, int64_t K, const float* x, int64_t x_token_stride, int64_t x_head_stride,
                 int64_t n, bf16* out, cudaStream_t stream, HeadMatmulKernel kernel = default_head_matmul_kernel());
void head_matmul(const bf16* w, int64_t H, int64_t M, int64_t K, const bf16* x, int64_t x_token_stride, int64_t x_head_stride,
                 int64_t n, bf16* out, cudaStream_t stream, HeadMatmulKernel kernel = default_head_matmul_kernel());

// Absorbed MLA attention for every token of the batch, all heads of a token sharing each cache
// read. Token t (sequence token_seq[t], position positions[t]) sees positions [0, positions[t]]
// through block_tables; score(h, s) = (q_latent[t, h] . c_kv[s] + rope(q_pe[t, h]) . k_pe[s]) *
// scale; out[t, h] = softmax-weighted sum of c_kv[s] (bf16, [n, H, R]). q_pe is read unrotated
// from the query projection (float32 rows q_stride apart, head h at h * q_head_stride +
// q_pe_offset) and rotated on load. Positions may be cut into n_splits slices merged after.
struct MlaAttentionParams {
  const bf16* q_latent = nullptr;  // [n, H, R]
  const float* q = nullptr;        // query projection rows
  int64_t q_stride = 0, q_head_stride = 0, q_pe_offset = 0;
  const bf16* c_kv_pool = nullptr;  // [rows, R]
  const bf16* k_pe_pool = nullptr;  // [rows, P]
  const int32_t* block_tables = nullptr;
  int64_t table_stride = 0;
  const int32_t* token_seq = nullptr;
  const int32_t* positions = nullptr;
  const float* cos = nullptr;  // RoPE tables [positions, P/2]
  const float* sin = nullptr;
  int64_t n_tokens = 0, n_heads = 0, kv_rank = 0, rope_dim = 0, block_size = 0;
  float scale = 1.0f;
  bf16* out = nullptr;  // [n, H, R]
  int64_t n_splits = 1;
  float* partial = nullptr;  // mla_partial_floats(...) floats when n_splits > 1
};
// Latent widths the kernel is built for (R and P multiples of 8, R + P <= 576).
bool mla_attention_supported(int64_t kv_rank, int64_t rope_dim);
// Slices per token so the grid fills the GPU: slices of at least 256 positions.
int64_t mla_splits(int64_t n_tokens, int64_t n_heads, int64_t max_positions);
inline int64_t mla_partial_floats(int64_t n_tokens, int64_t n_heads, int64_t n_splits, int64_t kv_rank) {
  return n_tokens * n_heads * n_splits * (kv_rank + 2);
}
// The kernel: tensor cores (mma.sync, up to 64 heads of a token a block; mla_decode_mma.cu), or
// CUDA cores (8 warps of 2 heads, float dot products; SEEKSERVE_CUDA_MLA_SIMT=1 picks it). H200,
// V3 widths, batch 64 x 8,192 positions, 128 heads: 0.78 vs 10.9 ms (2026-11-30, docs/PERF.md).
enum class MlaKernel { kCudaCores, kTensorCores };
MlaKernel default_mla_kernel();
inline const char* mla_kernel_name(MlaKernel k) {
  return k == MlaKernel::kCudaCores ? "cuda-cores" : "tensor-cores";
}
// Heads a block of the tensor-core kernel takes (16, 32 or 64) and that kernel (mla_decode_mma.cu).
int64_t mla_heads_per_block(int64_t n_heads);
// Whether that kernel runs two blocks a multiprocessor (16-head blocks, 8+ tokens, long contexts).
bool mla_two_blocks_per_sm(int64_t n_tokens, int64_t n_heads, int64_t max_positions);
void mla_attention_tensor_cores(const MlaAttentionParams& p, cudaStream_t stream);
void mla_attention(const MlaAttentionParams& p, cudaStream_t stream, MlaKernel kernel = default_mla_kernel());

// MLA prefill through GEMMs (a chunk of one sequence, absorbed form):
//  - mla_gather_latent: the sequence's cache rows of positions [0, L) into keys [L_pad, R + P]
//    (c_kv | k_pe) and c_kv transposed [R, L_pad], zero past L (block_table: the sequence's);
//  - mla_prefill_queries: rows (t, h) of [q_latent | rope(q_pe)] as bf16 [n * H, R + P] for
//    tokens [0, n) of the chunk (q_latent [n, H, R]; q_pe read unrotated as in MlaAttentionParams);
//  - mla_prefill_softmax: scores [rows, L_pad] float -> probabilities bf16, row (t, h) seeing keys
//    [0, first_position + t], scaled by `scale`.
void mla_gather_latent(const bf16* c_kv_pool, const bf16* k_pe_pool, const int32_t* block_table, int64_t block_size, int64_t L,
                       int64_t L_pad, int64_t R, int64_t P, bf16* keys, bf16* c_kv_t, cudaStream_t stream);
void mla_prefill_queries(const bf16* q_latent, const float* q, int64_t q_stride, int64_t q_head_stride, int64_t q_pe_offset,
                         const int32_t* positions, const float* cos, const float* sin, int64_t n, int64_t H, int64_t R, int64_t P,
                         bf16* out, cudaStream_t stream);
void mla_prefill_softmax(const float* scores, int64_t n, int64_t H, int64_t L_pad, int64_t first_position, float scale, bf16* probs,
                         cudaStream_t stream);

// ---- MoE ---------------------------------------------------------------------------------

// logits[t][e] = x[t] . router[e] in float32; x: [n, K] bf16, router: [E, K] float32.
void router_logits(const float* router, int64_t E, int64_t K, const bf16* x, int64_t n, float* logits, cudaStream_t stream);

// DeepSeek routing per token, as route_tokens (layers/moe.h) does on the host: ids and weights
// [n, top_k]. scoring: sigmoid (V3, with correction_bias and top-2 group scores) or softmax (V2,
// max group scores when group_limited).
struct MoeRouteParams {
  const float* logits = nullptr;  // [n, E]
  const float* correction_bias = nullptr;  // [E] or null
  int64_t n_tokens = 0, n_experts = 0, top_k = 0, n_group = 1, topk_group = 1;
  bool sigmoid = false;          // else softmax
  bool group_top2 = false;       // group score = sum of its two best (V3) instead of its best (V2)
  bool group_limited = false;    // mask all but the topk_group best groups
  bool normalize = false;        // divide the chosen weights by their sum (+1e-20)
  bool scale = true;             // multiply them by routed_scaling_factor
  float routed_scaling_factor = 1.0f;
  int32_t* ids = nullptr;        // [n, top_k]
  float* weights = nullptr;      // [n, top_k]
};
constexpr int64_t kMaxRoutedExperts = 256;
void moe_route(const MoeRouteParams& p, cudaStream_t stream);

// Groups the n * top_k (token, expert) pairs by expert: offsets [E + 1] (pairs of expert e are
// sorted[offsets[e] .. offsets[e + 1])), sorted [n * top_k] pair indices (t * top_k + j),
// active [E] the experts that received pairs in increasing order, n_active [1] their count.
// padded [E + 1] (optional): the same offsets with every expert's count rounded up to a multiple
// of kMoePadRows, the row layout of the GEMM path (moe_gather_rows).
constexpr int kMoePadRows = 16;
struct MoeGroups {
  int32_t* offsets = nullptr;
  int32_t* sorted = nullptr;
  int32_t* active = nullptr;
  int32_t* n_active = nullptr;
  int32_t* padded = nullptr;
};
void moe_group(const int32_t* ids, int64_t n_pairs, int64_t n_experts, const MoeGroups& groups, cudaStream_t stream);

// Which kernel runs the grouped expert matmuls: tensor cores (mma.sync, 16 weight rows x 8 pairs)
// at every size, bf16 and FP8. Since they read each lane's weights as 16-byte loads (moe.cu) they
// also win with one pair an expert: H200, V2-Lite bf16 decode batch 1 3.03 vs 3.40 ms a step,
// batch 8 7.96 vs 10.33 ms against the CUDA-core GEMV (2026-11-30; before, the GEMV won batch 1).
// SEEKSERVE_CUDA_MOE_GEMV=1 picks the CUDA-core GEMV (kept to compare).
enum class MoeKernel { kCudaCores, kTensorCores };
MoeKernel default_moe_kernel();

// Expert matmuls over the grouped pairs on tensor cores (K a multiple of 16), each selected
// expert's rows read once per group of up to 8 of its pairs; experts that received nothing cost
// nothing. max_active bounds the active experts (the grid; min(E, n * top_k)).
//   swiglu: act[p] = bf16(silu(x[p / top_k] . gate_e) * (x[p / top_k] . up_e)), w_gate_up
//           [E, 2I, K] (gate rows, then up rows per expert), x [n, K] bf16, act [n * top_k, I];
//   down:   out[p] = act[p] . down_e, w_down [E, M, I], out [n * top_k, M] float32.
void moe_gemv_swiglu(MoeKernel kernel, const bf16* w_gate_up, int64_t I, int64_t K, const bf16* x, int64_t top_k,
                     const MoeGroups& groups, int64_t max_active, bf16* act, cudaStream_t stream);
void moe_gemv_down(MoeKernel kernel, const bf16* w_down, int64_t M, int64_t I, const bf16* act, const MoeGroups& groups,
                   int64_t max_active, float* out, cudaStream_t stream);

// The GEMM path (prefill, large batches): rows[padded[e] + i] = x[sorted[offsets[e] + i] /
// top_k] for the pairs of each expert e, zero rows in each expert's padding, and
// row_of_pair[p] = the row pair p landed in. rows: [padded[E], K] bf16, zeroed here first
// (n_rows = the buffer's rows).
void moe_gather_rows(const bf16* x, int64_t K, const int32_t* ids, int64_t n_pairs, int64_t top_k, const MoeGroups& groups,
                     int64_t n_rows, bf16* rows, int32_t* row_of_pair, cudaStream_t stream);

// hidden[t] += sum_j weights[t][j] * expert_out[row(t * top_k + j)] (fixed order: deterministic),
// row(p) = row_of_pair[p], or p when row_of_pair is null.
void moe_combine(const float* expert_out, const int32_t* row_of_pair, const float* weights, int64_t n, int64_t top_k, int64_t dim,
                 float* hidden, cudaStream_t stream);

}  // namespace seekserve::cuda
