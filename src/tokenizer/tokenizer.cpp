#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <deque>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "tokenizer/utf8.h"

namespace seekserve {

using nlohmann::json;

namespace {

// GPT-2's pre-tokenizer regex, used by ByteLevel when use_regex is true.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

const json& J(const void* p) { return *static_cast<const json*>(p); }

std::string type_of(const json& j) { return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : ""; }

bool is_unicode_whitespace(uint32_t cp) {
  return cp == ' ' || (cp >= 0x09 && cp <= 0x0d) || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

bool is_word_byte(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || static_cast<uint8_t>(c) >= 0x80; }

// Token content as the ByteLevel decoder yields it: mapped back to bytes when every character
// is in the byte-level alphabet, otherwise its own UTF-8.
std::string byte_level_decode_token(const std::string& text) {
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    if (utf8_sequence_length(text, i) == 0) return text;
    const int b = alphabet.char_to_byte(next_codepoint(text, &i));
    if (b < 0) return text;
    out.push_back(static_cast<char>(b));
  }
  return out;
}

// "content" of a token given as a string or as {"content": ...}; "" for null.
std::string token_content(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return "";
}

// Parses tokenizer.json in one pass: model.vocab and model.merges (hundreds of thousands of
// entries) stream straight into vectors; everything else becomes an ordinary DOM. About 3x
// faster than building the DOM of the whole file.
class TokenizerJsonSax : public nlohmann::json_sax<json> {
 public:
  explicit TokenizerJsonSax(json* root) : dom_(*root, /*allow_exceptions=*/false) {}

  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  bool malformed_merge = false;

  bool null() override { return mode_ == Mode::kDom ? dom_.null() : fail(); }
  bool boolean(bool v) override { return mode_ == Mode::kDom ? dom_.boolean(v) : fail(); }
  bool number_integer(number_integer_t v) override {
    if (mode_ == Mode::kVocab) return add_vocab(v);
    return mode_ == Mode::kDom ? dom_.number_integer(v) : fail();
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (mode_ == Mode::kVocab) return add_vocab(static_cast<int64_t>(v));
    return mode_ == Mode::kDom ? dom_.number_unsigned(v) : fail();
  }
  bool number_float(number_float_t v, const string_t& s) override { return mode_ == Mode::kDom ? dom_.number_float(v, s) : fail(); }
  bool binary(binary_t& v) override { return mode_ == Mode::kDom ? dom_.binary(v) : fail(); }
  bool string(string_t& v) override {
    if (mode_ == Mode::kDom) return dom_.string(v);
    if (mode_ != Mode::kMerges) return fail();
    if (depth_ == merges_depth_) {  // "a b"
      const size_t space = v.find(' ');
      if (space == std::string::npos || v.find(' ', space + 1) != std::string::npos) malformed_merge = true;
      else merges.emplace_back(v.substr(0, space), v.substr(space + 1));
    } else {
      pair_.push_back(std::move(v));
    }
    return true;
  }
  bool start_object(std::size_t n) override {
    ++depth_;
    kinds_.push_back('o');
    if (mode_ != Mode::kDom) return fail();
    if (depth_ == 3 && at_model_key("vocab")) mode_ = Mode::kVocab;
    return dom_.start_object(mode_ == Mode::kVocab ? 0 : n);
  }
  bool key(string_t& k) override {
    if (mode_ == Mode::kVocab) {
      key_ = std::move(k);
      return true;
    }
    if (keys_.size() <= static_cast<size_t>(depth_)) keys_.resize(static_cast<size_t>(depth_) + 1);
    keys_[static_cast<size_t>(depth_)] = k;
    return dom_.key(k);
  }
  bool end_object() override {
    --depth_;
    kinds_.pop_back();
    if (mode_ == Mode::kVocab) mode_ = Mode::kDom;
    return dom_.end_object();
  }
  bool start_array(std::size_t n) override {
    ++depth_;
    kinds_.push_back('a');
    if (mode_ == Mode::kMerges) {
      if (depth_ != merges_depth_ + 1) return fail();
      pair_.clear();
      return true;
    }
    if (mode_ != Mode::kDom) return fail();
    if (depth_ == 3 && at_model_key("merges")) {
      mode_ = Mode::kMerges;
      merges_depth_ = depth_;
      return dom_.start_array(0);
    }
    return dom_.start_array(n);
  }
  bool end_array() override {
    --depth_;
    kinds_.pop_back();
    if (mode_ == Mode::kMerges) {
      if (depth_ == merges_depth_) {  // closed one ["a", "b"] pair
        if (pair_.size() != 2) malformed_merge = true;
        else merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
        return true;
      }
      mode_ = Mode::kDom;
    }
    return dom_.end_array();
  }
  bool parse_error(std::size_t pos, const std::string& token, const nlohmann::detail::exception& ex) override {
    return dom_.parse_error(pos, token, ex);
  }

