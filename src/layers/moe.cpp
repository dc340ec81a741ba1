#include "layers/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "layers/swiglu_mlp.h"

namespace seekserve {

namespace {

// Indices of the k largest values (ties: lower index first), in descending order of value.
std::vector<int32_t> top_k_indices(const std::vector<float>& values, int64_t k) {
  std::vector<int32_t> idx(values.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
    return values[static_cast<size_t>(a)] > values[static_cast<size_t>(b)] ||
           (values[static_cast<size_t>(a)] == values[static_cast<size_t>(b)] && a < b);
  });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

// Sets every expert outside the topk_group best groups to -inf. group_score(g) rates group g.
// Returns the gap between the last kept and the best dropped group (+inf when none is dropped).
template <typename GroupScore>
float mask_to_best_groups(const MoeConfig& c, std::vector<float>* choice, GroupScore group_score) {
  const int64_t per_group = c.n_routed_experts / c.n_group;
  std::vector<float> scores(static_cast<size_t>(c.n_group));
  for (int64_t g = 0; g < c.n_group; ++g) scores[static_cast<size_t>(g)] = group_score(choice->data() + g * per_group, per_group);
  std::vector<bool> keep(static_cast<size_t>(c.n_group), false);
  const std::vector<int32_t> ranked = top_k_indices(scores, std::min(c.topk_group + 1, c.n_group));
  for (int64_t i = 0; i < c.topk_group; ++i) keep[static_cast<size_t>(ranked[static_cast<size_t>(i)])] = true;
  for (int64_t g = 0; g < c.n_group; ++g)
    if (!keep[static_cast<size_t>(g)])
      std::fill_n(choice->data() + g * per_group, per_group, -INFINITY);
  if (c.topk_group >= c.n_group) return INFINITY;
  return scores[static_cast<size_t>(ranked[static_cast<size_t>(c.topk_group - 1)])] -
         scores[static_cast<size_t>(ranked[static_cast<size_t>(c.topk_group)])];
}

float sum_of_top2(const float* v, int64_t n) {
  float a = -INFINITY, b = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    if (v[i] > a) { b = a; a = v[i]; }
    else if (v[i] > b) { b = v[i]; }
  }
  return n >= 2 ? a + b : a;
}

float max_of(const float* v, int64_t n) { return *std::max_element(v, v + n); }

}  // namespace

MoeWeights bind_moe(WeightBinder& binder, const std::string& p, const MoeConfig& c) {
  MoeWeights w;
  w.router = binder.linear(p + ".gate", c.n_routed_experts, c.hidden_size, Keep::kF32);
  if (c.topk_method == MoeTopkMethod::kNoauxTc)
    w.correction_bias = binder.vector(p + ".gate.e_score_correction_bias", c.n_routed_experts, 0.0f);
  w.experts.reserve(static_cast<size_t>(c.n_routed_experts));
  for (int64_t e = 0; e < c.n_routed_experts; ++e)
    w.experts.push_back(bind_mlp(binder, p + ".experts." + std::to_string(e), c.hidden_size, c.moe_intermediate_size));
  if (c.n_shared_experts > 0)
    w.shared = bind_mlp(binder, p + ".shared_experts", c.hidden_size, c.moe_intermediate_size * c.n_shared_experts);
  return w;
}

void route_tokens(const MoeConfig& c, const float* logits, int64_t n_tokens,
                  const std::vector<float>& bias, int32_t* ids, float* weights, float* margins) {
  const int64_t E = c.n_routed_experts;
  std::vector<float> scores(static_cast<size_t>(E)), choice(static_cast<size_t>(E));
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* l = logits + t * E;
    if (c.scoring == MoeScoring::kSigmoid) {
      for (int64_t e = 0; e < E; ++e) scores[static_cast<size_t>(e)] = 1.0f / (1.0f + std::exp(-l[e]));
    } else {
      const float m = *std::max_element(l, l + E);
      float sum = 0.0f;
      for (int64_t e = 0; e < E; ++e) sum += scores[static_cast<size_t>(e)] = std::exp(l[e] - m);
      for (float& s : scores) s /= sum;
    }
    // `choice` ranks experts; the weights always come from the unbiased scores.
    choice = scores;
    float group_gap = INFINITY;
    switch (c.topk_method) {
      case MoeTopkMethod::kGreedy: break;
      case MoeTopkMethod::kGroupLimitedGreedy: group_gap = mask_to_best_groups(c, &choice, max_of); break;
      case MoeTopkMethod::kNoauxTc:
        for (int64_t e = 0; e < E; ++e) choice[static_cast<size_t>(e)] += bias.empty() ? 0.0f : bias[static_cast<size_t>(e)];
        group_gap = mask_to_best_groups(c, &choice, sum_of_top2);
        break;
    }
    const std::vector<int32_t> chosen = top_k_indices(choice, std::min(c.top_k + 1, E));
    if (margins != nullptr) {
      const float expert_gap = c.top_k < E ? choice[static_cast<size_t>(chosen[static_cast<size_t>(c.top_k - 1)])] -
                                                 choice[static_cast<size_t>(chosen[static_cast<size_t>(c.top_k)])]
                                           : INFINITY;
      margins[t] = std::min(group_gap, expert_gap);
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < c.top_k; ++j) {
      ids[t * c.top_k + j] = chosen[static_cast<size_t>(j)];
      weights[t * c.top_k + j] = scores[static_cast<size_t>(chosen[static_cast<size_t>(j)])];
      sum += weights[t * c.top_k + j];
    }
    // V3 normalizes then scales; V2 (DeepSeek's code) scales only when it does not normalize.
    const bool normalize = c.norm_topk_prob && (c.scoring == MoeScoring::kSigmoid || c.top_k > 1);
    const bool scale = c.scoring == MoeScoring::kSigmoid || !normalize;
    for (int64_t j = 0; j < c.top_k; ++j) {
      float& wj = weights[t * c.top_k + j];
      if (normalize) wj /= sum + 1e-20f;
      if (scale) wj *= c.routed_scaling_factor;
    }
  }
}

void moe_forward(Backend& backend, const MoeConfig& c, const MoeWeights& w, const float* x,
                 const ForwardContext& ctx, int64_t layer, float* out) {
  const int64_t n_tokens = ctx.n_tokens;
  const int64_t E = c.n_routed_experts, D = c.hidden_size;
  std::vector<float> logits(static_cast<size_t>(n_tokens * E));
  backend.matmul(w.router, x, D, n_tokens, logits.data(), E);
  std::vector<int32_t> ids(static_cast<size_t>(n_tokens * c.top_k));
  std::vector<float> weights(static_cast<size_t>(n_tokens * c.top_k));
  std::vector<float> margins(ctx.on_routing ? static_cast<size_t>(n_tokens) : 0);
  route_tokens(c, logits.data(), n_tokens, w.correction_bias, ids.data(), weights.data(),
               ctx.on_routing ? margins.data() : nullptr);
  if (ctx.on_routing) (*ctx.on_routing)(layer, n_tokens, c.top_k, ids.data(), margins.data());

  if (c.n_shared_experts > 0) swiglu_forward(backend, w.shared, x, n_tokens, out);
  else std::fill_n(out, n_tokens * D, 0.0f);
  MoeArgs args;
  args.x = x;
  args.n_tokens = n_tokens;
  args.hidden = D;
  args.top_k = c.top_k;
  args.expert_ids = ids.data();
  args.expert_weights = weights.data();
  args.experts = w.experts;
  args.out = out;
  backend.moe_experts(args);
}

}  // namespace seekserve
