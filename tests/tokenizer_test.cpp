// tokenizer.json features beyond the goldens, on a hand-made byte-level vocabulary: added-token
// stripping rules, the TemplateProcessing post-processor, and refusal of unsupported components.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace seekserve {
namespace {

// 256 byte-level single-character tokens (id = byte) plus one merge "a"+"b".
nlohmann::json base_tokenizer() {
  nlohmann::json vocab = nlohmann::json::object();
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    append_utf8(alphabet.byte_to_char[static_cast<size_t>(b)], &ch);
    vocab[ch] = b;
  }
  vocab["ab"] = 300;
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b"}}}},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"added_tokens", nlohmann::json::array()}};
}

nlohmann::json added(int id, const std::string& content, bool lstrip, bool rstrip, bool single_word) {
  return {{"id", id}, {"content", content}, {"lstrip", lstrip}, {"rstrip", rstrip}, {"single_word", single_word},
          {"normalized", false}, {"special", true}};
}

std::shared_ptr<const Tokenizer> make(const nlohmann::json& j, const std::string& config = "") {
  auto t = Tokenizer::parse(j.dump(), config, "test/tokenizer.json");
  EXPECT_TRUE(t.ok()) << t.status().to_string();
  return t.ok() ? *t : nullptr;
}

std::vector<int32_t> bytes_of(const std::string& s) {
  std::vector<int32_t> ids;
  for (unsigned char c : s) ids.push_back(c);
  return ids;
}

TEST(TokenizerTest, MergesApplyWithinAWord) {
  auto t = make(base_tokenizer());
  EXPECT_EQ(t->encode("xaby", false), (std::vector<int32_t>{'x', 300, 'y'}));
  EXPECT_EQ(t->decode(std::vector<int32_t>{'x', 300, 'y'}, false), "xaby");
}

TEST(TokenizerTest, AddedTokenStripRules) {
  nlohmann::json j = base_tokenizer();
  j["added_tokens"] = {added(400, "<mask>", true, false, false), added(401, "<r>", false, true, false),
                       added(402, "<w>", false, false, true), added(403, "<plain>", false, false, false)};
  auto t = make(j);
  // lstrip swallows the whitespace on its left; rstrip on its right.
  EXPECT_EQ(t->encode("x  <mask>y", false), (std::vector<int32_t>{'x', 400, 'y'}));
  EXPECT_EQ(t->encode("x<r> \n y", false), (std::vector<int32_t>{'x', 401, 'y'}));
  EXPECT_EQ(t->encode("x <plain> y", false), (std::vector<int32_t>{'x', ' ', 403, ' ', 'y'}));
  // single_word: only a whole word matches.
  EXPECT_EQ(t->encode("x<w>y", false), bytes_of("x<w>y"));
  EXPECT_EQ(t->encode("x <w> y", false), (std::vector<int32_t>{'x', ' ', 402, ' ', 'y'}));
  // Decoding skips special tokens on request.
  EXPECT_EQ(t->decode(std::vector<int32_t>{'x', 403, 'y'}, true), "xy");
  EXPECT_EQ(t->decode(std::vector<int32_t>{'x', 403, 'y'}, false), "x<plain>y");
}

TEST(TokenizerTest, TemplateProcessingAddsSpecialTokens) {
  nlohmann::json j = base_tokenizer();
  j["added_tokens"] = {added(500, "<s>", false, false, false)};
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                         {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {500}}, {"tokens", {"<s>"}}}}}}};
  auto t = make(j);
  EXPECT_EQ(t->encode("xy", true), (std::vector<int32_t>{500, 'x', 'y'}));
  EXPECT_EQ(t->encode("xy", false), (std::vector<int32_t>{'x', 'y'}));
}

TEST(TokenizerTest, BosAndEosFromTokenizerConfigInBothForms) {
  nlohmann::json j = base_tokenizer();
  j["added_tokens"] = {added(500, "<s>", false, false, false), added(501, "</s>", false, false, false)};
  auto t = make(j, R"({"add_bos_token": true, "add_eos_token": true, "bos_token": {"content": "<s>"}, "eos_token": "</s>"})");
  EXPECT_EQ(t->encode("x", true), (std::vector<int32_t>{500, 'x', 501}));
  EXPECT_EQ(t->bos_id(), 500);
  EXPECT_EQ(t->eos_id(), 501);
}

TEST(TokenizerTest, RefusesUnsupportedComponentsByName) {
  const std::vector<std::pair<std::function<void(nlohmann::json&)>, std::string>> cases = {
      {[](nlohmann::json& j) { j["model"]["type"] = "WordPiece"; }, "model type \"WordPiece\""},
      {[](nlohmann::json& j) { j["normalizer"] = {{"type", "Lowercase"}}; }, "normalizer \"Lowercase\""},
      {[](nlohmann::json& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}}; }, "pre-tokenizer \"Metaspace\""},
      {[](nlohmann::json& j) { j["decoder"] = {{"type", "WordPiece"}}; }, "decoder \"WordPiece\""},
      {[](nlohmann::json& j) { j["post_processor"] = {{"type", "BertProcessing"}}; }, "post-processor \"BertProcessing\""},
      {[](nlohmann::json& j) {
         j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Removed"}, {"invert", false}};
       }, "Split behavior \"Removed\""},
      {[](nlohmann::json& j) {
         j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
       }, "does not compile"},
      {[](nlohmann::json& j) { j["model"]["byte_fallback"] = true; }, "byte_fallback"},
      {[](nlohmann::json& j) { j["model"]["merges"] = {"a zz"}; }, "missing from the vocabulary"},
  };
  for (const auto& [mutate, fragment] : cases) {
    nlohmann::json j = base_tokenizer();
    mutate(j);
    auto t = Tokenizer::parse(j.dump(), "", "test/tokenizer.json");
    ASSERT_FALSE(t.ok()) << fragment;
    EXPECT_NE(t.status().message().find(fragment), std::string::npos) << t.status().message();
    EXPECT_NE(t.status().message().find("test/tokenizer.json"), std::string::npos) << t.status().message();
  }
  EXPECT_FALSE(Tokenizer::parse("{not json", "", "x").ok());
}

}  // namespace
}  // namespace seekserve
