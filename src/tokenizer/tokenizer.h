// Hugging Face tokenizer.json (byte-level BPE family: DeepSeek, Qwen, Llama 3) and the
// special-token settings of tokenizer_config.json. Encoding and decoding are byte-exact with
// the Rust `tokenizers` library for the supported components; anything else is refused at load
// time with a message naming it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "tokenizer/bpe.h"
#include "tokenizer/regex.h"

namespace seekserve {

// A token matched in raw text before pre-tokenization ("added_tokens" in tokenizer.json).
struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;      // skipped by decode(skip_special_tokens)
  bool lstrip = false;       // the match swallows whitespace on its left
  bool rstrip = false;       // ... and on its right
  bool single_word = false;  // only matches when not inside a word
  bool normalized = false;   // matched in normalized rather than raw text
};

// Special-token settings from tokenizer_config.json.
struct TokenizerSettings {
  bool add_bos_token = false;
  bool add_eos_token = false;
  std::string bos_token;       // content, "" when none
  std::string eos_token;
  std::string chat_template;   // "" when the config has none
};

class Tokenizer {
 public:
  // Loads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json.
  static Result<std::shared_ptr<const Tokenizer>> load(const std::string& dir);
  // From the two files' contents; `label` prefixes errors. config_json may be empty.
  static Result<std::shared_ptr<const Tokenizer>> parse(std::string_view tokenizer_json, std::string_view config_json,
                                                        const std::string& label);

  // Text (UTF-8; invalid bytes are replaced by U+FFFD first) -> ids. add_special_tokens adds
  // BOS/EOS as the post-processor or tokenizer_config.json says. Thread-safe.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  // Ids -> text; invalid UTF-8 from partial tokens becomes U+FFFD. Unknown ids are skipped.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  // The bytes token `id` stands for when decoded (for streaming decoders), "" when unknown.
  const std::string& token_bytes(int32_t id) const;
  bool is_special(int32_t id) const;
  bool is_valid_id(int32_t id) const { return id >= 0 && static_cast<size_t>(id) < decoded_.size() && known_[static_cast<size_t>(id)]; }
  // Id of a token given by its text (added token content or byte-level vocabulary text).
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // One past the largest id.
  int64_t id_limit() const { return static_cast<int64_t>(decoded_.size()); }

  const TokenizerSettings& settings() const { return settings_; }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }

 private:
  enum class Normalizer { kNone, kNfc };
  struct PreStep {
    enum Kind { kSplit, kByteLevel } kind;
    std::shared_ptr<const Regex> regex;  // kSplit; kByteLevel with use_regex
    bool add_prefix_space = false;       // kByteLevel
  };
  struct TemplatePiece {
    bool is_sequence = false;  // the input itself; else the special token `id`
    int32_t id = 0;
  };

  Status parse_added_tokens(const void* json);
  Status parse_normalizer(const void* json);
  Status parse_pre_tokenizer(const void* json);
  Status parse_post_processor(const void* json);
  Status parse_decoder(const void* json);
  Status parse_model(const void* json);
  Status parse_settings(std::string_view config_json, const std::string& label);
  void finish();

  // Splits raw text at added tokens: appends (segment, added id or -1) pairs.
  void split_added(std::string_view text, bool normalized_pass, std::vector<std::pair<std::string, int32_t>>* out) const;
  void encode_segment(std::string_view text, std::vector<int32_t>* out) const;

  // Streamed out of tokenizer.json by the parser, consumed by parse_model.
  std::vector<std::pair<std::string, int32_t>> vocab_;
  std::vector<std::pair<std::string, std::string>> merges_;
  BpeModel bpe_;
  Normalizer normalizer_ = Normalizer::kNone;
  std::vector<PreStep> pre_steps_;
  std::vector<AddedToken> added_;
  // Added tokens by first byte, longest first: leftmost-longest matching without a trie.
  std::array<std::vector<int32_t>, 256> added_by_first_byte_;
  bool has_template_ = false;
  std::vector<TemplatePiece> template_single_;
  TokenizerSettings settings_;
  std::optional<int32_t> bos_id_, eos_id_;
  std::vector<std::string> decoded_;  // id -> bytes the decoder produces
  std::vector<uint8_t> special_;      // id -> special
  std::vector<uint8_t> known_;        // id -> present in vocab or added tokens
};

}  // namespace seekserve
