#include "backend/cpu_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "backend/token_count_dispatch.h"

namespace seekserve {

namespace {

constexpr int kPanelRows = 32;  // weight rows per panel: two 16-lane vectors per unit
constexpr int kBlockTokens = 12;  // tokens per micro-kernel call: 2 x 12 accumulators + 2 weights + 1 broadcast

// Grow-only buffers, so a steady stream of steps allocates nothing.
template <typename T>
T* scratch(std::vector<T>& buffer, size_t n) {
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// r[i] (16 dwords of row i) becomes r[j] = dword j of every row: unpacks within 128-bit lanes,
// then two rounds of 128-bit lane shuffles (64 shuffles for 256 dwords). The zero-masking forms
// with every lane kept: GCC 12 warns on the plain intrinsics' undefined pass-through operand.
__attribute__((target("avx512f"))) inline void transpose_16x16(__m512i (&r)[16]) {
  __m512i t[16], u[16];
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_maskz_unpacklo_epi32(0xffff, r[2 * k], r[2 * k + 1]);      // lane L: rows 2k, 2k+1 of units 4L, 4L+1
    t[2 * k + 1] = _mm512_maskz_unpackhi_epi32(0xffff, r[2 * k], r[2 * k + 1]);  // units 4L+2, 4L+3
  }
  for (int k = 0; k < 4; ++k) {  // u[4k + c] lane L: rows 4k..4k+3 of unit 4L + c
    u[4 * k] = _mm512_maskz_unpacklo_epi64(0xff, t[4 * k], t[4 * k + 2]);
    u[4 * k + 1] = _mm512_maskz_unpackhi_epi64(0xff, t[4 * k], t[4 * k + 2]);
    u[4 * k + 2] = _mm512_maskz_unpacklo_epi64(0xff, t[4 * k + 1], t[4 * k + 3]);
    u[4 * k + 3] = _mm512_maskz_unpackhi_epi64(0xff, t[4 * k + 1], t[4 * k + 3]);
  }
  for (int c = 0; c < 4; ++c) {  // unit 4L + c gathers lane L of u[c], u[4 + c], u[8 + c], u[12 + c]
    const __m512i v0 = _mm512_maskz_shuffle_i32x4(0xffff, u[c], u[4 + c], 0x88), v1 = _mm512_maskz_shuffle_i32x4(0xffff, u[c], u[4 + c], 0xdd);
    const __m512i w0 = _mm512_maskz_shuffle_i32x4(0xffff, u[8 + c], u[12 + c], 0x88), w1 = _mm512_maskz_shuffle_i32x4(0xffff, u[8 + c], u[12 + c], 0xdd);
    r[c] = _mm512_maskz_shuffle_i32x4(0xffff, v0, w0, 0x88);
    r[8 + c] = _mm512_maskz_shuffle_i32x4(0xffff, v0, w0, 0xdd);
    r[4 + c] = _mm512_maskz_shuffle_i32x4(0xffff, v1, w1, 0x88);
    r[12 + c] = _mm512_maskz_shuffle_i32x4(0xffff, v1, w1, 0xdd);
  }
}

// Copies rows [r0, r0 + 32) of w (row_bytes each, M rows) into panel[unit][32] as 4-byte
// units, XORed with `flip`; units past a row's end and rows past M are zero before the XOR.
// Sixteen full rows at a time go through 16 x 16 transposes (the units left over through gathers):
// the scalar copy cost as much as the products for a 32-token batch.
__attribute__((target("avx512f"))) void pack_panel(const uint8_t* w, int64_t M, int64_t row_bytes, int64_t r0, int64_t units,
                                                   uint32_t flip, uint32_t* panel) {
  const int64_t full_units = row_bytes / 4;
  const __m512i flip_v = _mm512_set1_epi32(static_cast<int>(flip));
  const __m512i offsets = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32(static_cast<int>(row_bytes)));
  for (int half = 0; half < 2; ++half) {
    const int64_t first = r0 + half * 16;
    const bool gather = first + 16 <= M && 16 * row_bytes < (int64_t{1} << 31);
    for (int lane = half * 16; lane < half * 16 + 16; ++lane) {
      const int64_t r = r0 + lane;
      if (r >= M) {
        for (int64_t j = 0; j < units; ++j) panel[j * kPanelRows + lane] = flip;
        continue;
      }
      const uint8_t* row = w + r * row_bytes;
      if (!gather)
        for (int64_t j = 0; j < full_units; ++j) {
          uint32_t u;
          std::memcpy(&u, row + 4 * j, 4);
          panel[j * kPanelRows + lane] = u ^ flip;
        }
      for (int64_t j = full_units; j < units; ++j) {
        uint32_t u = 0;
        const int64_t begin = 4 * j;
        if (begin < row_bytes) std::memcpy(&u, row + begin, static_cast<size_t>(row_bytes - begin));
        panel[j * kPanelRows + lane] = u ^ flip;
      }
    }
    if (gather) {
      const uint8_t* base = w + first * row_bytes;
      int64_t j = 0;
      for (; j + 16 <= full_units; j += 16) {  // 16 units of 16 rows: one load a row, a transpose, a store a unit
        __m512i r[16];
        for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(base + i * row_bytes + 4 * j);
        transpose_16x16(r);
        for (int u = 0; u < 16; ++u) _mm512_storeu_si512(panel + (j + u) * kPanelRows + half * 16, _mm512_xor_si512(r[u], flip_v));
      }
      for (; j < full_units; ++j)
        _mm512_storeu_si512(panel + j * kPanelRows + half * 16,
                            _mm512_xor_si512(_mm512_mask_i32gather_epi32(_mm512_setzero_si512(), 0xffff, offsets, base + 4 * j, 1), flip_v));
    }
  }
}

// Activations regrouped per block of 12 tokens as [unit][12] (zero for absent tokens), so the
// micro-kernel broadcasts from one stream at fixed offsets. Blocks over the pool: at 512 tokens
// of an 8,960-wide input this is a million scattered 4-byte copies.
void pack_tokens(const uint8_t* x, int64_t x_stride_bytes, int64_t N, int64_t units, uint32_t* packed, ThreadPool& pool) {
  const int64_t n_blocks = (N + kBlockTokens - 1) / kBlockTokens;
  pool.run(n_blocks, [&](int64_t b) {
    uint32_t* block = packed + b * units * kBlockTokens;
    std::memset(block, 0, static_cast<size_t>(units * kBlockTokens) * 4);
    for (int64_t t = b * kBlockTokens; t < std::min(N, (b + 1) * kBlockTokens); ++t) {
      const uint8_t* row = x + t * x_stride_bytes;
      for (int64_t j = 0; j < units; ++j) std::memcpy(&block[j * kBlockTokens + t % kBlockTokens], row + 4 * j, 4);
    }
  });
}


// 32 rows x T tokens over all units: acc[h][t] holds rows 16h..16h+15 of token t.
template <int T>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void micro_bf16(const uint32_t* panel, const uint32_t* xp, int64_t units,
                                                                       float* y, int64_t y_stride, __mmask16 m0, __mmask16 m1) {
  __m512 acc0[T], acc1[T];
  for (int t = 0; t < T; ++t) acc0[t] = acc1[t] = _mm512_setzero_ps();
  for (int64_t j = 0; j < units; ++j) {
    const __m512i w0 = _mm512_loadu_si512(panel + j * kPanelRows);
    const __m512i w1 = _mm512_loadu_si512(panel + j * kPanelRows + 16);
    for (int t = 0; t < T; ++t) {
      const __m512i xb = _mm512_set1_epi32(static_cast<int>(xp[j * kBlockTokens + t]));
      acc0[t] = _mm512_dpbf16_ps(acc0[t], (__m512bh)w0, (__m512bh)xb);
      acc1[t] = _mm512_dpbf16_ps(acc1[t], (__m512bh)w1, (__m512bh)xb);
    }
  }
  for (int t = 0; t < T; ++t) {
    _mm512_mask_storeu_ps(y + t * y_stride, m0, acc0[t]);
    _mm512_mask_storeu_ps(y + t * y_stride + 16, m1, acc1[t]);
  }
}

// acc += w (unsigned bytes) . x (signed bytes, one 32-bit unit broadcast from memory), per lane.
// In asm because GCC 12 compiles the intrinsic's tied accumulator through extra register copies
// and a stack store per product in the 24-accumulator loop below (objdump of micro_i8<12>): the
// kernel ran at ~60% of a register-only vpdpbusd loop. The embedded broadcast also saves the
// separate vpbroadcastd of each activation unit.
__attribute__((target("avx512f,avx512vnni"), always_inline)) inline void dpbusd_broadcast(__m512i& acc, const __m512i& w,
                                                                                          const uint32_t* x) {
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*x));
}

