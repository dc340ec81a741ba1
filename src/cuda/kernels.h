// The CUDA kernels of the dense decoder as host-callable launchers, all asynchronous on
// `stream` (kernels.cu; the attention kernels in attention.cu). Conventions follow backend.h:
// activations row-major, one row per token; the residual stream is float32, matmul inputs are
// bf16 (the rounding the CPU backend applies at matmul inputs), matmul outputs float32; the KV
// cache holds bf16 rows in a paged pool.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace seekserve::cuda {

using bf16 = __nv_bfloat16;

// out[t] = table[ids[t]] as float32. table: [vocab, dim] bf16; out: [n, dim].
void embedding(const bf16* table, int64_t dim, const int32_t* ids, int64_t n, float* out, cudaStream_t stream);

// out[t] = x[rows[t]] * rsqrt(mean(x^2) + eps) * weight, rows of width dim. rows null: t itself.
// OutT: bf16 (a matmul input) or float (observed outputs).
template <typename OutT>
void rms_norm(const float* x, const int32_t* rows, const float* weight, int64_t n, int64_t dim, float eps, OutT* out,
              cudaStream_t stream);

// Memory-bound matmul for a few tokens (decode): y[t][r] (+)= sum_k w[r][k] x[t][k] (+ bias[r]).
// w: [M, K] bf16; x: [n, K] with n <= kGemvMaxTokens; y: [n, y_stride] float32. The input is
// either bf16 rows as they are, or rows the kernel builds in its prologue (rounded to bf16
// exactly as rms_norm would), saving a kernel and a round trip per use.
constexpr int64_t kGemvMaxTokens = 8;
struct GemvInput {
  const bf16* x = nullptr;  // plain input [n, K]
  // RMSNorm prologue: x[t] = rms_norm(hidden[rows ? rows[t] : t]) * norm_weight; hidden [*, K].
  const float* hidden = nullptr;
  const int32_t* rows = nullptr;
  const float* norm_weight = nullptr;
  float eps = 0.0f;

  static GemvInput plain(const bf16* x) {
    GemvInput in;
    in.x = x;
    return in;
  }
  static GemvInput normed(const float* hidden, const int32_t* rows, const float* norm_weight, float eps) {
    GemvInput in;
    in.hidden = hidden;
    in.rows = rows;
    in.norm_weight = norm_weight;
    in.eps = eps;
    return in;
  }
};
// Shared memory a prologue may fill (n * K bf16), and whether n tokens of width K fit in it.
constexpr int64_t kGemvStagedBytes = 48 * 1024;
bool gemv_builds_input(int64_t n, int64_t K);
void gemv(const bf16* w, int64_t M, int64_t K, const GemvInput& x, int64_t n, const float* bias, bool accumulate, float* y,
          int64_t y_stride, cudaStream_t stream);
inline void gemv(const bf16* w, int64_t M, int64_t K, const bf16* x, int64_t n, const float* bias, bool accumulate, float* y,
                 int64_t y_stride, cudaStream_t stream) {
  gemv(w, M, K, GemvInput::plain(x), n, bias, accumulate, y, y_stride, stream);
}
// The gate/up projection and SwiGLU of a decode step in one kernel: w [2I, K] (gate rows, then up
// rows), x an RMSNorm input (GemvInput::normed); act[t][r] = bf16(silu(x.w[r]) * x.w[I + r]),
// as silu_mul rounds it.
void gemv_swiglu(const bf16* w, int64_t I, int64_t K, const GemvInput& x, int64_t n, bf16* act, cudaStream_t stream);

// y[t][r] += bias[r] for rows of width M.
void add_bias(const float* bias, int64_t n, int64_t M, float* y, cudaStream_t stream);

// Rotates q and k of the fused [n, (H + 2 Hkv) * D] projection in place (half-split pairs
// (i, i + D/2), or interleaved (2i, 2i+1)) and writes k and v as bf16 into pool row slots[t].
// cos/sin: tables [positions, D/2] indexed by positions[t].
void rope_and_cache(float* qkv, int64_t n, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, const float* cos,
                    const float* sin, const int32_t* positions, bool interleaved, const int32_t* slots, bf16* k_pool,
                    bf16* v_pool, cudaStream_t stream);

