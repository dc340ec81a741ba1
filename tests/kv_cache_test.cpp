// Decoding through the KV cache must give the logits a full recomputation gives: one token at a
// time, and in uneven chunks (as chunked prefill will feed it).
#include <gtest/gtest.h>

#include "models/model_loader.h"
#include "test_support.h"

namespace seekserve {
namespace {

class KvCacheTest : public ::testing::TestWithParam<const char*> {};

std::vector<int32_t> test_prompt(int64_t vocab, int64_t n) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>((i * 7919 + 13) % vocab));
  return ids;
}

TEST_P(KvCacheTest, IncrementalDecodeMatchesFullRecompute) {
  LoadOptions options;
  options.path = testing::model_dir(GetParam());
  auto loaded = load_model(options);
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  CausalLM& model = **loaded;
  const int64_t V = model.info().vocab_size;
  const std::vector<int32_t> ids = test_prompt(V, 23);
  const int64_t n = static_cast<int64_t>(ids.size());

  KvCache full_cache = model.new_cache();
  ForwardRequest full;
  full.tokens = ids;
  full.logits_from = 0;
  std::vector<float> expected;
  ASSERT_TRUE(model.forward(full, full_cache, &expected).ok());

  for (const std::vector<int64_t>& chunks : {std::vector<int64_t>(static_cast<size_t>(n), 1), std::vector<int64_t>{5, 1, 9, 2, 6}}) {
    KvCache cache = model.new_cache();
    int64_t done = 0;
    for (int64_t chunk : chunks) {
      ForwardRequest request;
      request.tokens = std::span<const int32_t>(ids).subspan(static_cast<size_t>(done), static_cast<size_t>(chunk));
      request.logits_from = 0;
      std::vector<float> logits;
      ASSERT_TRUE(model.forward(request, cache, &logits).ok());
      ASSERT_EQ(cache.n_tokens(), done + chunk);
      const float* want = expected.data() + done * V;
      EXPECT_LE(testing::relative_l2(logits.data(), want, static_cast<size_t>(chunk * V)), 1e-5)
          << "chunk at " << done << " of size " << chunk;
      done += chunk;
    }
    ASSERT_EQ(done, n);
  }
}

TEST_P(KvCacheTest, FailedForwardLeavesCacheUnchanged) {
  LoadOptions options;
  options.path = testing::model_dir(GetParam());
  auto loaded = load_model(options);
  ASSERT_TRUE(loaded.ok());
  CausalLM& model = **loaded;
  KvCache cache = model.new_cache();
  std::vector<float> logits;
  const std::vector<int32_t> good = {3, 4, 5};
  ForwardRequest request;
  request.tokens = good;
  ASSERT_TRUE(model.forward(request, cache, &logits).ok());
  const std::vector<float> before = logits;

  const std::vector<int32_t> bad = {7, static_cast<int32_t>(model.info().vocab_size)};
  request.tokens = bad;
  const Status status = model.forward(request, cache, &logits);
  EXPECT_EQ(status.code(), StatusCode::kOutOfRange);
  EXPECT_NE(status.message().find("outside the vocabulary"), std::string::npos) << status.message();
  EXPECT_EQ(cache.n_tokens(), 3);

  // The cache still continues the good prefix exactly.
  const std::vector<int32_t> next = {6};
  KvCache fresh = model.new_cache();
  const std::vector<int32_t> all = {3, 4, 5, 6};
  std::vector<float> want;
  request.tokens = all;
  ASSERT_TRUE(model.forward(request, fresh, &want).ok());
  request.tokens = next;
  ASSERT_TRUE(model.forward(request, cache, &logits).ok());
  EXPECT_LE(testing::relative_l2(logits.data(), want.data(), want.size()), 1e-5);
}

TEST_P(KvCacheTest, RefusesPositionsPastTheContext) {
  LoadOptions options;
  options.path = testing::model_dir(GetParam());
  auto loaded = load_model(options);
  ASSERT_TRUE(loaded.ok());
  CausalLM& model = **loaded;
  KvCache cache = model.new_cache();
  const std::vector<int32_t> ids(static_cast<size_t>(model.info().max_positions + 1), 2);
  ForwardRequest request;
  request.tokens = ids;
  std::vector<float> logits;
  const Status status = model.forward(request, cache, &logits);
  EXPECT_EQ(status.code(), StatusCode::kOutOfRange);
  EXPECT_EQ(cache.n_tokens(), 0);
}

INSTANTIATE_TEST_SUITE_P(Models, KvCacheTest,
                         ::testing::Values("random-deepseek-v3", "random-deepseek-v2-group", "random-deepseek-v3-fp8",
                                           "random-qwen2", "random-llama3"),
                         [](const ::testing::TestParamInfo<const char*>& param) {
                           std::string s = param.param;
                           for (char& c : s)
                             if (c == '-') c = '_';
                           return s;
                         });

}  // namespace
}  // namespace seekserve
