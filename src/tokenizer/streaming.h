// Streaming text out of generated tokens: an incremental decoder that never emits a partial
// UTF-8 character, a stop-string matcher that works across token boundaries, and the splitter
// that separates an R1-style model's <think> reasoning from its answer.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace seekserve {

// Concatenating everything add() and finish() return equals tokenizer.decode(all ids).
class StreamDecoder {
 public:
  StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
      : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}
  // Text completed by this token (possibly empty while a character is split across tokens).
  std::string add(int32_t id);
  // The rest; an unfinished character becomes U+FFFD.
  std::string finish();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;  // bytes not yet emitted
};

// Holds back text that might be the start of a stop string. Once a stop string is complete,
// stopped() turns true and nothing from the stop string on is ever emitted.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  // Text that can be shown now.
  std::string feed(std::string_view text);
  // Held-back text at the end of generation (when no stop string matched).
  std::string finish();
  bool stopped() const { return stopped_; }
  // The stop string that matched ("" when none).
  const std::string& matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
  std::string matched_;
};

// Splits streamed text into reasoning (between <think> and </think>) and content.
class ReasoningSplitter {
 public:
  struct Delta {
    std::string reasoning;
    std::string content;
  };
  // starts_in_reasoning: the prompt already opened the block (DeepSeek-R1 templates end the
  // prompt with "<think>\n"), so output is reasoning until </think>.
  explicit ReasoningSplitter(bool starts_in_reasoning, std::string open_tag = "<think>", std::string close_tag = "</think>");
  Delta feed(std::string_view text);
  Delta finish();

 private:
  enum class State { kStart, kReasoning, kContent };
  void route(std::string_view text, Delta* out);
  std::string open_, close_;
  State state_;
  std::string held_;
};

}  // namespace seekserve
