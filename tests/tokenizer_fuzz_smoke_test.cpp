// Runs the tokenizer fuzz target over generated inputs in every ctest run: mixtures of scripts,
// emoji, special-token text, whitespace runs and raw invalid bytes.
#include <gtest/gtest.h>

#include <random>

#include "test_support.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_target.h"

namespace seekserve {
namespace {

TEST(TokenizerFuzzSmokeTest, GeneratedInputsRoundTrip) {
  for (const std::string& dir : {testing::source_dir() + "/models/tiny-deepseek-v3", testing::tokenizers_dir() + "/deepseek_v3"}) {
    auto tokenizer = Tokenizer::load(dir);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().to_string();
    const std::vector<std::string> pieces = {
        "a", "The", " quick", "  ", "\n", "\r\n", "\t", "123", "4567890", "é", "e\xCC\x81", "中文", "こんにちは", "한국어",
        "مرحبا", "👍🏽", "👨\u200d👩\u200d👧", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "<｜end▁of▁sentence｜>",
        "'s", "!!", "...", "```", "\xF0\x9F", "\xC3", "\x80", "\xFF", "\xED\xA0\x80", std::string(1, '\0'), "       ", "x=1;"};
    std::mt19937_64 rng(42);
    for (int i = 0; i < 3000; ++i) {
      std::string input;
      const int n = static_cast<int>(rng() % 12);
      for (int k = 0; k < n; ++k) input += pieces[rng() % pieces.size()];
      if (rng() % 8 == 0) input += std::string(static_cast<size_t>(rng() % 300), ' ');  // long whitespace run
      fuzz_tokenizer_one_input(**tokenizer, reinterpret_cast<const uint8_t*>(input.data()), input.size());
    }
  }
}

}  // namespace
}  // namespace seekserve
