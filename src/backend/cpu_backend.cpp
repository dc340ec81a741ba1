#include "backend/cpu_backend.h"

#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <type_traits>

#include "backend/avx512_math.h"
#include "backend/cpu_attention.h"
#include "backend/cpu_gemm.h"
#include "backend/token_count_dispatch.h"
#include "core/dtype.h"

namespace seekserve {

namespace {

constexpr int kRows = 4;    // weight rows per micro-kernel call
constexpr int kTokens = 4;  // tokens per micro-kernel call
// How far ahead of the loads each weight row is prefetched (decode streams weights once).
constexpr int kPrefetchBytes = 1024;

// out[r][t] = dot(w[r], x[t]) over k < K: float32 rows.
using F32Kernel = void (*)(const float* const* w, const float* const* x, int64_t K, float out[kRows][kTokens]);

void block_f32_portable(const float* const* w, const float* const* x, int64_t K, float out[kRows][kTokens]) {
  for (int r = 0; r < kRows; ++r)
    for (int t = 0; t < kTokens; ++t) {
      float acc[8] = {};
      int64_t k = 0;
      for (; k + 8 <= K; k += 8)
        for (int j = 0; j < 8; ++j) acc[j] += w[r][k + j] * x[t][k + j];
      float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
      for (; k < K; ++k) s += w[r][k] * x[t][k];
      out[r][t] = s;
    }
}

__attribute__((target("avx2,fma"))) float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) void block_f32_avx2(const float* const* w, const float* const* x, int64_t K,
                                                        float out[kRows][kTokens]) {
  __m256 acc[kRows][kTokens];
  for (auto& row : acc)
    for (auto& a : row) a = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 xv[kTokens];
    for (int t = 0; t < kTokens; ++t) xv[t] = _mm256_loadu_ps(x[t] + k);
    for (int r = 0; r < kRows; ++r) {
      const __m256 wv = _mm256_loadu_ps(w[r] + k);
      for (int t = 0; t < kTokens; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int t = 0; t < kTokens; ++t) {
      float s = hsum256(acc[r][t]);
      for (int64_t j = k; j < K; ++j) s += w[r][j] * x[t][j];
      out[r][t] = s;
    }
}

template <int T>
__attribute__((target("avx512f"))) void block_f32_avx512_t(const float* const* w, const float* const* x, int64_t K,
                                                           float out[kRows][kTokens]) {
  constexpr int kTokens_ = T;
  __m512 acc[kRows][kTokens_];
  for (auto& row : acc)
    for (auto& a : row) a = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 xv[kTokens_];
    for (int t = 0; t < kTokens_; ++t) xv[t] = _mm512_loadu_ps(x[t] + k);
    for (int r = 0; r < kRows; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w[r] + k) + kPrefetchBytes, _MM_HINT_T0);
      const __m512 wv = _mm512_loadu_ps(w[r] + k);
      for (int t = 0; t < kTokens_; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  if (k < K) {
    const __mmask16 m = static_cast<__mmask16>((1u << (K - k)) - 1);
    __m512 xv[kTokens_];
    for (int t = 0; t < kTokens_; ++t) xv[t] = _mm512_maskz_loadu_ps(m, x[t] + k);
    for (int r = 0; r < kRows; ++r) {
      const __m512 wv = _mm512_maskz_loadu_ps(m, w[r] + k);
      for (int t = 0; t < kTokens_; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int t = 0; t < kTokens_; ++t) out[r][t] = hsum512(acc[r][t]);
}

// BF16 weights against bf16 activations (x padded with zeros to a multiple of 32): vdpbf16ps
// multiplies pairs and accumulates in float32, 32 products per instruction.
template <int T>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void block_bf16_avx512_t(const uint16_t* const* w,
                                                                                  const uint16_t* const* x, int64_t K,
                                                                                  float out[kRows][kTokens]) {
  constexpr int kTokens_ = T;
  __m512 acc[kRows][kTokens_];
  for (auto& row : acc)
    for (auto& a : row) a = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m512i xv[kTokens_];
    for (int t = 0; t < kTokens_; ++t) xv[t] = _mm512_loadu_si512(x[t] + k);
    for (int r = 0; r < kRows; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w[r] + k) + kPrefetchBytes, _MM_HINT_T0);
      const __m512i wv = _mm512_loadu_si512(w[r] + k);
      for (int t = 0; t < kTokens_; ++t) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], (__m512bh)wv, (__m512bh)xv[t]);
    }
  }
  if (k < K) {
    const __mmask32 m = static_cast<__mmask32>((uint64_t{1} << (K - k)) - 1);
    __m512i xv[kTokens_];
    for (int t = 0; t < kTokens_; ++t) xv[t] = _mm512_maskz_loadu_epi16(m, x[t] + k);
    for (int r = 0; r < kRows; ++r) {
      const __m512i wv = _mm512_maskz_loadu_epi16(m, w[r] + k);
      for (int t = 0; t < kTokens_; ++t) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], (__m512bh)wv, (__m512bh)xv[t]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int t = 0; t < kTokens_; ++t) out[r][t] = hsum512(acc[r][t]);
}

