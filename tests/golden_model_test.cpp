// Every fixture model against the transformers float32 reference: logits (head and tail),
// argmax at every prompt position, per-layer outputs of prompt 0 and the greedy continuation,
// at the tolerances of the numerics note (f32: 1e-4; bf16: 2e-2 and argmax where margin > 0.5).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "engine/generator.h"
#include "models/model_loader.h"
#include "test_support.h"

namespace seekserve {
namespace {

using testing::Golden;

struct Case {
  std::string model;
  ComputeDType dtype;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.model << (c.dtype == ComputeDType::kF32 ? " f32" : " bf16"); }

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string name = info.param.model + (info.param.dtype == ComputeDType::kF32 ? "_f32" : "_bf16");
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

class GoldenModelTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    dir_ = testing::model_dir(GetParam().model);
    if (dir_.empty()) GTEST_SKIP() << GetParam().model << " is not available (needs ../shared)";
    golden_ = std::make_unique<Golden>(GetParam().model);
    ASSERT_TRUE(golden_->ok());
    model_ = load(GetParam().dtype);
    if (GetParam().dtype != ComputeDType::kF32) reference_ = load(ComputeDType::kF32);
  }

  std::unique_ptr<CausalLM> load(ComputeDType dtype) {
    LoadOptions options;
    options.path = dir_;
    options.dtype = dtype;
    auto model = load_model(options);
    EXPECT_TRUE(model.ok()) << model.status().to_string();
    return model.ok() ? std::move(model).value() : nullptr;
  }

  bool f32() const { return GetParam().dtype == ComputeDType::kF32; }
  double tolerance() const { return f32() ? 1e-4 : 2e-2; }
  // Below this top-1/top-2 margin the reference's choice may legitimately flip.
  float margin_floor() const { return f32() ? 1e-3f : 0.5f; }

  // Logits of every prompt position: [n, vocab].
  std::vector<float> all_logits(CausalLM& model, const std::vector<int32_t>& ids, LayerObserver observer = nullptr,
                                testing::RoutingRecord* routing = nullptr) {
    KvCache cache = model.new_cache();
    ForwardRequest request;
    request.tokens = ids;
    request.logits_from = 0;
    request.observer = std::move(observer);
    if (routing != nullptr) request.on_routing = routing->observer();
    std::vector<float> logits;
    const Status status = model.forward(request, cache, &logits);
    EXPECT_TRUE(status.ok()) << status.to_string();
    return logits;
  }

  std::string dir_;
  std::unique_ptr<Golden> golden_;
  std::unique_ptr<CausalLM> model_, reference_;
};

TEST_P(GoldenModelTest, LogitsAndArgmaxMatchReference) {
  ASSERT_TRUE(model_);
  const int64_t V = model_->info().vocab_size;
  int64_t compared = 0, prompts_compared = 0;
  for (const std::string& p : golden_->prompts()) {
    SCOPED_TRACE(p);
    const std::vector<int32_t> ids = golden_->ints(p + ".ids");
    const int64_t n = static_cast<int64_t>(ids.size());
    testing::RoutingRecord routing, ref_routing;
    const std::vector<float> logits = all_logits(*model_, ids, nullptr, &routing);
    // Margins decide which positions must agree: our own f32 logits stand in for the
    // reference's (they match it to 1e-4, as the f32 case of this test checks).
    const std::vector<float> ref_logits = reference_ ? all_logits(*reference_, ids, nullptr, &ref_routing) : logits;

    // A lower precision may flip an MoE choice that was a near-tie; the rest of the network then
    // legitimately diverges, so such a prompt is checked for that reason only.
    if (testing::first_routing_flip(ref_routing, routing) >= 0) continue;
    ++prompts_compared;
    ASSERT_EQ(static_cast<int64_t>(logits.size()), n * V);
    for (float v : logits) ASSERT_TRUE(std::isfinite(v));

    const std::vector<float> head = golden_->floats(p + ".logits_head");
    const std::vector<float> tail = golden_->floats(p + ".logits_tail");
    EXPECT_LE(testing::relative_l2(logits.data(), head.data(), head.size()), tolerance()) << "logits_head";
    EXPECT_LE(testing::relative_l2(logits.data() + (n * V - static_cast<int64_t>(tail.size())), tail.data(), tail.size()),
              tolerance()) << "logits_tail";

    const std::vector<int32_t> argmax = golden_->ints(p + ".argmax");
    for (int64_t t = 0; t < n; ++t) {
      const float margin = testing::top2_margin(ref_logits.data() + t * V, V);
      if (margin < margin_floor()) continue;
      ++compared;
      EXPECT_EQ(seekserve::argmax(logits.data() + t * V, V), argmax[static_cast<size_t>(t)]) << "position " << t;
    }
  }
  // Most prompts must take part, and some positions must carry a margin worth checking.
  EXPECT_GE(2 * prompts_compared, static_cast<int64_t>(golden_->prompts().size()));
  EXPECT_GT(compared, 0);
}

