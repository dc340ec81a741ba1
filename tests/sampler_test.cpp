// Sampling: greedy is argmax; filters keep exactly the tokens they should; draws follow the
// softmax and repeat for a seed.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "engine/sampler.h"

namespace seekserve {
namespace {

std::map<int32_t, int> histogram(const SamplingParams& params, const std::vector<float>& logits, int draws) {
  Sampler sampler(params);
  std::map<int32_t, int> counts;
  for (int i = 0; i < draws; ++i) ++counts[sampler.sample(logits.data(), static_cast<int64_t>(logits.size()))];
  return counts;
}

// log of probabilities 0.5, 0.3, 0.15, 0.05
const std::vector<float> kLogits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};

TEST(SamplerTest, GreedyPicksArgmaxWithLowestIndexOnTies) {
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler sampler(p);
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(sampler.sample(logits.data(), 4), 1);
}

TEST(SamplerTest, DrawsFollowTheSoftmax) {
  SamplingParams p;
  p.seed = 7;
  const auto counts = histogram(p, kLogits, 40000);
  const double expected[] = {0.5, 0.3, 0.15, 0.05};
  for (int i = 0; i < 4; ++i) {
    const double freq = counts.count(i) ? counts.at(i) / 40000.0 : 0.0;
    // 5 standard deviations of a binomial proportion at n = 40000.
    EXPECT_NEAR(freq, expected[i], 5 * std::sqrt(expected[i] * (1 - expected[i]) / 40000.0)) << i;
  }
}

TEST(SamplerTest, TemperatureSharpens) {
  SamplingParams p;
  p.temperature = 0.25f;  // p^4 renormalized: 0.5^4 / (0.5^4 + 0.3^4 + ...) ~ 0.88
  const auto counts = histogram(p, kLogits, 20000);
  EXPECT_NEAR(counts.at(0) / 20000.0, 0.0625 / (0.0625 + 0.0081 + 0.00050625 + 0.00000625), 0.01);
}

TEST(SamplerTest, TopKKeepsOnlyTheKBest) {
  SamplingParams p;
  p.top_k = 2;
  const auto counts = histogram(p, kLogits, 5000);
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_NEAR(counts.at(0) / 5000.0, 0.5 / 0.8, 0.03);
}

TEST(SamplerTest, TopPKeepsTheSmallestSetReachingP) {
  SamplingParams p;
  p.top_p = 0.75f;  // 0.5 + 0.3 reaches it: tokens 0 and 1
  auto counts = histogram(p, kLogits, 5000);
  EXPECT_EQ(counts.size(), 2u);
  p.top_p = 0.5f;  // 0.5 alone reaches it
  counts = histogram(p, kLogits, 1000);
  EXPECT_EQ(counts.size(), 1u);
}

TEST(SamplerTest, MinPDropsTokensBelowAFractionOfTheBest) {
  SamplingParams p;
  p.min_p = 0.35f;  // threshold 0.175: keeps 0.5 and 0.3
  const auto counts = histogram(p, kLogits, 5000);
  EXPECT_EQ(counts.size(), 2u);
}

TEST(SamplerTest, SameSeedSameDraws) {
  SamplingParams p;
  p.seed = 1234;
  Sampler a(p), b(p);
  p.seed = 1235;
  Sampler c(p);
  int differ = 0;
  for (int i = 0; i < 200; ++i) {
    const int32_t x = a.sample(kLogits.data(), 4);
    EXPECT_EQ(x, b.sample(kLogits.data(), 4));
    differ += x != c.sample(kLogits.data(), 4);
  }
  EXPECT_GT(differ, 0);
}

TEST(SamplerTest, ValidatesParameters) {
  SamplingParams p;
  p.temperature = -1.0f;
  EXPECT_FALSE(p.validate().ok());
  p = {};
  p.top_p = 0.0f;
  EXPECT_FALSE(p.validate().ok());
  p = {};
  p.min_p = 1.5f;
  EXPECT_FALSE(p.validate().ok());
  p = {};
  p.top_k = -3;
  EXPECT_FALSE(p.validate().ok());
  EXPECT_TRUE(SamplingParams{}.validate().ok());
}

}  // namespace
}  // namespace seekserve