void block_f32_avx512(const float* const* w, const float* const* x, int64_t K, float out[kRows][kTokens], int64_t tokens) {
  for_token_count<kTokens>(tokens, [&](auto T) { block_f32_avx512_t<decltype(T)::value>(w, x, K, out); });
}

void block_bf16_avx512(const uint16_t* const* w, const uint16_t* const* x, int64_t K, float out[kRows][kTokens], int64_t tokens) {
  for_token_count<kTokens>(tokens, [&](auto T) { block_bf16_avx512_t<decltype(T)::value>(w, x, K, out); });
}

// Int8 weights against int8 activations (x zero-padded to a multiple of 32): both widened to
// int16, multiplied in pairs and summed into int32 (vpmaddwd). Exact, like the reference.
template <int T>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void block_i8_avx512_t(const int8_t* const* w, const int8_t* const* x,
                                                                             int64_t K, int32_t out[kRows][kTokens]) {
  __m512i acc[kRows][T];
  for (int r = 0; r < kRows; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_si512();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m512i xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t] + k)));
    for (int r = 0; r < kRows; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w[r] + k) + kPrefetchBytes, _MM_HINT_T0);
      const __m512i wv = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[r] + k)));
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_add_epi32(acc[r][t], _mm512_madd_epi16(wv, xv[t]));
    }
  }
  if (k < K) {
    const __mmask32 m = static_cast<__mmask32>((uint64_t{1} << (K - k)) - 1);
    __m512i xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, x[t] + k));
    for (int r = 0; r < kRows; ++r) {
      const __m512i wv = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, w[r] + k));
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_add_epi32(acc[r][t], _mm512_madd_epi16(wv, xv[t]));
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int t = 0; t < T; ++t) out[r][t] = hsum512_epi32(acc[r][t]);
}

// VNNI: vpdpbusd multiplies unsigned by signed bytes, 64 products per instruction. Weights are
// made unsigned in-register (w + 128, an XOR of the sign bit); the caller subtracts 128 * sum(x).
// x must be zero-padded to a multiple of 64.
template <int T>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void block_i8_vnni_t(const int8_t* const* w, const int8_t* const* x,
                                                                             int64_t K, int32_t out[kRows][kTokens]) {
  __m512i acc[kRows][T];
  for (int r = 0; r < kRows; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_si512();
  const __m512i sign = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t k = 0; k < K; k += 64) {
    const __mmask64 m = K - k >= 64 ? ~__mmask64{0} : (__mmask64{1} << (K - k)) - 1;
    __m512i xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_si512(x[t] + k);
    for (int r = 0; r < kRows; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w[r] + k) + kPrefetchBytes, _MM_HINT_T0);
      const __m512i wv = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, w[r] + k), sign);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], wv, xv[t]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int t = 0; t < T; ++t) out[r][t] = hsum512_epi32(acc[r][t]);
}

void block_i8_vnni(const int8_t* const* w, const int8_t* const* x, int64_t K, int32_t out[kRows][kTokens], int64_t tokens) {
  for_token_count<kTokens>(tokens, [&](auto T) { block_i8_vnni_t<decltype(T)::value>(w, x, K, out); });
}

// One token against rows [begin, end) of w (row stride K; x padded for the kernel) through a
// 4-row kernel (block_i8_vnni, block_bf16_avx512), its 4 rows taken from the 4 quarters of the
// range: each quarter is read front to back across its rows, four long streams side by side.
// Four neighbouring rows (four streams one short row long) or one row at a time (one stream)
// kept 70-85% of the read bandwidth on rows of 1.5-3 KB; quarters of a 64-row range 95-100%
// (docs/PERF.md). store(row, result) receives each row's dot product.
constexpr int64_t kQuarteredRows = 64;  // rows a batch-1 task takes

template <typename Element, typename Out, typename Store>
void quartered_rows(void (*kernel)(const Element* const*, const Element* const*, int64_t, Out[kRows][kTokens], int64_t),
                    const Element* w, int64_t K, const Element* x, int64_t begin, int64_t end, Store&& store) {
  const int64_t quarter = (end - begin + kRows - 1) / kRows;
  const Element* xr[kTokens];
  for (int t = 0; t < kTokens; ++t) xr[t] = x;
  for (int64_t b = 0; b < quarter; ++b) {
    int64_t row[kRows];
    const Element* wr[kRows];
    for (int q = 0; q < kRows; ++q) {
      row[q] = begin + q * quarter + b;
      wr[q] = w + std::min(row[q], end - 1) * K;  // past the end: the last row again (not stored)
    }
    Out out[kRows][kTokens];
    kernel(wr, xr, K, out, 1);
    for (int q = 0; q < kRows; ++q)
      if (row[q] < end) store(row[q], out[q][0]);
  }
}

