// Horizontal reductions of one AVX-512 vector, shared by the CPU kernels. Written without the
// _mm512_reduce_* intrinsics: GCC 12 reports -Wuninitialized inside their header.
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

}  // namespace seekserve