// Causal attention over the paged cache for every token of the batch. Token t belongs to
// sequence token_seq[t], sits at positions[t] and sees positions [0, positions[t]] through
// block_tables[token_seq[t] * table_stride + p / block_size]. q: rows of the fused projection
// (q_stride apart, heads first). out: [n, H * D] bf16 (the o_proj input).
struct AttentionParams {
  const float* q = nullptr;
  int64_t q_stride = 0;
  bf16* k_pool = nullptr;  // rows [*, n_kv_heads * head_dim]; written only with fused RoPE
  bf16* v_pool = nullptr;
  const int32_t* block_tables = nullptr;
  int64_t table_stride = 0;
  const int32_t* token_seq = nullptr;
  const int32_t* positions = nullptr;
  int64_t n_tokens = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t block_size = 0;
  float scale = 1.0f;
  bf16* out = nullptr;
  // Decode only (one token per sequence): when rope_cos is set, attention() also does what
  // rope_and_cache does for its KV head's queries and key (q then points at the fused q|k|v
  // rows), saving a launch per layer.
  const float* rope_cos = nullptr;  // tables [positions, D/2], indexed by positions[t]
  const float* rope_sin = nullptr;
  bool rope_interleaved = false;
  const int32_t* slots = nullptr;   // [n] pool row of each token's new key and value
  // Split-KV for long contexts (decode kernel only): each token's positions are cut into
  // n_splits slices processed by separate blocks; the last block of a (token, KV head) to finish
  // merges them. partial: scratch of attention_partial_floats(...) floats; split_counters:
  // n_tokens * n_kv_heads ints, zero before the first call (the kernel leaves them zero).
  int64_t n_splits = 1;
  float* partial = nullptr;
  int* split_counters = nullptr;
};

// Slices that keep the GPU busy for n decode tokens over at most max_positions positions: about
// two blocks per SM, slices of at least 128 positions, at most 1024 (token, slice) pairs (64 was
// slower at batch 1 on the H200: the merge outweighs the shorter slices).
inline int64_t attention_splits(int64_t n_tokens, int64_t n_kv_heads, int64_t max_positions) {
  int64_t splits = (264 + n_tokens * n_kv_heads - 1) / (n_tokens * n_kv_heads);
  if (splits > max_positions / 128) splits = max_positions / 128;
  if (splits > 1024 / n_tokens) splits = 1024 / n_tokens;
  return splits < 1 ? 1 : splits;
}
inline int64_t attention_partial_floats(int64_t n_tokens, int64_t n_heads, int64_t n_splits, int64_t head_dim) {
  return n_tokens * n_heads * n_splits * (head_dim + 2);
}
// Head dims and GQA group sizes the attention kernel is built for.
bool attention_supported(int64_t head_dim, int64_t group);
// The decode kernels: tensor cores (the G query heads of a KV head as the rows of mma.sync tiles,
// keys and values staged through shared memory by cp.async; q and probabilities rounded to bf16
// as in prefill) or CUDA cores (float q, loads in registers). Tensor cores win once the batch
// fills the GPU (Llama-8B shapes, batch 256: 10.1 vs 11.1 ms a step), CUDA cores at small
// batches, where latency rules (Qwen-1.5B batch 1: 1.50 vs 1.70 ms; H200, 2026-11-30).
// attention(p, stream) picks by the shape; SEEKSERVE_CUDA_ATTENTION_SIMT=1 or _MMA=1 force one.
enum class AttentionKernel { kCudaCores, kTensorCores };
AttentionKernel attention_kernel_for(int64_t n_tokens);
void attention(const AttentionParams& p, cudaStream_t stream, AttentionKernel kernel);
inline void attention(const AttentionParams& p, cudaStream_t stream) { attention(p, stream, attention_kernel_for(p.n_tokens)); }

// The same attention for prefill chunks, on tensor cores. Query rows come in tiles of at most
// 64 rows of one sequence: tiles[3 i .. 3 i + 2] = {sequence, first row, rows}; the rows'
// positions must increase within a tile (they do within a chunk). token_seq is not read.
constexpr int64_t kPrefillTileRows = 64;
bool attention_prefill_supported(int64_t head_dim);
void attention_prefill(const AttentionParams& p, const int32_t* tiles, int64_t n_tiles, cudaStream_t stream);

// out[t][i] = silu(gate_up[t][i]) * gate_up[t][I + i] as bf16; gate_up: [n, 2I], float32 or bf16.
void silu_mul(const float* gate_up, int64_t n, int64_t I, bf16* out, cudaStream_t stream);
void silu_mul(const bf16* gate_up, int64_t n, int64_t I, bf16* out, cudaStream_t stream);

// keys[r] encodes the argmax of logits row r (width vocab): ties to the lowest id, NaN never
// wins; argmax_key_index(keys[r]) is the id (0 when the row is all NaN).
void argmax_rows(const float* logits, int64_t rows, int64_t vocab, uint64_t* keys, cudaStream_t stream);
inline int32_t argmax_key_index(uint64_t key) {
  return key == 0 ? 0 : static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(key & 0xffffffffu));
}


}  // namespace seekserve::cuda