void block_i8_avx512(const int8_t* const* w, const int8_t* const* x, int64_t K, int32_t out[kRows][kTokens], int64_t tokens) {
  for_token_count<kTokens>(tokens, [&](auto T) { block_i8_avx512_t<decltype(T)::value>(w, x, K, out); });
}

// Dot product and y += a * x over float32 vectors (attention rows).
__attribute__((target("avx512f"))) float dot_avx512(const float* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i + 16 <= n; i += 16) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc1);
  }
  return hsum512(_mm512_add_ps(acc0, acc1));
}

__attribute__((target("avx512f"))) void axpy_avx512(float a, const float* x, int64_t n, float* y) {
  const __m512 av = _mm512_set1_ps(a);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

// One query row against positions [0, n_visible): scores = scale * (q.k [+ q_pe.k_pe]),
// softmax, out = sum p * v. Rows come from the paged pool through the block table.
struct AttentionRow {
  const float* q;         // [qk_dim]
  const float* q_extra;   // [extra_dim] or null (MLA's rotary part)
  const float* k_pool;
  int64_t k_stride, k_offset;
  const float* extra_pool;  // MLA k_pe rows, or null
  int64_t extra_dim;
  const float* v_pool;
  int64_t v_stride, v_offset;
  int64_t qk_dim, v_dim;
  const int32_t* block_table;
  int64_t block_size;
  int64_t n_visible;
  float scale;
  float* out;             // [v_dim]
};

__attribute__((target("avx512f"))) void attention_row_avx512(const AttentionRow& a, std::vector<float>* scores) {
  scores->resize(static_cast<size_t>(a.n_visible));
  float max_score = -INFINITY;
  for (int64_t s = 0; s < a.n_visible; ++s) {
    const int64_t row = kv_slot(a.block_table, a.block_size, s);
    float v = dot_avx512(a.q, a.k_pool + row * a.k_stride + a.k_offset, a.qk_dim);
    if (a.q_extra) v += dot_avx512(a.q_extra, a.extra_pool + row * a.extra_dim, a.extra_dim);
    v *= a.scale;
    (*scores)[static_cast<size_t>(s)] = v;
    max_score = std::max(max_score, v);
  }
  float sum = 0.0f;
  for (float& v : *scores) {
    v = std::exp(v - max_score);
    sum += v;
  }
  const float inv = 1.0f / sum;
  std::fill(a.out, a.out + a.v_dim, 0.0f);
  for (int64_t s = 0; s < a.n_visible; ++s) {
    const int64_t row = kv_slot(a.block_table, a.block_size, s);
    axpy_avx512((*scores)[static_cast<size_t>(s)] * inv, a.v_pool + row * a.v_stride + a.v_offset, a.v_dim, a.out);
  }
}

// Activations to bf16 rows of K32 (zero-padded), rounding to nearest even like f32_to_bf16.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void rows_to_bf16_avx512(const float* x, int64_t x_stride, int64_t n,
                                                                                 int64_t K, int64_t K32, uint16_t* out) {
  for (int64_t t = 0; t < n; ++t) {
    const float* row = x + t * x_stride;
    uint16_t* dst = out + t * K32;
    for (int64_t k = 0; k < K32; k += 16) {
      const __mmask16 m = K - k >= 16 ? __mmask16{0xffff} : K > k ? static_cast<__mmask16>((1u << (K - k)) - 1) : __mmask16{0};
      const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, row + k));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), (__m256i)v);
    }
  }
}

