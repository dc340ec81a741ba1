#include "models/causal_lm.h"

namespace seekserve {

Status DecoderLM::forward(const ForwardRequest& request, KvCache& cache, std::vector<float>* logits) {
  const int64_t n = static_cast<int64_t>(request.tokens.size());
  const int64_t start = cache.n_tokens();
  if (n == 0) return invalid_argument("forward needs at least one token");
  for (int64_t i = 0; i < n; ++i) {
    const int32_t id = request.tokens[static_cast<size_t>(i)];
    if (id < 0 || id >= info_.vocab_size)
      return out_of_range("token id " + std::to_string(id) + " at index " + std::to_string(i) +
                          " is outside the vocabulary [0, " + std::to_string(info_.vocab_size) + ")");
  }
  if (start + n > info_.max_positions)
    return out_of_range("sequence of " + std::to_string(start + n) + " tokens exceeds the context of " +
                        std::to_string(info_.max_positions) + " (max_position_embeddings)");
  const int64_t logits_from = request.logits_from < 0 ? n - 1 : request.logits_from;
  if (logits_from >= n) return invalid_argument("logits_from is past the last token");

  ForwardContext ctx;
  ctx.n_tokens = n;
  ctx.positions.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ctx.positions[static_cast<size_t>(i)] = static_cast<int32_t>(start + i);
  rope_cos_sin(rope_, ctx.positions, &ctx.rope_cos, &ctx.rope_sin);
  if (request.on_routing) ctx.on_routing = &request.on_routing;

  const int64_t H = info_.hidden_size;
  std::vector<float> hidden(static_cast<size_t>(n * H));  // [n, H] residual stream
  backend_->embedding(embed_tokens, request.tokens.data(), n, hidden.data());
  if (request.observer) request.observer(0, hidden.data(), n);

  cache.reserve(start + n);
  for (int64_t layer = 0; layer < info_.n_layers; ++layer) {
    run_layer(layer, hidden.data(), ctx, cache);
    if (request.observer) request.observer(layer + 1, hidden.data(), n);
  }
  cache.commit(start + n);

  backend_->rms_norm(hidden.data(), H, final_norm.data(), n, H, norm_eps, hidden.data(), H);
  if (request.observer) request.observer(info_.n_layers + 1, hidden.data(), n);

  const int64_t rows = n - logits_from;
  logits->resize(static_cast<size_t>(rows * info_.vocab_size));
  backend_->matmul(lm_head, hidden.data() + logits_from * H, H, rows, logits->data(), info_.vocab_size);
  return Status::Ok();
}

}  // namespace seekserve
