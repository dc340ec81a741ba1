// Streaming detokenization, stop strings and reasoning separation.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"
#include "tokenizer/streaming.h"
#include "tokenizer/utf8.h"

namespace seekserve {
namespace {

class StreamDecoderGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(StreamDecoderGoldenTest, TokenByTokenConcatenatesToFullDecode) {
  auto tokenizer = Tokenizer::load(testing::tokenizer_dir(GetParam()));
  ASSERT_TRUE(tokenizer.ok());
  std::ifstream in(testing::fixtures_dir() + "/goldens/tokenizer_" + GetParam() + ".golden.json");
  const auto golden = nlohmann::json::parse(in);
  for (const auto& c : golden["cases"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    for (bool skip : {false, true}) {
      StreamDecoder stream(**tokenizer, skip);
      std::string text;
      for (int32_t id : ids) {
        const std::string piece = stream.add(id);
        EXPECT_EQ(utf8_lossy(piece), piece) << "a chunk is not whole UTF-8";
        text += piece;
      }
      text += stream.finish();
      EXPECT_EQ(text, c[skip ? "decoded_skip_special" : "decoded"].get<std::string>());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, StreamDecoderGoldenTest, ::testing::Values("deepseek_v3", "qwen3", "tiny"),
                         [](const ::testing::TestParamInfo<std::string>& param) { return param.param; });

int32_t id_of_bytes(const Tokenizer& t, const std::string& bytes) {
  for (int32_t id = 0; id < t.id_limit(); ++id)
    if (t.token_bytes(id) == bytes && !t.is_special(id)) return id;
  return -1;
}

TEST(StreamDecoderTest, HoldsASplitCharacterUntilItIsComplete) {
  auto tokenizer = Tokenizer::load(testing::tokenizer_dir("tiny"));
  ASSERT_TRUE(tokenizer.ok());
  // "é" = C3 A9, fed as two single-byte tokens.
  const int32_t lead = id_of_bytes(**tokenizer, "\xC3"), tail = id_of_bytes(**tokenizer, "\xA9");
  ASSERT_GE(lead, 0);
  ASSERT_GE(tail, 0);
  StreamDecoder stream(**tokenizer, false);
  EXPECT_EQ(stream.add(lead), "");
  EXPECT_EQ(stream.add(tail), "\xC3\xA9");
  EXPECT_EQ(stream.finish(), "");
}

TEST(StreamDecoderTest, InvalidBytesBecomeReplacementCharacters) {
  auto tokenizer = Tokenizer::load(testing::tokenizer_dir("tiny"));
  ASSERT_TRUE(tokenizer.ok());
  const int32_t lone_continuation = id_of_bytes(**tokenizer, "\x80"), lead = id_of_bytes(**tokenizer, "\xE4"),
                a = id_of_bytes(**tokenizer, "a");
  StreamDecoder stream(**tokenizer, false);
  EXPECT_EQ(stream.add(lone_continuation), "\xEF\xBF\xBD");
  EXPECT_EQ(stream.add(lead), "");                  // may still become a character
  EXPECT_EQ(stream.add(a), "\xEF\xBF\xBD" "a");     // it cannot any more
  EXPECT_EQ(stream.add(lead), "");
  EXPECT_EQ(stream.finish(), "\xEF\xBF\xBD");       // unfinished at the end
  const std::vector<int32_t> ids = {lone_continuation, lead, a, lead};
  EXPECT_EQ((*tokenizer)->decode(ids, false), "\xEF\xBF\xBD\xEF\xBF\xBD" "a\xEF\xBF\xBD");
}

TEST(StopMatcherTest, StopsOnAStringSpanningChunks) {
  StopMatcher m({"stop here", "END"});
  std::string out = m.feed("Some text sto");
  EXPECT_EQ(out, "Some text ");  // "sto" might start "stop here"
  out += m.feed("p h");
  EXPECT_FALSE(m.stopped());
  out += m.feed("ere and more");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.matched(), "stop here");
  EXPECT_EQ(out, "Some text ");
  EXPECT_EQ(m.feed("later"), "");
}

TEST(StopMatcherTest, ReleasesHeldTextWhenItDiverges) {
  StopMatcher m({"stop"});
  EXPECT_EQ(m.feed("a st"), "a ");
  EXPECT_EQ(m.feed("ar"), "star");
  EXPECT_EQ(m.feed("st"), "");
  EXPECT_EQ(m.finish(), "st");
  EXPECT_FALSE(m.stopped());
}

TEST(StopMatcherTest, EarliestStopWins) {
  StopMatcher m({"world", "lo"});
  EXPECT_EQ(m.feed("hello world"), "hel");
  EXPECT_EQ(m.matched(), "lo");
}

ReasoningSplitter::Delta feed_all(ReasoningSplitter& s, const std::vector<std::string>& chunks) {
  ReasoningSplitter::Delta total;
  for (const auto& c : chunks) {
    auto d = s.feed(c);
    total.reasoning += d.reasoning;
    total.content += d.content;
  }
  auto d = s.finish();
  total.reasoning += d.reasoning;
  total.content += d.content;
  return total;
}

TEST(ReasoningSplitterTest, PromptOpenedTheBlock) {
  ReasoningSplitter s(/*starts_in_reasoning=*/true);
  const auto d = feed_all(s, {"Let me th", "ink.</th", "ink>\n\nThe answer", " is 4."});
  EXPECT_EQ(d.reasoning, "Let me think.");
  EXPECT_EQ(d.content, "\n\nThe answer is 4.");
}

TEST(ReasoningSplitterTest, ModelOpensTheBlockItself) {
  ReasoningSplitter s(false);
  const auto d = feed_all(s, {"<th", "ink>", "abc</think>", "def"});
  EXPECT_EQ(d.reasoning, "abc");
  EXPECT_EQ(d.content, "def");
}

TEST(ReasoningSplitterTest, NoBlockMeansAllContent) {
  ReasoningSplitter s(false);
  const auto d = feed_all(s, {"<b>", "Hello </think> there"});
  EXPECT_EQ(d.reasoning, "");
  EXPECT_EQ(d.content, "<b>Hello </think> there");
}

TEST(ReasoningSplitterTest, UnclosedReasoningStaysReasoning) {
  ReasoningSplitter s(true);
  const auto d = feed_all(s, {"still thinking </thi"});
  EXPECT_EQ(d.reasoning, "still thinking </thi");
  EXPECT_EQ(d.content, "");
}

}  // namespace
}  // namespace seekserve
