// Prefill attention on AVX-512 for grouped-query attention: query rows in blocks of 12 tokens of
// one head against keys in chunks of 16 positions. Each chunk's keys are transposed once a call
// ([dim][16], shared by every head and query block reading them) so each query's 16 scores come
// out of dim broadcast-FMAs with no horizontal sums; an online
// softmax (vectorized exp) folds each chunk into the running output. The row-at-a-time kernel in
// cpu_backend.cpp stays for decode, where a query has few neighbours to share key reads with.
#pragma once

#include "backend/backend.h"
#include "backend/thread_pool.h"

namespace seekserve {

// Query tokens from which the tiled kernel is used.
constexpr int64_t kTiledAttentionMinTokens = 12;

// Same contract as Backend::gqa_attention (the tokens' positions increase, as within a chunk).
void gqa_attention_tiled_avx512(const GqaAttentionArgs& args, ThreadPool& pool);

}  // namespace seekserve
