// The interface every model family implements, and the shared decoder skeleton
// (embedding -> layers -> final norm -> lm_head) that the family files fill in.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/status.h"
#include "models/kv_cache.h"
#include "model/weight.h"

namespace seekserve {

struct ModelInfo {
  std::string architecture;       // e.g. "DeepseekV3ForCausalLM"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t n_layers = 0;
  int64_t max_positions = 0;      // max_position_embeddings: positions beyond are refused
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;  // from config.json and generation_config.json
  int64_t weight_bytes = 0;       // bytes of all bound weights as held
  int64_t embedding_bytes = 0;    // of which the embedding table (read one row per token)
  int64_t expert_bytes = 0;       // of which routed experts, all layers (MoE models)
  int64_t n_routed_experts = 0;   // experts per MoE layer (0: dense)
  int64_t n_moe_layers = 0;
  // FLOPs of q.k and p.v for one (query, visible key) pair over all layers (0: not reported);
  // prefill figures count them next to the 2 per weight of the matmuls.
  int64_t attention_flops_per_pair = 0;
  // FLOPs of the decoder layers' weight matmuls per prompt token: 2 per weight it multiplies
  // (routed experts counted as top_k of n_routed_experts; embedding and lm_head left out, since
  // a prefill takes logits of its last token only). 0: not reported.
  int64_t matmul_flops_per_token = 0;
};

// Called after the embedding (layer 0), each decoder layer (1..n) and the final norm (n+1)
// with the residual stream [n_tokens, hidden_size] of the tokens in this call.
using LayerObserver = std::function<void(int64_t layer, const float* hidden, int64_t n_tokens)>;

// Called by every MoE layer with its routing decisions: ids [n_tokens, top_k] and, per token,
// the score gap that separated the chosen experts (and groups) from the best rejected one.
// Small gaps mark near-ties that a change of precision may flip.
using RoutingObserver = std::function<void(int64_t layer, int64_t n_tokens, int64_t top_k, const int32_t* ids,
                                           const float* margins)>;

// A single sequence's tokens for the convenience path (one private cache).
struct ForwardRequest {
  std::span<const int32_t> tokens;  // appended after what `cache` already holds
  // Logits are produced for tokens[logits_from ...]; -1 means the last token only.
  int64_t logits_from = -1;
  LayerObserver observer;           // optional, for golden comparisons
  RoutingObserver on_routing;       // optional: MoE routing decisions (tests, expert-load stats)
};

// New tokens of one sequence inside a batched forward pass.
struct SequenceChunk {
  std::span<const int32_t> tokens;       // the new tokens
  int64_t start = 0;                     // position of tokens[0] (= tokens already in the cache)
  std::span<const int32_t> block_table;  // pool blocks covering positions [0, start + tokens.size())
  int64_t n_logits = 1;                  // logits for this many trailing tokens (0: none)
};

// One engine step: chunks of several sequences, run together so every weight is read once.
struct ForwardBatch {
  std::vector<SequenceChunk> chunks;
  // When set, the model may return each logits row's argmax here (ties to the lowest id)
  // instead of the logits, which it then leaves empty: a GPU model copies back n ids rather
  // than n x vocab floats. For steps whose every request samples greedily.
  std::vector<int32_t>* greedy_tokens = nullptr;
  LayerObserver observer;     // optional: residual stream of all the batch's tokens
  RoutingObserver on_routing; // optional
};

class CausalLM {
 public:
  virtual ~CausalLM() = default;
  virtual const ModelInfo& info() const = 0;
  // Rows a token occupies in the KV cache (per layer).
  virtual KvLayout kv_layout() const = 0;
  // Runs every chunk, writes their keys/values (or MLA latents) into `pool` at the positions
  // their block tables map, and sets *logits to [sum of n_logits, vocab_size] in chunk order.
  // Validates all chunks first: on error nothing is written.
  virtual Status forward_batch(const ForwardBatch& batch, KvPool& pool, std::vector<float>* logits) = 0;

  // Convenience: one sequence with its own growing cache.
  KvCache new_cache() const { return KvCache(kv_layout()); }
  // Runs `request.tokens` at positions cache.n_tokens()... and appends them to `cache`.
  // Errors (token id out of range, context full) leave the cache unchanged.
  Status forward(const ForwardRequest& request, KvCache& cache, std::vector<float>* logits);
};

// Per-call state shared by every layer of one forward pass.
struct ForwardContext {
  // One sequence's rows within the batch.
  struct Segment {
    int64_t begin = 0;                   // first row in the batch
    int64_t n = 0;                       // rows
    const int32_t* block_table = nullptr;
  };
  int64_t n_tokens = 0;             // rows in the batch, all sequences together
  std::vector<int32_t> positions;   // [n_tokens]
  std::vector<int64_t> slots;       // [n_tokens] pool row each token's KV is written to
  std::vector<Segment> segments;
  std::vector<float> rope_cos;      // [n_tokens, rotary_dim / 2]
  std::vector<float> rope_sin;
  KvPool* pool = nullptr;
  const RoutingObserver* on_routing = nullptr;  // from the request, may be null
};

// Validates every chunk of `batch` against the model and the pool (token ids, context length,
// block tables) and lays the batch out: ctx->positions, slots, segments and n_tokens, the
// tokens in row order and the rows whose logits are wanted. Nothing is written on error.
Status plan_forward_batch(const ForwardBatch& batch, const KvPool& pool, const ModelInfo& info, ForwardContext* ctx,
                          std::vector<int32_t>* tokens, std::vector<int64_t>* logit_rows);

// Embedding, final norm and lm_head around a stack of family-specific layers.
class DecoderLM : public CausalLM {
 public:
  const ModelInfo& info() const override { return info_; }
  Status forward_batch(const ForwardBatch& batch, KvPool& pool, std::vector<float>* logits) override;

 protected:
  DecoderLM(std::shared_ptr<Backend> backend, RopeFrequencies rope) : backend_(std::move(backend)), rope_(std::move(rope)) {}
  // Runs decoder layer `layer` on hidden [n_tokens, hidden_size] of the whole batch in place.
  virtual void run_layer(int64_t layer, float* hidden, const ForwardContext& ctx, KvPool& pool) = 0;

  std::shared_ptr<Backend> backend_;
  RopeFrequencies rope_;
  ModelInfo info_;
  Weight embed_tokens;            // [vocab_size, hidden_size]
  std::vector<float> final_norm;  // [hidden_size]
  float norm_eps = 1e-6f;
  Weight lm_head;                 // [vocab_size, hidden_size]; the embedding when tied
};

}  // namespace seekserve
