#include "tokenizer/bpe.h"

#include <queue>

#include "tokenizer/utf8.h"

namespace seekserve {

namespace {

constexpr uint64_t kEmptyKey = ~uint64_t{0};

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

uint64_t hash_key(uint64_t k) {
  k ^= k >> 31;
  k *= 0x7fb5d329728ea185ULL;
  k ^= k >> 27;
  return k;
}

// Byte-level text -> raw bytes; text with characters outside the alphabet keeps its UTF-8.
std::string byte_level_to_bytes(const std::string& text) {
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    const size_t n = utf8_sequence_length(text, i);
    if (n == 0) return text;
    size_t j = i;
    const int b = alphabet.char_to_byte(next_codepoint(text, &j));
    if (b < 0) return text;
    out.push_back(static_cast<char>(b));
    i += n;
  }
  return out;
}

// Token text -> id over texts that outlive it: a flat open-addressing table (8 bytes a slot,
// a hash tag to skip most string compares). Building the merge table does three lookups per
// merge, so this is most of tokenizer.json's load time.
class TextIndex {
 public:
  explicit TextIndex(const std::vector<std::string>& texts) : texts_(texts) {
    size_t capacity = 16;
    while (capacity < texts.size() * 2) capacity *= 2;
    slots_.assign(capacity, Slot{0, -1});
    mask_ = capacity - 1;
    for (size_t id = 0; id < texts.size(); ++id)
      if (!texts[id].empty() && find(texts[id]) < 0) insert(texts[id], static_cast<int32_t>(id));
  }
  int32_t find(std::string_view text) const {
    const uint64_t h = hash(text);
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.id < 0) return -1;
      if (s.tag == tag && texts_[static_cast<size_t>(s.id)] == text) return s.id;
    }
  }

 private:
  struct Slot {
    uint32_t tag;
    int32_t id;
  };
  static uint64_t hash(std::string_view s) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
    return hash_key(h);
  }
  void insert(std::string_view text, int32_t id) {
    const uint64_t h = hash(text);
    uint64_t i = h & mask_;
    while (slots_[i].id >= 0) i = (i + 1) & mask_;
    slots_[i] = Slot{static_cast<uint32_t>(h >> 32), id};
  }
  const std::vector<std::string>& texts_;
  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
};

}  // namespace

Status BpeModel::build(std::vector<std::pair<std::string, int32_t>> vocab,
                       const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges) {
  ignore_merges_ = ignore_merges;
  int32_t max_id = -1;
  for (const auto& [text, id] : vocab) {
    if (id < 0) return invalid_argument("vocabulary id " + std::to_string(id) + " is negative");
    max_id = std::max(max_id, id);
  }
  bytes_.assign(static_cast<size_t>(max_id + 1), std::string());
  texts_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (auto& [text, id] : vocab) {
    bytes_[static_cast<size_t>(id)] = byte_level_to_bytes(text);
    texts_[static_cast<size_t>(id)] = std::move(text);
  }
  const TextIndex id_of_text(texts_);
  if (ignore_merges) {
    id_of_bytes_.reserve(texts_.size());
    for (size_t id = 0; id < bytes_.size(); ++id)
      if (!texts_[id].empty()) id_of_bytes_.emplace(bytes_[id], static_cast<int32_t>(id));
  }
  byte_id_.fill(-1);
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    append_utf8(alphabet.byte_to_char[static_cast<size_t>(b)], &ch);
    byte_id_[static_cast<size_t>(b)] = id_of_text.find(ch);
  }

  size_t capacity = 16;
  while (capacity < merges.size() * 2) capacity *= 2;
  merge_keys_.assign(capacity, kEmptyKey);
  merge_values_.assign(capacity, Merge{0, 0});
  merge_mask_ = capacity - 1;
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    joined.assign(a);
    joined += b;
    const int32_t ia = id_of_text.find(a), ib = id_of_text.find(b), im = id_of_text.find(joined);
    if (ia < 0 || ib < 0 || im < 0)
      return invalid_argument("merge " + std::to_string(rank) + " ('" + a + "' '" + b + "') uses a token missing from the vocabulary");
    const uint64_t key = pair_key(ia, ib);
    uint64_t slot = hash_key(key) & merge_mask_;
    while (merge_keys_[slot] != kEmptyKey && merge_keys_[slot] != key) slot = (slot + 1) & merge_mask_;
    if (merge_keys_[slot] == key) continue;  // a repeated merge keeps its first (best) rank
    merge_keys_[slot] = key;
    merge_values_[slot] = Merge{static_cast<uint32_t>(rank), im};
  }
  return Status::Ok();
}

