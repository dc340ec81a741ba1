#include "models/causal_lm.h"

namespace seekserve {

Status CausalLM::forward(const ForwardRequest& request, KvCache& cache, std::vector<float>* logits) {
  const int64_t n = static_cast<int64_t>(request.tokens.size());
  const int64_t start = cache.n_tokens();
  if (n == 0) return invalid_argument("forward needs at least one token");
  const int64_t from = request.logits_from < 0 ? n - 1 : request.logits_from;
  if (from >= n) return invalid_argument("logits_from is past the last token");
  if (start + n > info().max_positions)  // checked here too: do not grow the cache for a refused call
    return out_of_range("sequence of " + std::to_string(start + n) + " tokens exceeds the context of " +
                        std::to_string(info().max_positions) + " (max_position_embeddings)");
  cache.reserve(start + n);
  ForwardBatch batch;
  batch.chunks.push_back({request.tokens, start, cache.block_table(), n - from});
  batch.observer = request.observer;
  batch.on_routing = request.on_routing;
  SS_RETURN_IF_ERROR(forward_batch(batch, cache.pool(), logits));
  cache.commit(start + n);
  return Status::Ok();
}

Status plan_forward_batch(const ForwardBatch& batch, const KvPool& pool, const ModelInfo& info, ForwardContext* out,
                          std::vector<int32_t>* tokens_out, std::vector<int64_t>* logit_rows_out) {
  if (batch.chunks.empty()) return invalid_argument("forward needs at least one sequence");
  ForwardContext& ctx = *out;
  std::vector<int32_t>& tokens = *tokens_out;
  std::vector<int64_t>& logit_rows = *logit_rows_out;  // batch rows whose logits are wanted
  tokens.clear();
  logit_rows.clear();
  for (size_t c = 0; c < batch.chunks.size(); ++c) {
    const SequenceChunk& chunk = batch.chunks[c];
    const int64_t n = static_cast<int64_t>(chunk.tokens.size());
    if (n == 0) return invalid_argument("sequence chunk " + std::to_string(c) + " has no tokens");
    if (chunk.n_logits < 0 || chunk.n_logits > n) return invalid_argument("n_logits must be in [0, chunk length]");
    if (chunk.start + n > info.max_positions)
      return out_of_range("sequence of " + std::to_string(chunk.start + n) + " tokens exceeds the context of " +
                          std::to_string(info.max_positions) + " (max_position_embeddings)");
    if (static_cast<int64_t>(chunk.block_table.size()) * pool.block_size() < chunk.start + n)
      return internal_error("block table does not cover the chunk");
    for (int64_t i = 0; i < n; ++i) {
      const int32_t id = chunk.tokens[static_cast<size_t>(i)];
      if (id < 0 || id >= info.vocab_size)
        return out_of_range("token id " + std::to_string(id) + " at index " + std::to_string(i) +
                            " is outside the vocabulary [0, " + std::to_string(info.vocab_size) + ")");
    }
    for (int32_t block : chunk.block_table)
      if (block < 0 || block >= pool.n_blocks()) return internal_error("block id outside the KV pool");
    const int64_t begin = static_cast<int64_t>(tokens.size());
    ctx.segments.push_back({begin, n, chunk.block_table.data()});
    for (int64_t i = 0; i < n; ++i) {
      tokens.push_back(chunk.tokens[static_cast<size_t>(i)]);
      ctx.positions.push_back(static_cast<int32_t>(chunk.start + i));
      ctx.slots.push_back(kv_slot(chunk.block_table.data(), pool.block_size(), chunk.start + i));
    }
    for (int64_t i = n - chunk.n_logits; i < n; ++i) logit_rows.push_back(begin + i);
  }
  ctx.n_tokens = static_cast<int64_t>(tokens.size());
  return Status::Ok();
}

Status DecoderLM::forward_batch(const ForwardBatch& batch, KvPool& pool, std::vector<float>* logits) {
  logits->clear();
  ForwardContext ctx;
  ctx.pool = &pool;
  std::vector<int32_t> tokens;
  std::vector<int64_t> logit_rows;
  SS_RETURN_IF_ERROR(plan_forward_batch(batch, pool, info_, &ctx, &tokens, &logit_rows));
  const int64_t n = ctx.n_tokens;
  rope_cos_sin(rope_, ctx.positions, &ctx.rope_cos, &ctx.rope_sin);
  if (batch.on_routing) ctx.on_routing = &batch.on_routing;

  const int64_t H = info_.hidden_size;
  std::vector<float> hidden(static_cast<size_t>(n * H));  // [n, H] residual stream
  backend_->embedding(embed_tokens, tokens.data(), n, hidden.data());
  if (batch.observer) batch.observer(0, hidden.data(), n);
  for (int64_t layer = 0; layer < info_.n_layers; ++layer) {
    run_layer(layer, hidden.data(), ctx, pool);
    if (batch.observer) batch.observer(layer + 1, hidden.data(), n);
  }
  backend_->rms_norm(hidden.data(), H, final_norm.data(), n, H, norm_eps, hidden.data(), H);
  if (batch.observer) batch.observer(info_.n_layers + 1, hidden.data(), n);

  // lm_head only for the rows that sample (a long prefill needs one row, not thousands).
  const int64_t rows = static_cast<int64_t>(logit_rows.size());
  if (rows == 0) return Status::Ok();
  std::vector<float> picked(static_cast<size_t>(rows * H));
  for (int64_t r = 0; r < rows; ++r) backend_->copy_rows(hidden.data() + logit_rows[static_cast<size_t>(r)] * H, H, 1, H, picked.data() + r * H, H);
  logits->resize(static_cast<size_t>(rows * info_.vocab_size));
  backend_->matmul(lm_head, picked.data(), H, rows, logits->data(), info_.vocab_size);
  return Status::Ok();
}

}  // namespace seekserve
