// Kernels timed alone on the device (seekserve bench --kernel), for goals stated per kernel: the
// MLA decode attention over a paged latent cache at a given batch and context.
#pragma once

#include <cstdint>

#include "core/status.h"

namespace seekserve::cuda {

struct MlaDecodeShape {
  int64_t n_heads = 0, kv_rank = 0, rope_dim = 0, nope_dim = 0;  // from the model's config
  int64_t batch = 0, context = 0;                                // sequences, cached positions each
  int64_t block_size = 16;                                       // cache rows a block (the engine's)
};

struct MlaDecodeTiming {
  double ms_median = 0;     // one mla_attention call: every head of every sequence, one new token each
  double latent_bytes = 0;  // cache bytes it must read: batch * context * (kv_rank + rope_dim) * 2
  int64_t splits = 0;       // split-KV slices a sequence took
};

// Median of 20 calls after a warm-up, timed with events; the cache holds constant bf16 values
// in blocks assigned to sequences in shuffled order (as a long-running pool's would be).
Result<MlaDecodeTiming> time_mla_decode(const MlaDecodeShape& shape);

// Opens (true) or closes the profiler's collection window (cudaProfilerStart/Stop): a profiler
// started with collection off (ncu --profile-from-start off) then sees only what ran inside.
void profiler_window(bool open);

}  // namespace seekserve::cuda