const BpeModel::Merge* BpeModel::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = pair_key(left, right);
  uint64_t slot = hash_key(key) & merge_mask_;
  while (true) {
    const uint64_t k = merge_keys_[slot];
    if (k == key) return &merge_values_[slot];
    if (k == kEmptyKey) return nullptr;
    slot = (slot + 1) & merge_mask_;
  }
}

const std::string& BpeModel::token_bytes(int32_t id) const {
  static const std::string kEmpty;
  return id >= 0 && static_cast<size_t>(id) < bytes_.size() ? bytes_[static_cast<size_t>(id)] : kEmpty;
}

const std::string& BpeModel::token_text(int32_t id) const {
  static const std::string kEmpty;
  return id >= 0 && static_cast<size_t>(id) < texts_.size() ? texts_[static_cast<size_t>(id)] : kEmpty;
}

// Short words: rescan all pairs after each merge (n is small, the scan is cache-friendly).
void BpeModel::merge_small(std::vector<int32_t>* symbols) const {
  std::vector<int32_t>& s = *symbols;
  while (s.size() > 1) {
    uint32_t best_rank = UINT32_MAX;
    size_t best = 0;
    int32_t merged = -1;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const Merge* m = find_merge(s[i], s[i + 1]);
      if (m != nullptr && m->rank < best_rank) {
        best_rank = m->rank;
        best = i;
        merged = m->merged;
      }
    }
    if (merged < 0) break;
    s[best] = merged;
    s.erase(s.begin() + static_cast<long>(best) + 1);
  }
}

// Long words: a linked list of symbols and a heap of candidate merges ordered by (rank,
// position), entries invalidated lazily. O(n log n) instead of O(n^2).
void BpeModel::merge_large(std::vector<int32_t>* symbols) const {
  std::vector<int32_t>& s = *symbols;
  const size_t n = s.size();
  std::vector<int64_t> prev(n), next(n);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int64_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int64_t>(i + 1) : -1;
  }
  struct Candidate {
    uint32_t rank;
    int64_t pos;
    int32_t left, right;  // the symbols this candidate was computed for
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push = [&](int64_t pos) {
    if (pos < 0 || next[static_cast<size_t>(pos)] < 0) return;
    const int32_t l = s[static_cast<size_t>(pos)], r = s[static_cast<size_t>(next[static_cast<size_t>(pos)])];
    if (const Merge* m = find_merge(l, r)) heap.push({m->rank, pos, l, r});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int64_t>(i));
  std::vector<bool> dead(n, false);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const size_t p = static_cast<size_t>(c.pos);
    if (dead[p] || next[p] < 0) continue;
    const size_t q = static_cast<size_t>(next[p]);
    if (s[p] != c.left || s[q] != c.right) continue;  // stale: a neighbour changed
    s[p] = find_merge(c.left, c.right)->merged;
    dead[q] = true;
    next[p] = next[q];
    if (next[q] >= 0) prev[static_cast<size_t>(next[q])] = static_cast<int64_t>(p);
    push(prev[p]);
    push(static_cast<int64_t>(p));
  }
  std::vector<int32_t> out;
  for (int64_t i = 0; i >= 0; i = next[static_cast<size_t>(i)]) out.push_back(s[static_cast<size_t>(i)]);
  s = std::move(out);
}

void BpeModel::encode_word(std::string_view bytes, std::vector<int32_t>* out) const {
  if (bytes.empty()) return;
  if (ignore_merges_) {
    auto it = id_of_bytes_.find(std::string(bytes));
    if (it != id_of_bytes_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  thread_local std::vector<int32_t> symbols;
  symbols.clear();
  for (char c : bytes) {
    const int32_t id = byte_id_[static_cast<uint8_t>(c)];
    if (id >= 0) symbols.push_back(id);  // a byte missing from the vocabulary is dropped (no unk token)
  }
  if (symbols.size() <= 48) merge_small(&symbols);
  else merge_large(&symbols);
  out->insert(out->end(), symbols.begin(), symbols.end());
}

}  // namespace seekserve
