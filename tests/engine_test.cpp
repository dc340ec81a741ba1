// The batched engine on real models: greedy outputs of the golden prompts do not depend on
// batching, chunked prefill, preemption or prefix caching; seeded sampling does not depend on
// what else runs.
#include <gtest/gtest.h>

#include <map>

#include "engine/engine.h"
#include "models/model_loader.h"
#include "test_support.h"

namespace seekserve {
namespace {

std::unique_ptr<CausalLM> load(const std::string& name) {
  LoadOptions options;
  options.path = testing::model_dir(name);
  auto model = load_model(options);
  EXPECT_TRUE(model.ok()) << model.status().to_string();
  return model.ok() ? std::move(model).value() : nullptr;
}

Request greedy_request(const std::vector<int32_t>& prompt, int64_t max_tokens) {
  Request r;
  r.prompt = prompt;
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  r.sampling.temperature = 0.0f;
  return r;
}

// Runs all requests through one engine (all admitted up front) and returns tokens per request.
std::vector<std::vector<int32_t>> run_all(CausalLM* model, const EngineConfig& config, const std::vector<Request>& requests,
                                          EngineStats* stats = nullptr) {
  auto engine = Engine::create(model, config);
  EXPECT_TRUE(engine.ok()) << engine.status().to_string();
  std::map<int64_t, size_t> index;
  for (size_t i = 0; i < requests.size(); ++i) {
    auto id = (*engine)->add_request(requests[i]);
    EXPECT_TRUE(id.ok()) << id.status().to_string();
    index[*id] = i;
  }
  std::vector<std::vector<int32_t>> tokens(requests.size());
  for (int guard = 0; (*engine)->has_work() && guard < 100000; ++guard)
    for (const TokenOutput& out : (*engine)->step()) {
      if (out.token >= 0) tokens[index[out.request_id]].push_back(out.token);
      if (out.finished) {
        // Timings for metrics: ordered, and consistent with each other.
        EXPECT_LE(out.queue_seconds, out.first_token_seconds);
        EXPECT_LE(out.first_token_seconds, out.total_seconds);
        EXPECT_GE(out.mean_inter_token_seconds, 0.0);
        EXPECT_LE(out.mean_inter_token_seconds, out.total_seconds);
      }
    }
  EXPECT_FALSE((*engine)->has_work());
  const EngineStats s = (*engine)->stats();
  EXPECT_EQ(s.kv_blocks_used, 0) << "block accounting must return to zero";
  if (stats) *stats = s;
  return tokens;
}

class EngineGoldenTest : public ::testing::TestWithParam<const char*> {};

TEST_P(EngineGoldenTest, GreedyOutputsDoNotDependOnBatching) {
  auto model = load(GetParam());
  ASSERT_TRUE(model);
  testing::Golden golden(GetParam());
  std::vector<Request> requests;
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& p : golden.prompts()) {
    requests.push_back(greedy_request(golden.ints(p + ".ids"), 24));
    expected.push_back(golden.ints(p + ".greedy"));
  }
  const int64_t bytes_per_token = model->kv_layout().bytes_per_token();

  // Each alone, the reference for the rest (and checked against the goldens).
  EngineConfig roomy;
  roomy.kv_budget_bytes = bytes_per_token * 16 * 512;
  std::vector<std::vector<int32_t>> alone;
  for (const Request& r : requests) alone.push_back(run_all(model.get(), roomy, {r})[0]);
  for (size_t i = 0; i < alone.size(); ++i) {
    const auto margins = golden.floats(golden.prompts()[i] + ".greedy_margin");
    for (size_t k = 0; k < expected[i].size(); ++k) {
      if (alone[i][k] == expected[i][k]) continue;
      EXPECT_LT(margins[k], 1e-3f) << "prompt " << i << " step " << k;
      break;
    }
  }

  // All together.
  EXPECT_EQ(run_all(model.get(), roomy, requests), alone);

  // Chunked prefill: a step budget smaller than the long prompts.
  EngineConfig chunked = roomy;
  chunked.scheduler.step_tokens = 5;
  EXPECT_EQ(run_all(model.get(), chunked, requests), alone);

