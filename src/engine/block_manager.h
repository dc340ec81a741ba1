// KV block accounting: which pool blocks are free, which hold a cached prefix, who uses what.
// Sees block ids and token ids only (no tensors), so it is unit-testable without a model.
//
// Prefix caching: a full block is keyed by a hash chained over every token from the start of
// the sequence up to its end. A new sequence walks its prompt block by block and takes cached
// blocks (ref-counted, read-only) while the keys match; the block's own tokens and its parent's
// key are compared too, so reuse happens only for an identical prefix. Blocks nobody uses keep
// their cached contents and are evicted least-recently-used when free blocks run out.
#pragma once

#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/status.h"

namespace seekserve {

class BlockManager {
 public:
  BlockManager(int64_t n_blocks, int64_t block_size);

  int64_t n_blocks() const { return n_blocks_; }
  int64_t block_size() const { return block_size_; }
  // Blocks that allocate() can hand out now (free ones and evictable cached ones).
  int64_t available() const { return static_cast<int64_t>(free_.size() + evictable_.size()); }
  int64_t used() const { return n_blocks_ - available(); }
  int64_t blocks_for(int64_t n_tokens) const { return (n_tokens + block_size_ - 1) / block_size_; }

  // Appends to `table` the cached blocks that hold a prefix of `tokens`, at most `max_tokens`
  // tokens' worth (full blocks only); takes a reference on each. Returns the tokens covered.
  int64_t match_prefix(std::span<const int32_t> tokens, int64_t max_tokens, std::vector<int32_t>* table);
  // Grows `table` to cover n_tokens. False (table unchanged) when blocks run out.
  bool grow(std::vector<int32_t>* table, int64_t n_tokens);
  // Registers the full blocks of `table` that hold tokens [0, n_computed) as cached prefixes.
  // Precondition: tokens holds at least n_computed tokens; table was built by this manager.
  void cache_full_blocks(std::span<const int32_t> tokens, int64_t n_computed, const std::vector<int32_t>& table,
                         int64_t* cached_blocks);
  // Drops the references of `table` and clears it.
  void release(std::vector<int32_t>* table);

  // Prefix-cache statistics, in blocks.
  int64_t prefix_queries() const { return prefix_queries_; }
  int64_t prefix_hits() const { return prefix_hits_; }

 private:
  struct Block {
    int32_t ref_count = 0;
    bool cached = false;             // registered in by_key_
    uint64_t key = 0;                // chained hash of the whole prefix up to this block's end
    uint64_t parent_key = 0;
    std::vector<int32_t> tokens;     // this block's tokens, to verify a key match
    std::list<int32_t>::iterator lru;  // position in evictable_ when ref_count == 0 and cached
  };
  static uint64_t chain(uint64_t parent, std::span<const int32_t> tokens);
  int32_t take_block();              // precondition: available() > 0
  void unreference(int32_t id);

  int64_t n_blocks_, block_size_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;               // never cached, unused
  std::list<int32_t> evictable_;            // cached, unused; front = least recently used
  std::unordered_map<uint64_t, int32_t> by_key_;
  int64_t prefix_queries_ = 0, prefix_hits_ = 0;
};

}  // namespace seekserve