// quantize_activations_i8 vectorized (same arithmetic: the results are identical), plus
// bias[t] = 128 * sum of the token's quantized values for the VNNI kernels. q rows are
// zero-padded to q_stride (a multiple of 16).
__attribute__((target("avx512f,avx512bw"))) void quantize_rows_i8_avx512(const float* x, int64_t x_stride, int64_t n, int64_t K,
                                                                         int8_t* q, int64_t q_stride, float* scales, int32_t* bias) {
  for (int64_t t = 0; t < n; ++t) {
    const float* row = x + t * x_stride;
    __m512 amax = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) {
      const __mmask16 m = K - k >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << (K - k)) - 1);
      amax = _mm512_maskz_max_ps(0xffff, amax, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, row + k)));
    }
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, amax);
    float a = 0.0f;
    for (float v : lanes) a = std::max(a, v);
    const float scale = a > 0.0f ? a / 127.0f : 1.0f;
    scales[t] = scale;
    const __m512 inv = _mm512_set1_ps(1.0f / scale);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    __m512i sum = _mm512_setzero_si512();
    for (int64_t k = 0; k < q_stride; k += 16) {
      const __mmask16 m = K - k >= 16 ? __mmask16{0xffff} : K > k ? static_cast<__mmask16>((1u << (K - k)) - 1) : __mmask16{0};
      __m512i v = _mm512_maskz_cvtps_epi32(0xffff, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + k), inv));
      v = _mm512_maskz_min_epi32(0xffff, _mm512_maskz_max_epi32(0xffff, v, lo), hi);
      sum = _mm512_add_epi32(sum, v);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + t * q_stride + k), _mm512_maskz_cvtepi32_epi8(0xffff, v));
    }
    bias[t] = 128 * hsum512_epi32(sum);
  }
}

// out = gate / (1 + e^-gate) * up over n floats (the reference's formula, vectorized exp).
__attribute__((target("avx512f"))) void silu_mul_avx512(const float* gate, const float* up, int64_t n, float* out) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, up + i)));
  }
}

// RMSNorm of one row: the sum of squares in 16 lanes, then y = w * (x * inv_rms) as the
// reference computes it.
__attribute__((target("avx512f"))) void rms_norm_row_avx512(const float* x, const float* w, int64_t dim, float eps, float* y) {
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < dim; i += 16) {
    const __mmask16 m = dim - i >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << (dim - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    sum = _mm512_fmadd_ps(v, v, sum);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / std::sqrt(hsum512(sum) / static_cast<float>(dim) + eps));
  for (int64_t i = 0; i < dim; i += 16) {
    const __mmask16 m = dim - i >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << (dim - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + i), _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv)));
  }
}

__attribute__((target("avx512f"))) void add_avx512(const float* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, y + i), _mm512_maskz_loadu_ps(m, x + i)));
  }
}

bool cpu_has(unsigned leaf, unsigned subleaf, int reg, unsigned bit) {
  unsigned regs[4];
  if (!__get_cpuid_count(leaf, subleaf, &regs[0], &regs[1], &regs[2], &regs[3])) return false;
  return (regs[reg] >> bit) & 1u;
}

// OS support for the AVX-512 register state (XCR0 bits 1, 2, 5, 6, 7).
bool os_saves_avx512() {
  if (!cpu_has(1, 0, 2, 27)) return false;  // OSXSAVE
  unsigned lo, hi;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 0xe6) == 0xe6;
}

}  // namespace

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kPortable: return "portable";
    case CpuIsa::kAvx2: return "avx2";
    case CpuIsa::kAvx512: return "avx512";
    case CpuIsa::kAvx512Bf16: return "avx512-bf16";
  }
  return "?";
}

CpuIsa detect_cpu_isa() {
  const bool avx2 = cpu_has(7, 0, 1, 5) && cpu_has(1, 0, 2, 12);  // AVX2 and FMA
  const bool avx512 = os_saves_avx512() && cpu_has(7, 0, 1, 16) && cpu_has(7, 0, 1, 30);  // F and BW
  const bool bf16 = avx512 && cpu_has(7, 1, 0, 5);  // AVX512_BF16
  if (bf16) return CpuIsa::kAvx512Bf16;
  if (avx512) return CpuIsa::kAvx512;
  if (avx2) return CpuIsa::kAvx2;
  return CpuIsa::kPortable;
}

CpuBackend::CpuBackend(int n_threads, CpuIsa isa) {
  isa_ = std::min(isa, detect_cpu_isa());
  // SEEKSERVE_CPU_ISA=portable|avx2|avx512|avx512-bf16 caps the kernels (to test or compare levels).
  if (const char* forced = std::getenv("SEEKSERVE_CPU_ISA")) {
    for (CpuIsa level : {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Bf16})
      if (std::string_view(forced) == cpu_isa_name(level)) isa_ = std::min(isa_, level);
  }
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  pool_ = std::make_unique<ThreadPool>(n_threads);
  vnni_ = isa_ >= CpuIsa::kAvx512 && cpu_has(7, 0, 2, 11) && std::getenv("SEEKSERVE_NO_VNNI") == nullptr;  // AVX512_VNNI
  fused_moe_ = std::getenv("SEEKSERVE_CPU_MOE_PER_EXPERT") == nullptr;
}

