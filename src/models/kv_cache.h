// A per-sequence KV cache in contiguous per-layer buffers. Each cached token holds two rows
// per layer: for GQA models keys [n_kv_heads * head_dim] and values; for MLA models the
// normalized latent c_kv [kv_lora_rank] and the rotated shared key k_pe [rope_dim].
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace seekserve {

class KvCache {
 public:
  KvCache() = default;
  KvCache(int64_t n_layers, int64_t a_width, int64_t b_width)
      : a_width_(a_width), b_width_(b_width), a_(static_cast<size_t>(n_layers)), b_(static_cast<size_t>(n_layers)) {}

  // Tokens whose rows are committed.
  int64_t n_tokens() const { return n_tokens_; }
  int64_t n_layers() const { return static_cast<int64_t>(a_.size()); }
  int64_t a_width() const { return a_width_; }
  int64_t b_width() const { return b_width_; }
  // Bytes held for `n` tokens: what a paged pool must budget per token.
  int64_t bytes_per_token() const { return n_layers() * (a_width_ + b_width_) * 4; }

  // Makes room for rows [0, n) in every layer; rows past n_tokens() are scratch until commit.
  void reserve(int64_t n) {
    for (auto& v : a_) v.resize(static_cast<size_t>(n * a_width_));
    for (auto& v : b_) v.resize(static_cast<size_t>(n * b_width_));
    capacity_ = n;
  }
  // Marks rows [0, n) valid. Precondition: n <= capacity.
  void commit(int64_t n) {
    SS_CHECK(n <= capacity_, "commit past reserved rows");
    n_tokens_ = n;
  }
  // Forgets rows past n (keeps memory).
  void truncate(int64_t n) {
    SS_CHECK(n >= 0 && n <= n_tokens_, "truncate past the end");
    n_tokens_ = n;
  }

  // Row `pos` of layer `layer` (pos < capacity).
  float* a(int64_t layer, int64_t pos) { return a_[static_cast<size_t>(layer)].data() + pos * a_width_; }
  float* b(int64_t layer, int64_t pos) { return b_[static_cast<size_t>(layer)].data() + pos * b_width_; }

 private:
  int64_t a_width_ = 0;
  int64_t b_width_ = 0;
  int64_t n_tokens_ = 0;
  int64_t capacity_ = 0;
  std::vector<std::vector<float>> a_;  // per layer [capacity, a_width]
  std::vector<std::vector<float>> b_;  // per layer [capacity, b_width]
};

}  // namespace seekserve
