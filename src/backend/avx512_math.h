// Math on AVX-512 vectors shared by the CPU kernels: horizontal reductions (written without the
// _mm512_reduce_* intrinsics: GCC 12 reports -Wuninitialized inside their header) and exp.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace seekserve {

// Sum of the 16 int32 lanes (a store and adds: GCC 12's reduce intrinsics trip -Wuninitialized).
inline __attribute__((target("avx512f"))) int32_t hsum512_epi32(__m512i v) {
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, v);
  int32_t sum = 0;
  for (int32_t x : lanes) sum += x;
  return sum;
}

// Horizontal sum by halving with in-register shuffles (GCC 12's _mm512_reduce_add_ps trips
// -Wuninitialized inside its own header; a store and scalar adds cost several times more).
inline __attribute__((target("avx512f"))) float hsum512(__m512 v) {
  v = _mm512_add_ps(v, _mm512_maskz_shuffle_f32x4(0xffff, v, v, 0x4e));  // swap 256-bit halves
  v = _mm512_add_ps(v, _mm512_maskz_shuffle_f32x4(0xffff, v, v, 0xb1));  // swap 128-bit quarters
  v = _mm512_add_ps(v, _mm512_maskz_permute_ps(0xffff, v, 0x4e));  // swap 64-bit pairs
  v = _mm512_add_ps(v, _mm512_maskz_permute_ps(0xffff, v, 0xb1));  // swap neighbours
  return _mm512_cvtss_f32(v);
}

// Largest of the 16 lanes.
inline __attribute__((target("avx512f"))) float hmax512(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float m = lanes[0];
  for (float x : lanes) m = std::max(m, x);
  return m;
}

// e^x for 16 lanes: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial (relative
// error ~2e-7), times 2^n by scalef. Inputs below -87 give ~1.6e-38; large inputs overflow to
// inf, as std::exp does.
inline __attribute__((target("avx512f"))) __m512 exp512(__m512 x) {
  x = _mm512_maskz_max_ps(0xffff, x, _mm512_set1_ps(-87.0f));  // e^-87 ~ 1.6e-38: below, 0 is as good
  const __m512 n =
      _mm512_maskz_roundscale_ps(0xffff, _mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT);
  const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  const __m512 r2 = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);  // ln2 in two parts
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r2, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r2, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r2, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r2, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r2, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r2, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(0xffff, p, n);
}

}  // namespace seekserve