void CpuBackend::moe_experts(const MoeArgs& a) {
  constexpr int64_t kFusedMaxTokens = 4;  // decode steps; prefill groups many tokens per expert
  bool fused = fused_moe_ && vnni_ && a.n_tokens <= kFusedMaxTokens;
  moe_pairs_.clear();
  for (int64_t t = 0; t < a.n_tokens && fused; ++t)
    for (int64_t j = 0; j < a.top_k; ++j) {
      const int32_t e = a.expert_ids[t * a.top_k + j];
      SS_CHECK(e >= 0 && static_cast<size_t>(e) < a.experts.size(), "expert id out of range");
      const MlpWeights& w = a.experts[static_cast<size_t>(e)];
      fused = fused && w.gate.format == WeightFormat::kI8Row && w.up.format == WeightFormat::kI8Row &&
              w.down.format == WeightFormat::kI8Row;
      moe_pairs_.push_back({e, t, a.expert_weights[t * a.top_k + j]});
    }
  if (!fused || moe_pairs_.empty()) return ReferenceBackend::moe_experts(a);
  // Expert order, tokens ascending within an expert: the per-expert dispatch's accumulation order.
  std::stable_sort(moe_pairs_.begin(), moe_pairs_.end(), [](const ExpertPair& x, const ExpertPair& y) { return x.expert < y.expert; });
  const int64_t P = static_cast<int64_t>(moe_pairs_.size()), D = a.hidden, I = a.experts[static_cast<size_t>(moe_pairs_[0].expert)].gate.rows;
  const int64_t D32 = (D + 63) / 64 * 64, I32 = (I + 63) / 64 * 64;

  // Each token's activations quantized once, as every per-expert matmul would quantize them.
  x_i8_.resize(static_cast<size_t>(a.n_tokens * D32));
  x_scale_.resize(static_cast<size_t>(a.n_tokens));
  x_bias_.resize(static_cast<size_t>(a.n_tokens));
  quantize_rows_i8_avx512(a.x, D, a.n_tokens, D, x_i8_.data(), D32, x_scale_.data(), x_bias_.data());
  // gate | up rows of every pair: task = (pair, gate or up, kQuarteredRows of its I rows).
  moe_gate_up_.resize(static_cast<size_t>(P * 2 * I));
  const int64_t i_tasks = (I + kQuarteredRows - 1) / kQuarteredRows;
  pool_->run(P * 2 * i_tasks, [&](int64_t task) {
    const int64_t p = task / (2 * i_tasks), half = task / i_tasks % 2, r0 = task % i_tasks * kQuarteredRows;
    const ExpertPair& pair = moe_pairs_[static_cast<size_t>(p)];
    const Weight& m = half == 0 ? a.experts[static_cast<size_t>(pair.expert)].gate : a.experts[static_cast<size_t>(pair.expert)].up;
    float* y = moe_gate_up_.data() + p * 2 * I + half * I;
    const float x_scale = x_scale_[static_cast<size_t>(pair.token)];
    const int32_t x_bias = x_bias_[static_cast<size_t>(pair.token)];
    quartered_rows(block_i8_vnni, static_cast<const int8_t*>(m.data), D, x_i8_.data() + pair.token * D32, r0, std::min(I, r0 + kQuarteredRows),
                   [&](int64_t r, int32_t dot) { y[r] = x_scale * m.scale_inv[r] * static_cast<float>(dot - x_bias); });
  });
  moe_act_.resize(static_cast<size_t>(P * I));
  for (int64_t p = 0; p < P; ++p) silu_mul(moe_gate_up_.data() + p * 2 * I, moe_gate_up_.data() + p * 2 * I + I, I, moe_act_.data() + p * I);
  moe_act_i8_.resize(static_cast<size_t>(P * I32));
  moe_act_scale_.resize(static_cast<size_t>(P));
  moe_act_bias_.resize(static_cast<size_t>(P));
  quantize_rows_i8_avx512(moe_act_.data(), I, P, I, moe_act_i8_.data(), I32, moe_act_scale_.data(), moe_act_bias_.data());
  // down rows of every pair: task = (pair, kQuarteredRows of its D rows).
  moe_down_.resize(static_cast<size_t>(P * D));
  const int64_t down_tasks = (D + kQuarteredRows - 1) / kQuarteredRows;
  pool_->run(P * down_tasks, [&](int64_t task) {
    const int64_t p = task / down_tasks, r0 = task % down_tasks * kQuarteredRows;
    const Weight& m = a.experts[static_cast<size_t>(moe_pairs_[static_cast<size_t>(p)].expert)].down;
    quartered_rows(block_i8_vnni, static_cast<const int8_t*>(m.data), I, moe_act_i8_.data() + p * I32, r0, std::min(D, r0 + kQuarteredRows),
                   [&](int64_t r, int32_t dot) {
                     moe_down_[static_cast<size_t>(p * D + r)] =
                         moe_act_scale_[static_cast<size_t>(p)] * m.scale_inv[r] * static_cast<float>(dot - moe_act_bias_[static_cast<size_t>(p)]);
                   });
  });
  for (int64_t p = 0; p < P; ++p) {
    const ExpertPair& pair = moe_pairs_[static_cast<size_t>(p)];
    for (int64_t d = 0; d < D; ++d) a.out[pair.token * D + d] += pair.weight * moe_down_[static_cast<size_t>(p * D + d)];
  }
}