// Every accumulator index a constant from the start (fold expressions over the token index, not
// loops unrolled later), so GCC keeps the micro-kernels' 2 x T accumulators in registers.
template <int... t>
__attribute__((target("avx512f,avx512vnni"), always_inline)) inline void dpbusd_tokens(__m512i (&acc0)[sizeof...(t)],
                                                                                       __m512i (&acc1)[sizeof...(t)], const __m512i& w0,
                                                                                       const __m512i& w1, const uint32_t* x,
                                                                                       std::integer_sequence<int, t...>) {
  ((dpbusd_broadcast(acc0[t], w0, x + t), dpbusd_broadcast(acc1[t], w1, x + t)), ...);
}

// y[t] = (x_scale[t] * w_scale) * (acc[t] - x_bias[t]), in the reference's order.
template <int... t>
__attribute__((target("avx512f,avx512bw"), always_inline)) inline void store_i8_tokens(
    const __m512i (&acc0)[sizeof...(t)], const __m512i (&acc1)[sizeof...(t)], const int32_t* x_bias, const float* x_scale,
    const __m512& ws0, const __m512& ws1, float* y, int64_t y_stride, __mmask16 m0, __mmask16 m1, std::integer_sequence<int, t...>) {
  const auto store = [&](int tt, const __m512i& a0, const __m512i& a1) __attribute__((target("avx512f,avx512bw"), always_inline)) {
    const __m512i bias = _mm512_set1_epi32(x_bias[tt]);
    const __m512 xs = _mm512_set1_ps(x_scale[tt]);
    _mm512_mask_storeu_ps(y + tt * y_stride, m0, _mm512_mul_ps(_mm512_mul_ps(xs, ws0), _mm512_maskz_cvtepi32_ps(0xffff, _mm512_sub_epi32(a0, bias))));
    _mm512_mask_storeu_ps(y + tt * y_stride + 16, m1, _mm512_mul_ps(_mm512_mul_ps(xs, ws1), _mm512_maskz_cvtepi32_ps(0xffff, _mm512_sub_epi32(a1, bias))));
  };
  (store(t, acc0[t], acc1[t]), ...);
}