 private:
  enum class Mode { kDom, kVocab, kMerges };
  bool fail() {
    malformed_merge = true;
    return true;  // keep parsing; the caller reports the malformed entry
  }
  bool add_vocab(int64_t id) {
    if (id < 0 || id > INT32_MAX) {
      malformed_merge = true;
      return true;
    }
    vocab.emplace_back(std::move(key_), static_cast<int32_t>(id));
    return true;
  }
  bool at_model_key(const char* name) const {
    return keys_.size() > 2 && kinds_.size() == 3 && kinds_[0] == 'o' && kinds_[1] == 'o' && keys_[1] == "model" && keys_[2] == name;
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  Mode mode_ = Mode::kDom;
  int depth_ = 0;
  int merges_depth_ = 0;
  std::vector<std::string> keys_;
  std::vector<char> kinds_;
  std::string key_;
  std::vector<std::string> pair_;
};

}  // namespace

Result<std::shared_ptr<const Tokenizer>> Tokenizer::load(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string path = (fs::path(dir) / "tokenizer.json").string();
  SS_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  std::string config;
  const fs::path config_path = fs::path(dir) / "tokenizer_config.json";
  if (fs::exists(config_path)) {
    SS_ASSIGN_OR_RETURN(config, read_text_file(config_path.string()));
  }
  return parse(text, config, path);
}

Result<std::shared_ptr<const Tokenizer>> Tokenizer::parse(std::string_view tokenizer_json, std::string_view config_json,
                                                          const std::string& label) {
  json root;
  TokenizerJsonSax sax(&root);
  const bool parsed = json::sax_parse(tokenizer_json, &sax, json::input_format_t::json, /*strict=*/true);
  if (!parsed || root.is_discarded() || !root.is_object()) return invalid_argument(label + ": not a valid JSON object");
  if (sax.malformed_merge) return invalid_argument(label + ": model.vocab must map tokens to ids and model.merges hold pairs");
  auto tok = std::shared_ptr<Tokenizer>(new Tokenizer());
  tok->vocab_ = std::move(sax.vocab);
  tok->merges_ = std::move(sax.merges);
  auto with_label = [&](Status s) { return s.ok() ? s : Status(s.code(), label + ": " + s.message()); };
  const json null_json;
  auto field = [&](const char* key) -> const json& { return root.contains(key) ? root[key] : null_json; };
  SS_RETURN_IF_ERROR(with_label(tok->parse_model(&field("model"))));
  SS_RETURN_IF_ERROR(with_label(tok->parse_added_tokens(&field("added_tokens"))));
  SS_RETURN_IF_ERROR(with_label(tok->parse_normalizer(&field("normalizer"))));
  SS_RETURN_IF_ERROR(with_label(tok->parse_pre_tokenizer(&field("pre_tokenizer"))));
  SS_RETURN_IF_ERROR(with_label(tok->parse_post_processor(&field("post_processor"))));
  SS_RETURN_IF_ERROR(with_label(tok->parse_decoder(&field("decoder"))));
  SS_RETURN_IF_ERROR(tok->parse_settings(config_json, label));
  tok->finish();
  return std::shared_ptr<const Tokenizer>(std::move(tok));
}

Status Tokenizer::parse_model(const void* p) {
  const json& m = J(p);
  if (!m.is_object()) return invalid_argument("missing \"model\"");
  const std::string type = m.contains("type") && m["type"].is_string() ? m["type"].get<std::string>() : "BPE";
  if (type != "BPE") return unimplemented("model type \"" + type + "\" is not supported (supported: BPE)");
  if (m.contains("dropout") && m["dropout"].is_number() && m["dropout"].get<double>() != 0.0)
    return unimplemented("BPE dropout is not supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(key) && m[key].is_string() && !m[key].get<std::string>().empty())
      return unimplemented(std::string("BPE ") + key + " is not supported");
  if (m.contains("byte_fallback") && m["byte_fallback"].is_boolean() && m["byte_fallback"].get<bool>())
    return unimplemented("BPE byte_fallback is not supported (only byte-level BPE)");
  if (!m.contains("vocab") || !m["vocab"].is_object()) return invalid_argument("model.vocab must be an object");
  if (!m.contains("merges") || !m["merges"].is_array()) return invalid_argument("model.merges must be an array");
  if (vocab_.empty()) return invalid_argument("model.vocab is empty");

  const bool ignore_merges = m.contains("ignore_merges") && m["ignore_merges"].is_boolean() && m["ignore_merges"].get<bool>();
  Status st = bpe_.build(std::move(vocab_), merges_, ignore_merges);
  vocab_.clear();
  merges_.clear();
  merges_.shrink_to_fit();
  return st;
}

Status Tokenizer::parse_added_tokens(const void* p) {
  const json& list = J(p);
  if (list.is_null()) return Status::Ok();
  if (!list.is_array()) return invalid_argument("added_tokens must be an array");
  for (const auto& t : list) {
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") || !t["content"].is_string())
      return invalid_argument("an added token needs an integer \"id\" and a string \"content\"");
    AddedToken a;
    a.id = t["id"].get<int32_t>();
    a.content = t["content"].get<std::string>();
    auto flag = [&](const char* key) { return t.contains(key) && t[key].is_boolean() && t[key].get<bool>(); };
    a.special = flag("special");
    a.lstrip = flag("lstrip");
    a.rstrip = flag("rstrip");
    a.single_word = flag("single_word");
    a.normalized = flag("normalized");
    if (a.id < 0) return invalid_argument("added token '" + a.content + "' has a negative id");
    if (a.content.empty()) return invalid_argument("added token " + std::to_string(a.id) + " has empty content");
    added_.push_back(std::move(a));
  }
  return Status::Ok();
}

Status Tokenizer::parse_normalizer(const void* p) {
  const json& n = J(p);
  if (n.is_null()) return Status::Ok();
  const std::string type = type_of(n);
  if (type == "NFC") {
    normalizer_ = Normalizer::kNfc;
    return Status::Ok();
  }
  if (type == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array()) {
    for (const auto& child : n["normalizers"]) SS_RETURN_IF_ERROR(parse_normalizer(&child));
    return Status::Ok();
  }
  return unimplemented("normalizer \"" + type + "\" is not supported (supported: none, NFC)");
}

Status Tokenizer::parse_pre_tokenizer(const void* p) {
  const json& t = J(p);
  if (t.is_null()) return Status::Ok();
  const std::string type = type_of(t);
  if (type == "Sequence" && t.contains("pretokenizers") && t["pretokenizers"].is_array()) {
    for (const auto& child : t["pretokenizers"]) SS_RETURN_IF_ERROR(parse_pre_tokenizer(&child));
    return Status::Ok();
  }
  if (type == "Split") {
    const std::string behavior = t.contains("behavior") && t["behavior"].is_string() ? t["behavior"].get<std::string>() : "";
    if (behavior != "Isolated") return unimplemented("Split behavior \"" + behavior + "\" is not supported (supported: Isolated)");
    if (t.contains("invert") && t["invert"].is_boolean() && t["invert"].get<bool>()) return unimplemented("Split with invert: true is not supported");
    std::string pattern;
    const json& pat = t.contains("pattern") ? t["pattern"] : json();
    if (pat.contains("Regex") && pat["Regex"].is_string()) pattern = pat["Regex"].get<std::string>();
    else if (pat.contains("String") && pat["String"].is_string()) pattern = regex_escape(pat["String"].get<std::string>());
    else return invalid_argument("Split needs a pattern {\"Regex\": ...} or {\"String\": ...}");
    SS_ASSIGN_OR_RETURN(auto regex, Regex::compile(pattern));
    pre_steps_.push_back({PreStep::kSplit, std::move(regex), false});
    return Status::Ok();
  }
  if (type == "ByteLevel") {
    PreStep step{PreStep::kByteLevel, nullptr, false};
    step.add_prefix_space = t.contains("add_prefix_space") && t["add_prefix_space"].is_boolean() && t["add_prefix_space"].get<bool>();
    const bool use_regex = !t.contains("use_regex") || (t["use_regex"].is_boolean() && t["use_regex"].get<bool>());
    if (use_regex) {
      SS_ASSIGN_OR_RETURN(step.regex, Regex::compile(kGpt2Pattern));
    }
    pre_steps_.push_back(std::move(step));
    return Status::Ok();
  }
  return unimplemented("pre-tokenizer \"" + type + "\" is not supported (supported: Sequence, Split, ByteLevel)");
}

Status Tokenizer::parse_post_processor(const void* p) {
  const json& t = J(p);
  if (t.is_null()) return Status::Ok();
  const std::string type = type_of(t);
  if (type == "ByteLevel") return Status::Ok();  // only adjusts offsets
  if (type == "Sequence" && t.contains("processors") && t["processors"].is_array()) {
    for (const auto& child : t["processors"]) SS_RETURN_IF_ERROR(parse_post_processor(&child));
    return Status::Ok();
  }
  if (type == "TemplateProcessing") {
    if (!t.contains("single") || !t["single"].is_array()) return invalid_argument("TemplateProcessing needs \"single\"");
    has_template_ = true;
    for (const auto& piece : t["single"]) {
      if (piece.contains("Sequence")) {
        template_single_.push_back({true, 0});
      } else if (piece.contains("SpecialToken") && piece["SpecialToken"].contains("id")) {
        const std::string name = piece["SpecialToken"]["id"].get<std::string>();
        const json& specials = t.contains("special_tokens") ? t["special_tokens"] : json();
        if (!specials.contains(name) || !specials[name].contains("ids") || !specials[name]["ids"].is_array())
          return invalid_argument("TemplateProcessing names special token '" + name + "' without ids");
        for (const auto& id : specials[name]["ids"]) template_single_.push_back({false, id.get<int32_t>()});
      } else {
        return invalid_argument("TemplateProcessing piece must be Sequence or SpecialToken");
      }
    }
    return Status::Ok();
  }
  return unimplemented("post-processor \"" + type + "\" is not supported (supported: ByteLevel, TemplateProcessing, Sequence)");
}

Status Tokenizer::parse_decoder(const void* p) {
  const json& t = J(p);
  const std::string type = type_of(t);
  if (type == "ByteLevel") return Status::Ok();
  if (type == "Sequence" && t.contains("decoders") && t["decoders"].is_array() && t["decoders"].size() == 1)
    return parse_decoder(&t["decoders"][0]);
  return unimplemented("decoder \"" + (type.empty() ? std::string("null") : type) + "\" is not supported (supported: ByteLevel)");
}

Status Tokenizer::parse_settings(std::string_view config_json, const std::string& label) {
  if (config_json.empty()) return Status::Ok();
  json c = json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (c.is_discarded() || !c.is_object()) return invalid_argument(label + ": tokenizer_config.json is not a valid JSON object");
  auto flag = [&](const char* key) { return c.contains(key) && c[key].is_boolean() && c[key].get<bool>(); };
  settings_.add_bos_token = flag("add_bos_token");
  settings_.add_eos_token = flag("add_eos_token");
  if (c.contains("bos_token")) settings_.bos_token = token_content(c["bos_token"]);
  if (c.contains("eos_token")) settings_.eos_token = token_content(c["eos_token"]);
  if (c.contains("chat_template")) {
    const json& t = c["chat_template"];
    if (t.is_string()) {
      settings_.chat_template = t.get<std::string>();
    } else if (t.is_array()) {  // [{"name": "default", "template": ...}, ...]
      for (const auto& entry : t)
        if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") && entry["template"].is_string())
          settings_.chat_template = entry["template"].get<std::string>();
    }
  }
  return Status::Ok();
}

void Tokenizer::finish() {
  int64_t limit = bpe_.max_id() + 1;
  for (const AddedToken& a : added_) limit = std::max<int64_t>(limit, a.id + 1);
  decoded_.assign(static_cast<size_t>(limit), std::string());
  special_.assign(static_cast<size_t>(limit), 0);
  known_.assign(static_cast<size_t>(limit), 0);
  for (int32_t id = 0; id <= bpe_.max_id(); ++id) {
    decoded_[static_cast<size_t>(id)] = bpe_.token_bytes(id);
    known_[static_cast<size_t>(id)] = !bpe_.token_text(id).empty();
  }
  for (size_t i = 0; i < added_.size(); ++i) {
    const AddedToken& a = added_[i];
    decoded_[static_cast<size_t>(a.id)] = byte_level_decode_token(a.content);
    special_[static_cast<size_t>(a.id)] = a.special;
    known_[static_cast<size_t>(a.id)] = 1;
    added_by_first_byte_[static_cast<uint8_t>(a.content[0])].push_back(static_cast<int32_t>(i));
  }
  for (auto& list : added_by_first_byte_)
    std::stable_sort(list.begin(), list.end(), [&](int32_t x, int32_t y) {
      return added_[static_cast<size_t>(x)].content.size() > added_[static_cast<size_t>(y)].content.size();
    });
  if (!settings_.bos_token.empty()) bos_id_ = token_to_id(settings_.bos_token);
  if (!settings_.eos_token.empty()) eos_id_ = token_to_id(settings_.eos_token);
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  for (const AddedToken& a : added_)
    if (a.content == token) return a.id;
  for (int32_t id = 0; id <= bpe_.max_id(); ++id)
    if (bpe_.token_text(id) == token) return id;
  return std::nullopt;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  static const std::string kEmpty;
  return is_valid_id(id) ? decoded_[static_cast<size_t>(id)] : kEmpty;
}

bool Tokenizer::is_special(int32_t id) const { return is_valid_id(id) && special_[static_cast<size_t>(id)]; }

void Tokenizer::split_added(std::string_view text, bool normalized_pass,
                            std::vector<std::pair<std::string, int32_t>>* out) const {
  size_t segment_start = 0, i = 0;
  while (i < text.size()) {
    const AddedToken* match = nullptr;
    for (int32_t index : added_by_first_byte_[static_cast<uint8_t>(text[i])]) {
      const AddedToken& a = added_[static_cast<size_t>(index)];
      if (a.normalized != normalized_pass || text.compare(i, a.content.size(), a.content) != 0) continue;
      if (a.single_word && ((i > 0 && is_word_byte(text[i - 1])) ||
                            (i + a.content.size() < text.size() && is_word_byte(text[i + a.content.size()]))))
        continue;
      match = &a;
      break;
    }
    if (match == nullptr) {
      ++i;
      continue;
    }
    size_t start = i, end = i + match->content.size();
    if (match->lstrip)  // swallow whitespace back to the previous segment's end
      while (start > segment_start && is_unicode_whitespace(static_cast<uint8_t>(text[start - 1]))) --start;
    if (match->rstrip) {
      size_t j = end;
      while (j < text.size()) {
        size_t k = j;
        if (!is_unicode_whitespace(next_codepoint(text, &k))) break;
        j = k;
      }
      end = j;
    }
    if (start > segment_start) out->emplace_back(std::string(text.substr(segment_start, start - segment_start)), -1);
    out->emplace_back(std::string(), match->id);
    segment_start = i = end;
  }
  if (segment_start < text.size()) out->emplace_back(std::string(text.substr(segment_start)), -1);
}

void Tokenizer::encode_segment(std::string_view text, std::vector<int32_t>* out) const {
  // Pre-tokenize: each step splits every piece of the previous one.
  thread_local std::vector<std::string_view> pieces, next;
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  std::deque<std::string> owned;  // pieces that got a prefix space
  pieces.assign(1, text);
  for (const PreStep& step : pre_steps_) {
    next.clear();
    for (std::string_view piece : pieces) {
      if (step.kind == PreStep::kByteLevel && step.add_prefix_space && !piece.empty() && piece[0] != ' ') {
        owned.push_back(" " + std::string(piece));
        piece = owned.back();
      }
      if (!step.regex) {
        next.push_back(piece);
        continue;
      }
      matches.clear();
      step.regex->find_all(piece, &matches);
      size_t last = 0;
      for (const auto& [b, e] : matches) {
        if (b > last) next.push_back(piece.substr(last, b - last));
        next.push_back(piece.substr(b, e - b));
        last = e;
      }
      if (last < piece.size()) next.push_back(piece.substr(last));
    }
    pieces.swap(next);
  }
  for (std::string_view piece : pieces) bpe_.encode_word(piece, out);
}

std::vector<int32_t> Tokenizer::encode(std::string_view raw, bool add_special_tokens) const {
  const std::string text = utf8_lossy(raw);
  std::vector<int32_t> ids;
  std::vector<std::pair<std::string, int32_t>> first, second;
  split_added(text, /*normalized_pass=*/false, &first);
  for (auto& [segment, id] : first) {
    if (id >= 0) {
      ids.push_back(id);
      continue;
    }
    const std::string normalized = normalizer_ == Normalizer::kNfc ? nfc_normalize(segment) : std::move(segment);
    second.clear();
    split_added(normalized, /*normalized_pass=*/true, &second);
    for (const auto& [piece, piece_id] : second) {
      if (piece_id >= 0) ids.push_back(piece_id);
      else encode_segment(piece, &ids);
    }
  }
  if (!add_special_tokens) return ids;
  if (has_template_) {
    std::vector<int32_t> out;
    for (const TemplatePiece& p : template_single_) {
      if (p.is_sequence) out.insert(out.end(), ids.begin(), ids.end());
      else out.push_back(p.id);
    }
    return out;
  }
  if (settings_.add_bos_token && bos_id_) ids.insert(ids.begin(), *bos_id_);
  if (settings_.add_eos_token && eos_id_) ids.push_back(*eos_id_);
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (!is_valid_id(id)) continue;
    if (skip_special_tokens && special_[static_cast<size_t>(id)]) continue;
    bytes += decoded_[static_cast<size_t>(id)];
  }
  return utf8_lossy(bytes);
}

}  // namespace seekserve