void CpuBackend::matmul_i8_fast(const Weight& w, const float* x, int64_t x_stride, int64_t n, float* y, int64_t y_stride) {
  const int64_t K = w.cols, M = w.rows, K32 = (K + 63) / 64 * 64;  // padded for both kernels
  x_i8_.resize(static_cast<size_t>(n * K32));
  x_scale_.resize(static_cast<size_t>(n));
  x_bias_.resize(static_cast<size_t>(n));
  if (n * K >= (int64_t{1} << 17)) {  // a prefill's rows over the pool (an expert's few tokens are not worth waking it)
    constexpr int64_t kRowsPerTask = 16;
    pool_->run((n + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task) {
      const int64_t t0 = task * kRowsPerTask, rows = std::min(kRowsPerTask, n - t0);
      quantize_rows_i8_avx512(x + t0 * x_stride, x_stride, rows, K, x_i8_.data() + t0 * K32, K32, x_scale_.data() + t0, x_bias_.data() + t0);
    });
  } else {
    quantize_rows_i8_avx512(x, x_stride, n, K, x_i8_.data(), K32, x_scale_.data(), x_bias_.data());
  }
  if (vnni_ && n >= kGemmMinTokens)
    return gemm_i8_vnni(static_cast<const int8_t*>(w.data), w.scale_inv, M, K, x_i8_.data(), K32, x_scale_.data(),
                        x_bias_.data(), n, y, y_stride, *pool_);
  // The VNNI kernel computes sum (w + 128) * x and takes x_bias back out; vpmaddwd needs no bias.
  if (!vnni_) std::fill(x_bias_.begin(), x_bias_.end(), 0);
  const int8_t* wq = static_cast<const int8_t*>(w.data);
  // Batch-1 decode reads each task's rows as four quarters side by side (quartered_rows);
  // SEEKSERVE_I8_BLOCK_GEMV=1 keeps the plain block kernel (4 neighbouring rows), to compare.
  static const bool block_gemv = std::getenv("SEEKSERVE_I8_BLOCK_GEMV") != nullptr;
  const bool quartered = vnni_ && n == 1 && !block_gemv;
  const int64_t task_rows = quartered ? kQuarteredRows : 16;
  auto task = [&](int64_t task_index) {
    const int64_t row_end = std::min(M, (task_index + 1) * task_rows);
    if (quartered) {
      quartered_rows(block_i8_vnni, wq, K, x_i8_.data(), task_index * task_rows, row_end, [&](int64_t r, int32_t dot) {
        y[r] = x_scale_[0] * w.scale_inv[r] * static_cast<float>(dot - x_bias_[0]);
      });
      return;
    }
    for (int64_t r0 = task_index * task_rows; r0 < row_end; r0 += kRows) {
      const int64_t rows = std::min<int64_t>(kRows, row_end - r0);
      const int8_t* wr[kRows];
      for (int r = 0; r < kRows; ++r) wr[r] = wq + (r0 + std::min<int64_t>(r, rows - 1)) * K;
      for (int64_t t0 = 0; t0 < n; t0 += kTokens) {
        const int64_t tokens = std::min<int64_t>(kTokens, n - t0);
        const int8_t* xr[kTokens];
        for (int t = 0; t < kTokens; ++t) xr[t] = x_i8_.data() + (t0 + std::min<int64_t>(t, tokens - 1)) * K32;
        int32_t out[kRows][kTokens];
        if (vnni_) block_i8_vnni(wr, xr, K, out, tokens);
        else block_i8_avx512(wr, xr, K, out, tokens);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t t = 0; t < tokens; ++t)
            y[(t0 + t) * y_stride + r0 + r] = x_scale_[static_cast<size_t>(t0 + t)] * w.scale_inv[r0 + r] *
                                              static_cast<float>(out[r][t] - x_bias_[static_cast<size_t>(t0 + t)]);
      }
    }
  };
  const int64_t n_tasks = (M + task_rows - 1) / task_rows;
  if (M * K * std::max<int64_t>(n, 1) < (int64_t{1} << 17)) {
    for (int64_t i = 0; i < n_tasks; ++i) task(i);
  } else {
    pool_->run(n_tasks, task);
  }
}