// Weights stored as w + 128 (unsigned) against signed activations: vpdpbusd sums
// (w + 128) * x, and 128 * sum(x) (x_bias) is taken back out before scaling.
template <int T>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void micro_i8(const uint32_t* panel, const uint32_t* xp, int64_t units,
                                                                     const int32_t* x_bias, const float* x_scale, const float* w_scale,
                                                                     float* y, int64_t y_stride, __mmask16 m0, __mmask16 m1) {
  const __m512 ws0 = _mm512_maskz_loadu_ps(m0, w_scale), ws1 = _mm512_maskz_loadu_ps(m1, w_scale + 16);
  constexpr auto tokens = std::make_integer_sequence<int, T>{};
  __m512i acc0[T] = {}, acc1[T] = {};
  for (int64_t j = 0; j < units; ++j) {
    const __m512i w0 = _mm512_loadu_si512(panel + j * kPanelRows);
    const __m512i w1 = _mm512_loadu_si512(panel + j * kPanelRows + 16);
    dpbusd_tokens(acc0, acc1, w0, w1, xp + j * kBlockTokens, tokens);
  }
  store_i8_tokens(acc0, acc1, x_bias, x_scale, ws0, ws1, y, y_stride, m0, m1, tokens);
}

// Lane masks of the rows of panel [r0, r0 + 32) that exist.
void panel_masks(int64_t M, int64_t r0, __mmask16* m0, __mmask16* m1) {
  const int64_t rows = std::min<int64_t>(kPanelRows, M - r0);
  *m0 = static_cast<__mmask16>(rows >= 16 ? 0xffff : (1u << rows) - 1);
  *m1 = static_cast<__mmask16>(rows <= 16 ? 0 : rows >= 32 ? 0xffff : (1u << (rows - 16)) - 1);
}

}  // namespace

