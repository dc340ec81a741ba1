#include "tokenizer/streaming.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace seekserve {

namespace {

// Length of the longest suffix of `text` that is a proper prefix of one of `tags`.
size_t partial_tag_suffix(std::string_view text, const std::vector<std::string>& tags) {
  size_t best = 0;
  for (const std::string& tag : tags)
    for (size_t n = std::min(text.size(), tag.size() - 1); n > best; --n)
      if (text.compare(text.size() - n, n, tag, 0, n) == 0) {
        best = n;
        break;
      }
  return best;
}

}  // namespace

std::string StreamDecoder::add(int32_t id) {
  if (!tokenizer_.is_valid_id(id) || (skip_special_ && tokenizer_.is_special(id))) return "";
  pending_ += tokenizer_.token_bytes(id);
  const size_t n = utf8_stable_prefix(pending_);
  std::string out = utf8_lossy(std::string_view(pending_).substr(0, n));
  pending_.erase(0, n);
  return out;
}

std::string StreamDecoder::finish() {
  std::string out = utf8_lossy(pending_);
  pending_.clear();
  return out;
}

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (auto& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
}

std::string StopMatcher::feed(std::string_view text) {
  if (stopped_) return "";
  held_ += text;
  size_t first = std::string::npos;
  for (const std::string& stop : stops_) {
    const size_t pos = held_.find(stop);
    if (pos < first) {
      first = pos;
      matched_ = stop;
    }
  }
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, first);
    held_.clear();
    return out;
  }
  const size_t keep = partial_tag_suffix(held_, stops_);
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::finish() {
  if (stopped_) return "";
  std::string out = std::move(held_);
  held_.clear();
  return out;
}

ReasoningSplitter::ReasoningSplitter(bool starts_in_reasoning, std::string open_tag, std::string close_tag)
    : open_(std::move(open_tag)), close_(std::move(close_tag)), state_(starts_in_reasoning ? State::kReasoning : State::kStart) {}

void ReasoningSplitter::route(std::string_view text, Delta* out) {
  held_ += text;
  while (!held_.empty()) {
    if (state_ == State::kStart) {
      // Undecided until the text either starts with the open tag or cannot any more.
      const size_t n = std::min(held_.size(), open_.size());
      if (held_.compare(0, n, open_, 0, n) != 0) {
        state_ = State::kContent;
        continue;
      }
      if (held_.size() < open_.size()) return;
      held_.erase(0, open_.size());
      state_ = State::kReasoning;
      continue;
    }
    if (state_ == State::kContent) {
      out->content += held_;
      held_.clear();
      return;
    }
    const size_t pos = held_.find(close_);
    if (pos != std::string::npos) {
      out->reasoning += held_.substr(0, pos);
      held_.erase(0, pos + close_.size());
      state_ = State::kContent;
      continue;
    }
    const size_t keep = partial_tag_suffix(held_, {close_});
    out->reasoning += held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return;
  }
}

ReasoningSplitter::Delta ReasoningSplitter::feed(std::string_view text) {
  Delta d;
  route(text, &d);
  return d;
}

ReasoningSplitter::Delta ReasoningSplitter::finish() {
  Delta d;
  if (state_ == State::kReasoning) d.reasoning += held_;
  else d.content += held_;
  held_.clear();
  return d;
}

}  // namespace seekserve
