// MoE routing against hand-worked examples of DeepSeek's semantics (numerics note): V3 sigmoid
// scores with the correction bias, groups ranked by the sum of their two best biased scores,
// -inf masking; V2 softmax greedy and group-limited routing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "layers/moe.h"

namespace seekserve {
namespace {

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

struct Routed {
  std::vector<int32_t> ids;
  std::vector<float> weights;
  float margin = 0.0f;
};

Routed route(const MoeConfig& c, const std::vector<float>& logits, const std::vector<float>& bias) {
  Routed r;
  r.ids.resize(static_cast<size_t>(c.top_k));
  r.weights.resize(static_cast<size_t>(c.top_k));
  route_tokens(c, logits.data(), 1, bias, r.ids.data(), r.weights.data(), &r.margin);
  return r;
}

MoeConfig v3_config() {
  MoeConfig c;
  c.n_routed_experts = 8;
  c.top_k = 2;
  c.n_group = 4;  // groups {0,1} {2,3} {4,5} {6,7}
  c.topk_group = 2;
  c.scoring = MoeScoring::kSigmoid;
  c.topk_method = MoeTopkMethod::kNoauxTc;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5f;
  return c;
}

TEST(MoeRoutingTest, V3RanksGroupsByTopTwoSumAndMasksWithMinusInfinity) {
  // Expert 4 alone scores highest, but its group partner is weak, so group {4,5} loses to
  // {0,1} and {2,3}. Every biased score is negative: masking dropped groups with 0 (as old
  // transformers did) would wrongly pick experts from the dropped groups.
  const std::vector<float> logits = {2.0f, 1.5f, 1.0f, 0.5f, 3.0f, -5.0f, -3.0f, -3.0f};
  const std::vector<float> bias(8, -1.0f);
  const Routed r = route(v3_config(), logits, bias);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
  // Weights are the unbiased sigmoid scores, normalized, then scaled.
  const float s0 = sigmoid(2.0f), s1 = sigmoid(1.5f);
  EXPECT_NEAR(r.weights[0], s0 / (s0 + s1) * 2.5f, 1e-6);
  EXPECT_NEAR(r.weights[1], s1 / (s0 + s1) * 2.5f, 1e-6);
  EXPECT_GT(r.margin, 0.0f);
}

TEST(MoeRoutingTest, V3BiasChangesTheChoiceButNotTheWeights) {
  MoeConfig c = v3_config();
  c.n_group = 1;
  c.topk_group = 1;
  const std::vector<float> logits = {0.0f, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f};
  std::vector<float> bias(8, 0.0f);
  bias[0] = 0.5f;  // lifts expert 0 above expert 7 for the choice
  const Routed r = route(c, logits, bias);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 7}));
  const float s0 = sigmoid(0.0f), s7 = sigmoid(0.7f);
  EXPECT_NEAR(r.weights[0], s0 / (s0 + s7) * 2.5f, 1e-6);
}

TEST(MoeRoutingTest, V3WithoutNormalizationScalesRawScores) {
  MoeConfig c = v3_config();
  c.norm_topk_prob = false;
  const std::vector<float> logits = {2.0f, 1.5f, 1.0f, 0.5f, 3.0f, -5.0f, -3.0f, -3.0f};
  const Routed r = route(c, logits, std::vector<float>(8, 0.0f));
  // Group sums: {0,1} 0.88+0.82, {2,3} 0.73+0.62, {4,5} 0.95+0.007: expert 4 is not eligible.
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
  EXPECT_NEAR(r.weights[0], sigmoid(2.0f) * 2.5f, 1e-6);
  EXPECT_NEAR(r.weights[1], sigmoid(1.5f) * 2.5f, 1e-6);
}

MoeConfig v2_config(MoeTopkMethod method) {
  MoeConfig c;
  c.n_routed_experts = 8;
  c.top_k = 3;
  c.n_group = 4;
  c.topk_group = 2;
  c.scoring = MoeScoring::kSoftmax;
  c.topk_method = method;
  c.routed_scaling_factor = 16.0f;
  return c;
}

std::vector<float> softmax(const std::vector<float>& l) {
  float m = *std::max_element(l.begin(), l.end()), sum = 0.0f;
  std::vector<float> p;
  for (float x : l) sum += std::exp(x - m);
  for (float x : l) p.push_back(std::exp(x - m) / sum);
  return p;
}

const std::vector<float> kV2Logits = {1.0f, 0.9f, 0.2f, 0.1f, 0.8f, 0.7f, 1.1f, -2.0f};

TEST(MoeRoutingTest, V2GreedyTakesTopKOfSoftmax) {
  const Routed r = route(v2_config(MoeTopkMethod::kGreedy), kV2Logits, {});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{6, 0, 1}));
  const auto p = softmax(kV2Logits);
  EXPECT_NEAR(r.weights[0], p[6] * 16.0f, 1e-5);
  EXPECT_NEAR(r.weights[2], p[1] * 16.0f, 1e-5);
}

TEST(MoeRoutingTest, V2GroupLimitedKeepsGroupsWithBestMax) {
  // Group maxima: {0,1}: 1.0, {2,3}: 0.2, {4,5}: 0.8, {6,7}: 1.1 -> keep {6,7} and {0,1}.
  const Routed r = route(v2_config(MoeTopkMethod::kGroupLimitedGreedy), kV2Logits, {});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{6, 0, 1}));
  // With one group kept only {6,7} are eligible plus nothing else: top_k 2 -> {6, 7}.
  MoeConfig c = v2_config(MoeTopkMethod::kGroupLimitedGreedy);
  c.topk_group = 1;
  c.top_k = 2;
  const Routed one = route(c, kV2Logits, {});
  EXPECT_EQ(one.ids, (std::vector<int32_t>{6, 7}));  // 7 is weak but the only one left
}

TEST(MoeRoutingTest, V2NormalizedWeightsAreNotScaled) {
  MoeConfig c = v2_config(MoeTopkMethod::kGreedy);
  c.norm_topk_prob = true;
  const Routed r = route(c, kV2Logits, {});
  EXPECT_NEAR(r.weights[0] + r.weights[1] + r.weights[2], 1.0f, 1e-6);
}

TEST(MoeRoutingTest, MarginIsTheGapToTheBestRejectedExpert) {
  MoeConfig c = v2_config(MoeTopkMethod::kGreedy);
  const Routed r = route(c, kV2Logits, {});
  const auto p = softmax(kV2Logits);
  EXPECT_NEAR(r.margin, p[1] - p[4], 1e-6);  // third chosen (1) vs best rejected (4)
}

}  // namespace
}  // namespace seekserve