void CpuBackend::matmul(const Weight& w, const float* x, int64_t x_stride, int64_t n, float* y, int64_t y_stride) {
  SS_CHECK(!w.empty(), "matmul with an unbound weight");
  if (w.format == WeightFormat::kI8Row) {
    if (isa_ >= CpuIsa::kAvx512) return matmul_i8_fast(w, x, x_stride, n, y, y_stride);
    return matmul_i8(w, x, x_stride, n, y, y_stride);  // the reference's exact integer loops
  }
  const int64_t K = w.cols, M = w.rows;
  const bool low_precision = w.format != WeightFormat::kF32;
  const bool native_bf16 = w.format == WeightFormat::kBF16 && isa_ == CpuIsa::kAvx512Bf16;
  const int64_t K32 = (K + 31) / 32 * 32;

  // Activations once per call: float32 (bf16-rounded against low-precision weights) or bf16.
  if (native_bf16) {
    x_bf16_.resize(static_cast<size_t>(n * K32));
    rows_to_bf16_avx512(x, x_stride, n, K, K32, x_bf16_.data());
    if (n >= kGemmMinTokens) return gemm_bf16_avx512(static_cast<const uint16_t*>(w.data), M, K, x_bf16_.data(), K32, n, y, y_stride, *pool_);
  } else {
    x_f32_.resize(static_cast<size_t>(n * K));
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t k = 0; k < K; ++k) {
        const float v = x[t * x_stride + k];
        x_f32_[static_cast<size_t>(t * K + k)] = low_precision ? round_to_bf16(v) : v;
      }
      if (w.fp8_activations) quantize_fp8_groups(x_f32_.data() + t * K, K, w.block_cols);  // W8A8 from bf16, as the reference
    }
  }
  const bool avx512 = isa_ >= CpuIsa::kAvx512;
  const F32Kernel f32_kernel = isa_ == CpuIsa::kAvx2 ? block_f32_avx2 : block_f32_portable;

  // Tasks of 16 rows; each streams its weight rows once for all tokens. Native bf16 at batch 1:
  // tasks of kQuarteredRows read as four quarters (SEEKSERVE_BF16_BLOCK_GEMV=1: four neighbouring
  // rows at a time, to compare).
  static const bool block_gemv = std::getenv("SEEKSERVE_BF16_BLOCK_GEMV") != nullptr;
  const bool quartered = native_bf16 && n == 1 && !block_gemv;
  const int64_t task_rows = quartered ? kQuarteredRows : 16;
  const int64_t n_tasks = (M + task_rows - 1) / task_rows;
  auto task = [&](int64_t task_index) {
    thread_local std::vector<float> dequantized;  // [kRows, K] for weights the kernels cannot read directly
    const int64_t row_end = std::min(M, (task_index + 1) * task_rows);
    if (quartered) {
      quartered_rows(block_bf16_avx512, static_cast<const uint16_t*>(w.data), K, x_bf16_.data(), task_index * task_rows, row_end,
                     [&](int64_t r, float dot) { y[r] = dot; });
      return;
    }

    for (int64_t r0 = task_index * task_rows; r0 < row_end; r0 += kRows) {
      const int64_t rows = std::min<int64_t>(kRows, row_end - r0);
      const float* wf[kRows];
      const uint16_t* wb[kRows];
      for (int r = 0; r < kRows; ++r) {
        const int64_t row = r0 + std::min<int64_t>(r, rows - 1);  // tail rows repeat the last one
        if (w.format == WeightFormat::kF32) {
          wf[r] = static_cast<const float*>(w.data) + row * K;
        } else if (native_bf16) {
          wb[r] = static_cast<const uint16_t*>(w.data) + row * K;
        } else {
          dequantized.resize(static_cast<size_t>(kRows * K));
          if (r < rows) w.row_to_f32(row, dequantized.data() + r * K);
          wf[r] = dequantized.data() + std::min<int64_t>(r, rows - 1) * K;
        }
      }
      for (int64_t t0 = 0; t0 < n; t0 += kTokens) {
        const int64_t tokens = std::min<int64_t>(kTokens, n - t0);
        float out[kRows][kTokens];
        if (native_bf16) {
          const uint16_t* xb[kTokens];
          for (int t = 0; t < kTokens; ++t) xb[t] = x_bf16_.data() + (t0 + std::min<int64_t>(t, tokens - 1)) * K32;
          block_bf16_avx512(wb, xb, K, out, tokens);
        } else {
          const float* xf[kTokens];
          for (int t = 0; t < kTokens; ++t) xf[t] = x_f32_.data() + (t0 + std::min<int64_t>(t, tokens - 1)) * K;
          if (avx512) block_f32_avx512(wf, xf, K, out, tokens);
          else f32_kernel(wf, xf, K, out);
        }
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t t = 0; t < tokens; ++t) y[(t0 + t) * y_stride + r0 + r] = out[r][t];
      }
    }
  };
  // Small products are not worth waking the workers.
  if (M * K * std::max<int64_t>(n, 1) < (int64_t{1} << 17)) {
    for (int64_t i = 0; i < n_tasks; ++i) task(i);
  } else {
    pool_->run(n_tasks, task);
  }
}

