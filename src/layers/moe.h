// DeepSeek mixture of experts: a float32 router picks top_k routed experts per token, their
// outputs are mixed by the routing weights, and the shared experts are added for every token.
#pragma once

#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/weight_binder.h"
#include "models/causal_lm.h"

namespace seekserve {

enum class MoeScoring { kSoftmax, kSigmoid };

enum class MoeTopkMethod {
  kGreedy,              // V2: top_k of the scores
  kGroupLimitedGreedy,  // V2: keep the topk_group groups with the best max score, then top_k
  kNoauxTc,             // V3: scores + correction bias, groups ranked by their top-2 sum
};

struct MoeConfig {
  int64_t hidden_size = 0;
  int64_t n_routed_experts = 0;
  int64_t top_k = 0;                 // num_experts_per_tok
  int64_t n_group = 1;               // experts split into n_group equal groups
  int64_t topk_group = 1;            // groups kept per token
  MoeScoring scoring = MoeScoring::kSoftmax;
  MoeTopkMethod topk_method = MoeTopkMethod::kGreedy;
  bool norm_topk_prob = false;       // renormalize the chosen weights to sum to 1
  float routed_scaling_factor = 1.0f;
  int64_t moe_intermediate_size = 0; // width of one routed expert
  int64_t n_shared_experts = 0;      // shared MLP width = moe_intermediate_size * n_shared_experts
};

struct MoeWeights {
  Weight router;                     // [n_routed_experts, hidden], float32
  std::vector<float> correction_bias;  // [n_routed_experts] (kNoauxTc only)
  std::vector<MlpWeights> experts;   // n_routed_experts
  MlpWeights shared;                 // empty when n_shared_experts == 0
};

MoeWeights bind_moe(WeightBinder& binder, const std::string& prefix, const MoeConfig& config);

// Picks experts from router logits [n_tokens, n_routed_experts] (float32).
// Writes ids and weights, each [n_tokens, top_k]. `correction_bias` may be empty. When
// `margins` is not null it receives, per token, the smallest gap between a kept and a rejected
// candidate (experts by their ranking score, and groups by their group score).
void route_tokens(const MoeConfig& config, const float* router_logits, int64_t n_tokens,
                  const std::vector<float>& correction_bias, int32_t* ids, float* weights,
                  float* margins = nullptr);

// out[t] = shared(x[t]) + sum_j w[t][j] * expert_j(x[t]); x, out: [n_tokens, hidden].
// Reports the routing of layer `layer` to ctx.on_routing when set.
void moe_forward(Backend& backend, const MoeConfig& config, const MoeWeights& w, const float* x,
                 const ForwardContext& ctx, int64_t layer, float* out);

}  // namespace seekserve
