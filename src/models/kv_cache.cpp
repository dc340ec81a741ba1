#include "models/kv_cache.h"

namespace seekserve {

KvPool::KvPool(KvLayout layout, int64_t n_blocks, int64_t block_size)
    : layout_(layout), block_size_(block_size), a_(static_cast<size_t>(layout.n_layers)), b_(static_cast<size_t>(layout.n_layers)) {
  SS_CHECK(block_size > 0, "block size must be positive");
  grow(n_blocks);
}

void KvPool::grow(int64_t n_blocks) {
  if (n_blocks <= n_blocks_) return;
  n_blocks_ = n_blocks;
  if (layout_.on_device) return;
  const size_t rows = static_cast<size_t>(n_blocks * block_size_);
  for (auto& v : a_) v.resize(rows * static_cast<size_t>(layout_.a_width));
  for (auto& v : b_) v.resize(rows * static_cast<size_t>(layout_.b_width));
}

void KvCache::reserve(int64_t n) {
  const int64_t need = (n + pool_.block_size() - 1) / pool_.block_size();
  if (need <= static_cast<int64_t>(blocks_.size())) return;
  // Double the pool so reserving token by token stays amortized O(1).
  if (need > pool_.n_blocks()) pool_.grow(std::max(need, 2 * pool_.n_blocks()));
  while (static_cast<int64_t>(blocks_.size()) < need) blocks_.push_back(static_cast<int32_t>(blocks_.size()));
}

}  // namespace seekserve
