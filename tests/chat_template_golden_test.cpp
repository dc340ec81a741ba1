// The real chat templates (DeepSeek-V3, Qwen3, tiny) rendered as transformers/jinja2 renders
// them: text and ids of every golden chat case, and a clear error for the one jinja2 refuses.
#include <gtest/gtest.h>

#include <fstream>

#include "chat/chat_template.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace seekserve {
namespace {

class ChatTemplateGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ChatTemplateGoldenTest, RendersEveryCaseExactly) {
  auto tokenizer = Tokenizer::load(testing::tokenizer_dir(GetParam()));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().to_string();
  const TokenizerSettings& settings = (*tokenizer)->settings();
  auto tmpl = ChatTemplate::compile(settings.chat_template);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status().to_string();

  std::ifstream in(testing::fixtures_dir() + "/goldens/tokenizer_" + GetParam() + ".golden.json");
  const auto golden = nlohmann::ordered_json::parse(in);
  int rendered = 0, refused = 0;
  for (const auto& c : golden["chat"]) {
    ChatTemplateInputs inputs;
    inputs.messages = c["messages"];
    inputs.add_generation_prompt = c["add_generation_prompt"];
    inputs.bos_token = settings.bos_token;
    inputs.eos_token = settings.eos_token;
    auto text = tmpl->render(inputs);
    if (c.contains("error")) {
      ASSERT_FALSE(text.ok()) << "expected an error like " << c["error"];
      EXPECT_NE(text.status().message().find("NoneType"), std::string::npos) << text.status().message();
      EXPECT_NE(text.status().message().find("line "), std::string::npos) << text.status().message();
      ++refused;
      continue;
    }
    ASSERT_TRUE(text.ok()) << text.status().to_string();
    EXPECT_EQ(*text, c["text"].get<std::string>()) << c["messages"].dump();
    EXPECT_EQ((*tokenizer)->encode(*text, false), c["ids"].get<std::vector<int32_t>>()) << c["messages"].dump();
    ++rendered;
  }
  EXPECT_GE(rendered, 5);
  EXPECT_EQ(refused, GetParam() == "qwen3" ? 1 : 0);
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, ChatTemplateGoldenTest, ::testing::Values("deepseek_v3", "qwen3", "tiny"),
                         [](const ::testing::TestParamInfo<std::string>& param) { return param.param; });

}  // namespace
}  // namespace seekserve
