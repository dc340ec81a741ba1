#include "backend/cpu_attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/avx512_math.h"

namespace seekserve {

namespace {

constexpr int kQueries = 12;  // query rows per task
constexpr int kKeys = 16;     // key positions per chunk (one vector of scores)

// Keys of chunk c of kv head g transposed: keys_t[(g * n_chunks + c) * D * 16 + d * 16 + j] is
// dim d of position 16 c + j (zero past `last`). Made once per call for all heads and query
// blocks that share them (each task used to transpose its own chunks: O(tokens^2) scalar moves).
void transpose_keys(const GqaAttentionArgs& a, int64_t kvh, int64_t c, int64_t last, float* kt) {
  const int64_t D = a.head_dim, kv_row = a.n_kv_heads * D;
  for (int j = 0; j < kKeys; ++j) {
    const int64_t pos = c * kKeys + j;
    if (pos > last) {
      for (int64_t d = 0; d < D; ++d) kt[d * kKeys + j] = 0.0f;
      continue;
    }
    const float* k = a.k_pool + kv_slot(a.block_table, a.block_size, pos) * kv_row + kvh * D;
    for (int64_t d = 0; d < D; ++d) kt[d * kKeys + j] = k[d];
  }
}

// One task: head h, query tokens [t0, t0 + nq). Both products keep the 12 queries' partial
// results in registers and stream one vector of keys or values per step (one load per 12 FMAs);
// value rows are read where the cache holds them.
__attribute__((target("avx512f"))) void attend_block(const GqaAttentionArgs& a, const float* keys_t, int64_t n_chunks, int64_t h,
                                                     int64_t t0, int nq, std::vector<float>& scratch) {
  const int64_t D = a.head_dim, kv_row = a.n_kv_heads * D, kvh = h / (a.n_heads / a.n_kv_heads);
  const int64_t dv = (D + 15) / 16;  // vectors per value row
  const __mmask16 tail = static_cast<__mmask16>(D % 16 == 0 ? 0xffff : (1u << (D % 16)) - 1);  // the last slice's dims
  // scratch: outputs [12][dv * 16], queries [12][D] (scaled; zero rows past nq), probabilities [12][16].
  scratch.assign(static_cast<size_t>(kQueries * dv * 16 + kQueries * D + kQueries * kKeys), 0.0f);
  float* out = scratch.data();
  float* q = out + kQueries * dv * 16;
  float* pb = q + kQueries * D;
  for (int i = 0; i < nq; ++i)
    for (int64_t d = 0; d < D; ++d) q[i * D + d] = a.q[(t0 + i) * a.q_stride + h * D + d] * a.scale;
  float m[kQueries], l[kQueries], corr[kQueries];
  for (int i = 0; i < kQueries; ++i) m[i] = -INFINITY, l[i] = 0.0f;
  const int64_t last = a.positions[t0 + nq - 1];
  for (int64_t c0 = 0; c0 <= last; c0 += kKeys) {
    const int keys = static_cast<int>(std::min<int64_t>(kKeys, last + 1 - c0));
    const float* kt = keys_t + (kvh * n_chunks + c0 / kKeys) * D * kKeys;
    const float* vrow[kKeys];
    for (int j = 0; j < keys; ++j) vrow[j] = a.v_pool + kv_slot(a.block_table, a.block_size, c0 + j) * kv_row + kvh * D;
    // Scores of all 12 queries against the chunk.
    __m512 s[kQueries];
    for (int i = 0; i < kQueries; ++i) s[i] = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; ++d) {
      const __m512 k = _mm512_loadu_ps(kt + d * kKeys);
      for (int i = 0; i < kQueries; ++i) s[i] = _mm512_fmadd_ps(_mm512_set1_ps(q[i * D + d]), k, s[i]);
    }
    // Online softmax per query (causal and chunk-end mask).
    for (int i = 0; i < kQueries; ++i) {
      const int64_t visible = i < nq ? std::min<int64_t>(keys, a.positions[t0 + i] - c0 + 1) : 0;
      if (visible <= 0) {  // the chunk is in this query's future (or the row is padding)
        corr[i] = 1.0f;
        _mm512_storeu_ps(pb + i * kKeys, _mm512_setzero_ps());
        continue;
      }
      const __mmask16 live = static_cast<__mmask16>((1u << visible) - 1);
      const __m512 si = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), live, s[i]);
      const float m_new = std::max(m[i], hmax512(si));
      corr[i] = std::exp(m[i] - m_new);
      const __m512 p = _mm512_maskz_mov_ps(live, exp512(_mm512_sub_ps(si, _mm512_set1_ps(m_new))));
      l[i] = l[i] * corr[i] + hsum512(p);
      m[i] = m_new;
      _mm512_storeu_ps(pb + i * kKeys, p);
    }
    // out = out * correction + P V, one 16-wide slice of the value rows at a time.
    for (int64_t b = 0; b < dv; ++b) {
      __m512 acc[kQueries];
      for (int i = 0; i < kQueries; ++i)
        acc[i] = _mm512_mul_ps(_mm512_loadu_ps(out + i * dv * 16 + b * 16), _mm512_set1_ps(corr[i]));
      const __mmask16 dims = b == dv - 1 ? tail : static_cast<__mmask16>(0xffff);
      for (int j = 0; j < keys; ++j) {
        const __m512 v = _mm512_maskz_loadu_ps(dims, vrow[j] + b * 16);
        for (int i = 0; i < kQueries; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(pb[i * kKeys + j]), v, acc[i]);
      }
      for (int i = 0; i < kQueries; ++i) _mm512_storeu_ps(out + i * dv * 16 + b * 16, acc[i]);
    }
  }
  for (int i = 0; i < nq; ++i) {
    const float inv = 1.0f / l[i];
    float* dst = a.out + ((t0 + i) * a.n_heads + h) * D;
    for (int64_t d = 0; d < D; ++d) dst[d] = out[i * dv * 16 + d] * inv;
  }
}

}  // namespace

void gqa_attention_tiled_avx512(const GqaAttentionArgs& a, ThreadPool& pool) {
  const int64_t blocks = (a.n_tokens + kQueries - 1) / kQueries;
  const int64_t last = a.positions[a.n_tokens - 1];  // positions increase: the furthest any query sees
  const int64_t n_chunks = last / kKeys + 1, chunk_floats = a.head_dim * kKeys;
  thread_local std::vector<float> keys_t;  // grow-only
  if (keys_t.size() < static_cast<size_t>(a.n_kv_heads * n_chunks * chunk_floats))
    keys_t.resize(static_cast<size_t>(a.n_kv_heads * n_chunks * chunk_floats));
  float* kt = keys_t.data();
  pool.run(a.n_kv_heads * n_chunks, [&](int64_t task) {
    transpose_keys(a, task / n_chunks, task % n_chunks, last, kt + task * chunk_floats);
  });
  pool.run(a.n_heads * blocks, [&](int64_t task) {
    thread_local std::vector<float> scratch;
    const int64_t h = task % a.n_heads, t0 = (task / a.n_heads) * kQueries;
    attend_block(a, kt, n_chunks, h, t0, static_cast<int>(std::min<int64_t>(kQueries, a.n_tokens - t0)), scratch);
  });
}

}  // namespace seekserve
