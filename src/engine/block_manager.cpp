#include "engine/block_manager.h"

#include <algorithm>

namespace seekserve {

BlockManager::BlockManager(int64_t n_blocks, int64_t block_size)
    : n_blocks_(n_blocks), block_size_(block_size), blocks_(static_cast<size_t>(n_blocks)) {
  SS_CHECK(n_blocks > 0 && block_size > 0, "the KV pool needs blocks");
  for (int64_t i = n_blocks - 1; i >= 0; --i) free_.push_back(static_cast<int32_t>(i));
}

uint64_t BlockManager::chain(uint64_t parent, std::span<const int32_t> tokens) {
  uint64_t h = parent ^ 0x9e3779b97f4a7c15ULL;
  for (int32_t t : tokens) {
    h ^= static_cast<uint64_t>(static_cast<uint32_t>(t)) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
  }
  return h;
}

int64_t BlockManager::match_prefix(std::span<const int32_t> tokens, int64_t max_tokens, std::vector<int32_t>* table) {
  SS_CHECK(table->empty(), "prefix matching starts from an empty block table");
  uint64_t parent = 0;
  int64_t covered = 0;
  while (covered + block_size_ <= std::min<int64_t>(max_tokens, static_cast<int64_t>(tokens.size()))) {
    const auto block_tokens = tokens.subspan(static_cast<size_t>(covered), static_cast<size_t>(block_size_));
    const uint64_t key = chain(parent, block_tokens);
    ++prefix_queries_;
    auto it = by_key_.find(key);
    if (it == by_key_.end()) break;
    Block& b = blocks_[static_cast<size_t>(it->second)];
    if (b.parent_key != parent || !std::equal(b.tokens.begin(), b.tokens.end(), block_tokens.begin())) break;
    if (b.ref_count == 0) evictable_.erase(b.lru);
    ++b.ref_count;
    ++prefix_hits_;
    table->push_back(it->second);
    covered += block_size_;
    parent = key;
  }
  return covered;
}

int32_t BlockManager::take_block() {
  int32_t id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else {
    SS_CHECK(!evictable_.empty(), "take_block with no block available");
    id = evictable_.front();  // least recently used cached block
    evictable_.pop_front();
    Block& b = blocks_[static_cast<size_t>(id)];
    by_key_.erase(b.key);
    b.cached = false;
    b.tokens.clear();
  }
  blocks_[static_cast<size_t>(id)].ref_count = 1;
  return id;
}

bool BlockManager::grow(std::vector<int32_t>* table, int64_t n_tokens) {
  const int64_t need = blocks_for(n_tokens) - static_cast<int64_t>(table->size());
  if (need <= 0) return true;
  if (need > available()) return false;
  for (int64_t i = 0; i < need; ++i) table->push_back(take_block());
  return true;
}

void BlockManager::cache_full_blocks(std::span<const int32_t> tokens, int64_t n_computed, const std::vector<int32_t>& table,
                                     int64_t* cached_blocks) {
  SS_CHECK(static_cast<int64_t>(tokens.size()) >= n_computed, "more tokens computed than known");
  uint64_t parent = 0;
  const int64_t full = std::min<int64_t>(n_computed / block_size_, static_cast<int64_t>(table.size()));
  for (int64_t i = 0; i < full; ++i) {
    Block& b = blocks_[static_cast<size_t>(table[static_cast<size_t>(i)])];
    if (i < *cached_blocks) {  // registered before (or taken from the cache): just follow the chain
      parent = b.key;
      continue;
    }
    const auto block_tokens = tokens.subspan(static_cast<size_t>(i * block_size_), static_cast<size_t>(block_size_));
    const uint64_t key = chain(parent, block_tokens);
    if (!b.cached && by_key_.find(key) == by_key_.end()) {
      b.cached = true;
      b.key = key;
      b.parent_key = parent;
      b.tokens.assign(block_tokens.begin(), block_tokens.end());
      by_key_.emplace(key, table[static_cast<size_t>(i)]);
    } else if (!b.cached) {
      b.key = key;  // an identical block is already cached; this one stays private
    }
    parent = key;
  }
  *cached_blocks = std::max(*cached_blocks, full);
}

void BlockManager::unreference(int32_t id) {
  Block& b = blocks_[static_cast<size_t>(id)];
  SS_CHECK(b.ref_count > 0, "releasing a block nobody holds");
  if (--b.ref_count > 0) return;
  if (b.cached) {
    evictable_.push_back(id);
    b.lru = std::prev(evictable_.end());
  } else {
    free_.push_back(id);
  }
}

void BlockManager::release(std::vector<int32_t>* table) {
  // Release from the end so a sequence's tail blocks are evicted before its shared prefix.
  for (auto it = table->rbegin(); it != table->rend(); ++it) unreference(*it);
  table->clear();
}

}  // namespace seekserve