TEST_P(GoldenModelTest, LayerOutputsOfFirstPromptMatchReference) {
  ASSERT_TRUE(model_);
  const std::vector<int32_t> ids = golden_->ints("p0.ids");
  const int64_t H = model_->info().hidden_size;
  int64_t seen = 0;
  all_logits(*model_, ids, [&](int64_t layer, const float* hidden, int64_t n_tokens) {
    const std::string name = "p0.layer." + std::to_string(layer);
    ASSERT_TRUE(golden_->has(name)) << name;
    const std::vector<float> expected = golden_->floats(name);
    ASSERT_EQ(static_cast<int64_t>(expected.size()), n_tokens * H);
    EXPECT_LE(testing::relative_l2(hidden, expected.data(), expected.size()), tolerance()) << name;
    ++seen;
  });
  EXPECT_EQ(seen, model_->info().n_layers + 2);
}

TEST_P(GoldenModelTest, GreedyContinuationMatchesReference) {
  ASSERT_TRUE(model_);
  for (const std::string& p : golden_->prompts()) {
    SCOPED_TRACE(p);
    const std::vector<int32_t> ids = golden_->ints(p + ".ids");
    const std::vector<int32_t> expected = golden_->ints(p + ".greedy");
    const std::vector<float> margins = golden_->floats(p + ".greedy_margin");
    GenerateOptions options;
    options.max_tokens = static_cast<int64_t>(expected.size());
    options.ignore_eos = true;
    options.sampling.temperature = 0.0f;
    auto result = generate(*model_, ids, options);
    ASSERT_TRUE(result.ok()) << result.status().to_string();
    ASSERT_EQ(result->tokens.size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      if (result->tokens[i] == expected[i]) continue;
      // A divergence is acceptable only at a near-tie; the rest of the sequence then differs.
      EXPECT_LT(margins[i], margin_floor()) << "step " << i << ": got " << result->tokens[i] << ", expected " << expected[i];
      break;
    }
  }
}

const char* const kModels[] = {"tiny-deepseek-v3",          "random-deepseek-v3",       "random-deepseek-v3-fp8",
                               "random-deepseek-v2-greedy", "random-deepseek-v2-group", "random-llama3",
                               "random-qwen2",              "tiny-qwen2"};

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (ComputeDType dtype : {ComputeDType::kF32, ComputeDType::kBF16})
    for (const char* m : kModels) cases.push_back({m, dtype});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenModelTest, ::testing::ValuesIn(all_cases()), case_name);

}  // namespace
}  // namespace seekserve