void CpuBackend::rms_norm(const float* x, int64_t x_stride, const float* weight, int64_t n_tokens, int64_t dim, float eps,
                          float* y, int64_t y_stride) {
  if (isa_ < CpuIsa::kAvx512) return ReferenceBackend::rms_norm(x, x_stride, weight, n_tokens, dim, eps, y, y_stride);
  // Rows over the pool when there are many (prefill); one row is not worth waking the workers.
  auto row = [&](int64_t t) { rms_norm_row_avx512(x + t * x_stride, weight, dim, eps, y + t * y_stride); };
  if (n_tokens * dim < (int64_t{1} << 16)) {
    for (int64_t t = 0; t < n_tokens; ++t) row(t);
  } else {
    pool_->run(n_tokens, row);
  }
}

void CpuBackend::add(const float* x, int64_t n, float* y) {
  if (isa_ < CpuIsa::kAvx512) return ReferenceBackend::add(x, n, y);
  constexpr int64_t kChunk = int64_t{1} << 15;
  if (n < 4 * kChunk) return add_avx512(x, n, y);
  pool_->run((n + kChunk - 1) / kChunk, [&](int64_t task) {
    const int64_t begin = task * kChunk;
    add_avx512(x + begin, std::min(kChunk, n - begin), y + begin);
  });
}

void CpuBackend::silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  if (isa_ < CpuIsa::kAvx512) return ReferenceBackend::silu_mul(gate, up, n, out);
  // silu(g) * u = g / (1 + e^-g) * u, 16 lanes at a time; a prefill's worth is split over the pool.
  constexpr int64_t kChunk = int64_t{1} << 14;
  if (n < 4 * kChunk) return silu_mul_avx512(gate, up, n, out);
  pool_->run((n + kChunk - 1) / kChunk, [&](int64_t task) {
    const int64_t begin = task * kChunk;
    silu_mul_avx512(gate + begin, up + begin, std::min(kChunk, n - begin), out + begin);
  });
}

void CpuBackend::gqa_attention(const GqaAttentionArgs& a) {
  if (isa_ < CpuIsa::kAvx512) return ReferenceBackend::gqa_attention(a);
  if (a.n_tokens >= kTiledAttentionMinTokens) return gqa_attention_tiled_avx512(a, *pool_);
  const int64_t group = a.n_heads / a.n_kv_heads, kv_row = a.n_kv_heads * a.head_dim;
  // One task per (token, head): each reads its sequence's keys and values once.
  pool_->run(a.n_tokens * a.n_heads, [&](int64_t task) {
    thread_local std::vector<float> scores;
    const int64_t t = task / a.n_heads, h = task % a.n_heads, kvh = h / group;
    AttentionRow row{a.q + t * a.q_stride + h * a.head_dim, nullptr, a.k_pool, kv_row, kvh * a.head_dim, nullptr, 0,
                     a.v_pool, kv_row, kvh * a.head_dim, a.head_dim, a.head_dim, a.block_table, a.block_size,
                     a.positions[t] + 1, a.scale, a.out + (t * a.n_heads + h) * a.head_dim};
    attention_row_avx512(row, &scores);
  });
}

void CpuBackend::mla_attention(const MlaAttentionArgs& a) {
  if (isa_ < CpuIsa::kAvx512) return ReferenceBackend::mla_attention(a);
  const int64_t R = a.kv_lora_rank, P = a.rope_dim;
  pool_->run(a.n_tokens * a.n_heads, [&](int64_t task) {
    thread_local std::vector<float> scores;
    const int64_t t = task / a.n_heads, h = task % a.n_heads;
    // Keys and values are both the latent c_kv rows; the rotary part scores against k_pe.
    AttentionRow row{a.q_latent + (t * a.n_heads + h) * R, a.q_pe + (t * a.n_heads + h) * P, a.c_kv_pool, R, 0, a.k_pe_pool, P,
                     a.c_kv_pool, R, 0, R, R, a.block_table, a.block_size, a.positions[t] + 1, a.scale,
                     a.out_latent + (t * a.n_heads + h) * R};
    attention_row_avx512(row, &scores);
  });
}

std::unique_ptr<Backend> make_cpu_backend(int n_threads) { return std::make_unique<CpuBackend>(n_threads); }

}  // namespace seekserve