void gemm_bf16_avx512(const uint16_t* w, int64_t M, int64_t K, const uint16_t* x, int64_t x_stride, int64_t N, float* y,
                      int64_t y_stride, ThreadPool& pool) {
  const int64_t units = (K + 1) / 2;  // bf16 pairs
  const int64_t n_blocks = (N + kBlockTokens - 1) / kBlockTokens;
  static thread_local std::vector<uint32_t> packed_x;
  uint32_t* xp = scratch(packed_x, static_cast<size_t>(n_blocks * units * kBlockTokens));
  pack_tokens(reinterpret_cast<const uint8_t*>(x), x_stride * 2, N, units, xp, pool);
  pool.run((M + kPanelRows - 1) / kPanelRows, [&](int64_t task) {
    static thread_local std::vector<uint32_t> panel_buffer;
    uint32_t* panel = scratch(panel_buffer, static_cast<size_t>(units * kPanelRows));
    const int64_t r0 = task * kPanelRows;
    pack_panel(reinterpret_cast<const uint8_t*>(w), M, K * 2, r0, units, 0, panel);
    __mmask16 m0, m1;
    panel_masks(M, r0, &m0, &m1);
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int64_t t0 = b * kBlockTokens;
      for_token_count<kBlockTokens>(N - t0, [&](auto T) {
        micro_bf16<decltype(T)::value>(panel, xp + b * units * kBlockTokens, units, y + t0 * y_stride + r0, y_stride, m0, m1);
      });
    }
  });
}

void gemm_i8_vnni(const int8_t* w, const float* w_scale, int64_t M, int64_t K, const int8_t* x, int64_t x_stride,
                  const float* x_scale, const int32_t* x_bias, int64_t N, float* y, int64_t y_stride, ThreadPool& pool) {
  const int64_t units = (K + 3) / 4;
  const int64_t n_blocks = (N + kBlockTokens - 1) / kBlockTokens;
  static thread_local std::vector<uint32_t> packed_x;
  uint32_t* xp = scratch(packed_x, static_cast<size_t>(n_blocks * units * kBlockTokens));
  pack_tokens(reinterpret_cast<const uint8_t*>(x), x_stride, N, units, xp, pool);
  pool.run((M + kPanelRows - 1) / kPanelRows, [&](int64_t task) {
    static thread_local std::vector<uint32_t> panel_buffer;
    uint32_t* panel = scratch(panel_buffer, static_cast<size_t>(units * kPanelRows));
    const int64_t r0 = task * kPanelRows;
    pack_panel(reinterpret_cast<const uint8_t*>(w), M, K, r0, units, 0x80808080u, panel);
    __mmask16 m0, m1;
    panel_masks(M, r0, &m0, &m1);
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int64_t t0 = b * kBlockTokens;
      for_token_count<kBlockTokens>(N - t0, [&](auto T) {
        micro_i8<decltype(T)::value>(panel, xp + b * units * kBlockTokens, units, x_bias + t0, x_scale + t0, w_scale + r0,
                                     y + t0 * y_stride + r0, y_stride, m0, m1);
      });
    }
  });
}

}  // namespace seekserve
