// Paged KV storage. A KvPool holds fixed-size blocks of token rows for every layer; a sequence
// owns a block table (block ids in order) that maps its position p to pool row
// block_table[p / block_size] * block_size + p % block_size.
//
// Each cached token holds two rows per layer: for GQA models keys [n_kv_heads * head_dim] and
// values; for MLA models the normalized latent c_kv [kv_lora_rank] and the rotated shared key
// k_pe [rope_dim] — never the expanded per-head keys and values.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace seekserve {

struct KvLayout {
  int64_t n_layers = 0;
  int64_t a_width = 0;  // floats per token in the first row (keys, or c_kv)
  int64_t b_width = 0;  // floats per token in the second row (values, or k_pe)
  int64_t element_bytes = 4;  // 4: float32 rows; 2: bf16 rows (the CUDA models)
  // The rows live in the model's device memory: a KvPool only numbers the blocks (the model
  // sizes its device pool to match) and holds no host rows.
  bool on_device = false;
  int64_t bytes_per_token() const { return n_layers * (a_width + b_width) * element_bytes; }
};

class KvPool {
 public:
  KvPool() = default;
  KvPool(KvLayout layout, int64_t n_blocks, int64_t block_size);

  const KvLayout& layout() const { return layout_; }
  int64_t n_blocks() const { return n_blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t bytes() const { return n_blocks_ * block_size_ * layout_.bytes_per_token(); }
  // Grows the pool to n_blocks (existing rows keep their contents; pointers are invalidated).
  void grow(int64_t n_blocks);

  // Base of layer `layer`'s rows: [n_blocks * block_size, a_width] and [.., b_width].
  float* a(int64_t layer) { return a_[static_cast<size_t>(layer)].data(); }
  float* b(int64_t layer) { return b_[static_cast<size_t>(layer)].data(); }

 private:
  KvLayout layout_;
  int64_t n_blocks_ = 0;
  int64_t block_size_ = 16;
  std::vector<std::vector<float>> a_, b_;  // per layer
};

// Pool row of position `pos` under a block table.
inline int64_t kv_slot(const int32_t* block_table, int64_t block_size, int64_t pos) {
  return static_cast<int64_t>(block_table[pos / block_size]) * block_size + pos % block_size;
}

// One sequence with a private, growing pool: the simple way to run a single prompt (tests,
// the single-request generate path). The batched engine shares one fixed pool instead.
class KvCache {
 public:
  KvCache() = default;
  KvCache(KvLayout layout, int64_t block_size = 16) : pool_(layout, 0, block_size) {}

  int64_t n_tokens() const { return n_tokens_; }
  // Makes room for n tokens (allocates blocks).
  void reserve(int64_t n);
  // Marks rows [0, n) valid (n <= reserved).
  void commit(int64_t n) {
    SS_CHECK(n <= static_cast<int64_t>(blocks_.size()) * pool_.block_size(), "commit past reserved rows");
    n_tokens_ = n;
  }
  void truncate(int64_t n) {
    SS_CHECK(n >= 0 && n <= n_tokens_, "truncate past the end");
    n_tokens_ = n;
  }
  KvPool& pool() { return pool_; }
  const std::vector<int32_t>& block_table() const { return blocks_; }

 private:
  KvPool pool_;
  std::vector<int32_t> blocks_;
  int64_t n_tokens_ = 0;
};

}  // namespace seekserve
