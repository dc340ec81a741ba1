// Byte-level BPE with ranked merges: a pre-token's bytes start as one symbol per byte and the
// adjacent pair with the lowest merge rank is merged until no ranked pair is left.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"

namespace seekserve {

class BpeModel {
 public:
  // vocab: token text in the byte-level alphabet -> id. merges: pairs of token texts, rank =
  // position. ignore_merges: a pre-token that is itself in the vocabulary maps to it directly.
  Status build(std::vector<std::pair<std::string, int32_t>> vocab,
               const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges);

  // Appends the ids of one pre-token given as raw bytes.
  void encode_word(std::string_view bytes, std::vector<int32_t>* out) const;

  // Raw bytes of a vocabulary token (its byte-level text decoded), "" for unknown ids.
  const std::string& token_bytes(int32_t id) const;
  // Byte-level text of a vocabulary token as written in tokenizer.json.
  const std::string& token_text(int32_t id) const;
  int32_t max_id() const { return static_cast<int32_t>(bytes_.size()) - 1; }

 private:
  struct Merge {
    uint32_t rank;
    int32_t merged;
  };
  const Merge* find_merge(int32_t left, int32_t right) const;
  void merge_small(std::vector<int32_t>* symbols) const;
  void merge_large(std::vector<int32_t>* symbols) const;

  std::array<int32_t, 256> byte_id_{};                      // single-byte token ids
  std::vector<std::string> bytes_;                          // id -> raw bytes
  std::vector<std::string> texts_;                          // id -> byte-level text
  std::unordered_map<std::string, int32_t> id_of_bytes_;    // for ignore_merges
  bool ignore_merges_ = false;
  // Open-addressing table keyed by (left << 32 | right); capacity a power of two.
  std::vector<uint64_t> merge_keys_;
  std::vector<Merge> merge_values_;
  uint64_t merge_mask_ = 0;
};

}  // namespace seekserve
