// The tokenizer against the Rust `tokenizers` library's encodings of the golden cases, on the
// real DeepSeek-V3 and Qwen3 vocabularies and the tiny model's.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace seekserve {
namespace {

struct TokenizerCase {
  std::string name;  // golden file tokenizer_<name>.golden.json
  std::string dir;   // folder with tokenizer.json
};

nlohmann::json load_golden(const std::string& name) {
  std::ifstream in(testing::fixtures_dir() + "/goldens/tokenizer_" + name + ".golden.json");
  return nlohmann::json::parse(in);
}

class TokenizerGoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto loaded = Tokenizer::load(testing::tokenizer_dir(GetParam()));
    ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
    tokenizer_ = *loaded;
    golden_ = load_golden(GetParam());
  }
  std::shared_ptr<const Tokenizer> tokenizer_;
  nlohmann::json golden_;
};

TEST_P(TokenizerGoldenTest, EncodesEveryCaseExactly) {
  int checked = 0;
  for (const auto& c : golden_["cases"]) {
    const std::string text = c["text"];
    EXPECT_EQ(tokenizer_->encode(text, false), c["ids"].get<std::vector<int32_t>>()) << "text: " << text;
    EXPECT_EQ(tokenizer_->encode(text, true), c["ids_with_bos"].get<std::vector<int32_t>>()) << "text: " << text;
    ++checked;
  }
  EXPECT_GT(checked, 100);
}

TEST_P(TokenizerGoldenTest, DecodesEveryCaseExactly) {
  for (const auto& c : golden_["cases"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tokenizer_->decode(ids, false), c["decoded"].get<std::string>()) << "text: " << c["text"];
    EXPECT_EQ(tokenizer_->decode(ids, true), c["decoded_skip_special"].get<std::string>()) << "text: " << c["text"];
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, TokenizerGoldenTest, ::testing::Values("deepseek_v3", "qwen3", "tiny"),
                         [](const ::testing::TestParamInfo<std::string>& param) { return param.param; });

}  // namespace
}  // namespace seekserve