namespace seekserve {
namespace {

// A quantized path against the f32 goldens: tail logits within `bound` (relative L2; the
// measured error is printed), greedy tokens equal until the reference itself was unsure.
void check_quantized(const char* name, ComputeDType dtype, double bound) {
  LoadOptions options;
  options.path = testing::model_dir(name);
  options.dtype = dtype;
  auto model = load_model(options);
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  Golden golden(name);
  for (const std::string& p : golden.prompts()) {
    SCOPED_TRACE(p);
    const auto ids = golden.ints(p + ".ids");
    KvCache cache = (*model)->new_cache();
    ForwardRequest request;
    request.tokens = ids;
    request.logits_from = 0;
    std::vector<float> logits;
    ASSERT_TRUE((*model)->forward(request, cache, &logits).ok());
    const auto tail = golden.floats(p + ".logits_tail");
    const double error = testing::relative_l2(logits.data() + (logits.size() - tail.size()), tail.data(), tail.size());
    std::printf("%s %s: tail-logit relative error %.4f (bound %.3f)\n", name, p.c_str(), error, bound);
    EXPECT_LE(error, bound);
    GenerateOptions gen;
    gen.max_tokens = 24;
    gen.ignore_eos = true;
    gen.sampling.temperature = 0.0f;
    auto result = generate(**model, ids, gen);
    ASSERT_TRUE(result.ok());
    const auto expected = golden.ints(p + ".greedy");
    const auto margins = golden.floats(p + ".greedy_margin");
    for (size_t i = 0; i < expected.size(); ++i) {
      if (margins[i] < 1.0f) break;
      ASSERT_EQ(result->tokens[i], expected[i]) << "step " << i;
    }
  }
}

std::string fixture_test_name(const ::testing::TestParamInfo<std::pair<const char*, double>>& param) {
  std::string s = param.param.first;
  for (char& c : s)
    if (c == '-') c = '_';
  return s;
}

// INT8 (per-channel weights, per-token activations) against the f32 reference, within the
// bounds measured when the path was written (2026-11-29): tail-logit relative error 0.034
// (tiny-deepseek-v3), 0.043 (random-qwen2), 0.047 (random-llama3); the bound allows 1.5x. The
// random MoE fixtures are left out: their near-tie routing flips under any quantization.
class Int8GoldenTest : public ::testing::TestWithParam<std::pair<const char*, double>> {};

TEST_P(Int8GoldenTest, LogitsAndGreedyStayWithinTheMeasuredBound) {
  check_quantized(GetParam().first, ComputeDType::kInt8, GetParam().second);
}

// W8A8 FP8 (e4m3 weights with 128x128 block scales, activations per token per 128 channels)
// against the f32 reference: random-deepseek-v3-fp8 keeps its checkpoint's FP8 weights (the
// goldens come from them dequantized, so only the activation rounding differs); the others are
// quantized at load. Measured when the path was written (2026-11-29), largest tail-logit
// relative error over the prompts: 0.101 (random-deepseek-v3-fp8), 0.062 (tiny-deepseek-v3),
// 0.164 (random-qwen2), 0.153 (random-llama3) — two to four times INT8's (e4m3 keeps 3 mantissa
// bits); the bounds allow 1.5x. Random weights exaggerate it: their logits are small noise.
class Fp8GoldenTest : public ::testing::TestWithParam<std::pair<const char*, double>> {};

TEST_P(Fp8GoldenTest, LogitsAndGreedyStayWithinTheMeasuredBound) {
  check_quantized(GetParam().first, ComputeDType::kFP8, GetParam().second);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Fp8GoldenTest,
                         ::testing::Values(std::make_pair("random-deepseek-v3-fp8", 0.152), std::make_pair("tiny-deepseek-v3", 0.093),
                                           std::make_pair("random-qwen2", 0.246), std::make_pair("random-llama3", 0.23)),
                         fixture_test_name);

INSTANTIATE_TEST_SUITE_P(Fixtures, Int8GoldenTest,
                         ::testing::Values(std::make_pair("tiny-deepseek-v3", 0.051), std::make_pair("random-qwen2", 0.065),
                                           std::make_pair("random-llama3", 0.071)),
                         fixture_test_name);

}  // namespace
}  // namespace seekserve