  // A pool too small for everything at once: sequences get preempted and recomputed.
  int64_t longest = 0, total_blocks = 0;
  for (const Request& r : requests) {
    const int64_t blocks = (static_cast<int64_t>(r.prompt.size()) + r.max_tokens + 15) / 16;
    longest = std::max(longest, blocks);
    total_blocks += blocks;
  }
  EngineConfig tight = roomy;
  tight.kv_budget_bytes = bytes_per_token * 16 * std::max(longest, total_blocks * 2 / 3);
  tight.scheduler.step_tokens = 64;
  EngineStats stats;
  EXPECT_EQ(run_all(model.get(), tight, requests, &stats), alone);
  EXPECT_GT(stats.preemptions, 0) << "the pool was meant to be too small";
}

TEST_P(EngineGoldenTest, SharedPrefixFromTheCacheGivesIdenticalOutputs) {
  auto model = load(GetParam());
  ASSERT_TRUE(model);
  const int64_t V = model->info().vocab_size;
  std::vector<int32_t> prefix;
  for (int i = 0; i < 70; ++i) prefix.push_back(static_cast<int32_t>((i * 37 + 11) % V));
  std::vector<Request> requests;
  for (int k = 0; k < 3; ++k) {
    std::vector<int32_t> prompt = prefix;
    for (int i = 0; i <= k; ++i) prompt.push_back(static_cast<int32_t>((k * 101 + i * 7 + 3) % V));
    requests.push_back(greedy_request(prompt, 12));
  }
  EngineConfig config;
  config.kv_budget_bytes = model->kv_layout().bytes_per_token() * 16 * 64;
  std::vector<std::vector<int32_t>> alone;
  for (const Request& r : requests) alone.push_back(run_all(model.get(), config, {r})[0]);

  // One engine, requests one after another: the later ones reuse the first one's prefix blocks.
  auto engine = Engine::create(model.get(), config);
  ASSERT_TRUE(engine.ok());
  for (size_t i = 0; i < requests.size(); ++i) {
    auto id = (*engine)->add_request(requests[i]);
    ASSERT_TRUE(id.ok());
    std::vector<int32_t> tokens;
    while ((*engine)->has_work())
      for (const TokenOutput& out : (*engine)->step())
        if (out.token >= 0) tokens.push_back(out.token);
    EXPECT_EQ(tokens, alone[i]) << "request " << i;
  }
  const EngineStats stats = (*engine)->stats();
  EXPECT_GE(stats.prefix_hits, 2 * (70 / 16)) << "the shared 70-token prefix holds 4 full blocks";
  EXPECT_EQ(stats.kv_blocks_used, 0);
}

TEST_P(EngineGoldenTest, SeededSamplingDoesNotDependOnOtherRequests) {
  auto model = load(GetParam());
  ASSERT_TRUE(model);
  Request sampled = greedy_request({0, 5, 9, 13}, 16);
  sampled.sampling.temperature = 0.9f;
  sampled.sampling.top_p = 0.95f;
  sampled.sampling.seed = 1234;
  sampled.sampling.presence_penalty = 0.5f;
  EngineConfig config;
  config.kv_budget_bytes = model->kv_layout().bytes_per_token() * 16 * 128;
  const auto alone = run_all(model.get(), config, {sampled})[0];
  std::vector<Request> crowd;
  for (int k = 0; k < 5; ++k) {
    Request other = sampled;
    other.sampling.seed = 99 + k;
    other.prompt.push_back(static_cast<int32_t>(20 + k));
    crowd.push_back(other);
  }
  crowd.insert(crowd.begin() + 2, sampled);
  EXPECT_EQ(run_all(model.get(), config, crowd)[2], alone);
}

INSTANTIATE_TEST_SUITE_P(Models, EngineGoldenTest, ::testing::Values("tiny-deepseek-v3", "random-qwen2", "random-deepseek-v2-group"),
                         [](const ::testing::TestParamInfo<const char*>& param) {
                           std::string s = param.param;
                           for (char& c : s)
                             if (c == '-') c = '_';
                           return s;
                         });

TEST(EngineTest, RefusesRequestsThatCanNeverRun) {
  auto model = load("random-qwen2");
  ASSERT_TRUE(model);
  EngineConfig config;
  config.kv_budget_bytes = model->kv_layout().bytes_per_token() * 16 * 8;  // 128 tokens
  auto engine = Engine::create(model.get(), config);
  ASSERT_TRUE(engine.ok());
  auto too_long = (*engine)->add_request(greedy_request(std::vector<int32_t>(100, 3), 100));
  EXPECT_EQ(too_long.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(too_long.status().message().find("KV blocks"), std::string::npos) << too_long.status().message();
  Request batch = greedy_request(std::vector<int32_t>(60, 3), 20);
  batch.request_class = RequestClass::kBatch;  // 5 blocks > the batch share of 4
  EXPECT_EQ((*engine)->add_request(batch).status().code(), StatusCode::kOutOfRange);
  auto bad_token = (*engine)->add_request(greedy_request({1, 100000}, 4));
  EXPECT_EQ(bad_token.status().code(), StatusCode::kOutOfRange);
  auto past_context = (*engine)->add_request(greedy_request({1, 2}, model->info().max_positions));
  EXPECT_EQ(past_context.status().code(), StatusCode::kOutOfRange);
  EXPECT_FALSE((*engine)->has_work());
}

TEST(EngineTest, CancelFreesTheSequence) {
  auto model = load("random-qwen2");
  ASSERT_TRUE(model);
  auto engine = Engine::create(model.get(), EngineConfig{});
  ASSERT_TRUE(engine.ok());
  auto id = (*engine)->add_request(greedy_request({1, 2, 3}, 1000));
  ASSERT_TRUE(id.ok());
  (*engine)->step();
  (*engine)->step();
  EXPECT_GT((*engine)->stats().kv_blocks_used, 0);
  (*engine)->cancel(*id);
  const auto outputs = (*engine)->step();
  ASSERT_EQ(outputs.size(), 1u);
  EXPECT_EQ(outputs[0].finish_reason, "cancelled");
  EXPECT_FALSE((*engine)->has_work());
  EXPECT_EQ((*engine)->stats().kv_blocks_used, 0);
}

TEST(EngineTest, LogprobsDescribeTheModelDistribution) {
  auto model = load("random-qwen2");
  ASSERT_TRUE(model);
  auto engine = Engine::create(model.get(), EngineConfig{});
  ASSERT_TRUE(engine.ok());
  Request r = greedy_request({1, 2, 3}, 3);
  r.top_logprobs = 5;
  ASSERT_TRUE((*engine)->add_request(r).ok());
  int seen = 0;
  while ((*engine)->has_work())
    for (const TokenOutput& out : (*engine)->step()) {
      ASSERT_EQ(out.top_logprobs.size(), 5u);
      EXPECT_EQ(out.top_logprobs[0].token, out.token);  // greedy picks the most likely
      EXPECT_FLOAT_EQ(out.top_logprobs[0].logprob, out.logprob);
      EXPECT_LE(out.logprob, 0.0f);
      for (size_t i = 1; i < 5; ++i) EXPECT_LE(out.top_logprobs[i].logprob, out.top_logprobs[i - 1].logprob);
      ++seen;
    }
  EXPECT_EQ(seen, 3);
}

}  // namespace
}  // namespace seekserve
