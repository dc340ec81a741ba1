// Float conversions written once for host and device code (no CUDA dependency): bit access,
// bf16 and e4m3 rounding. core/dtype.h's conversions use them; so do the dummy weights
// (core/dummy_values.h), which a GPU generates in place.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define SS_HOST_DEVICE __host__ __device__
#else
#define SS_HOST_DEVICE
#endif

namespace seekserve {

SS_HOST_DEVICE inline uint32_t float_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

// Finite f to bf16, rounding to nearest even (core/dtype.h's f32_to_bf16 adds the NaN case).
SS_HOST_DEVICE inline uint16_t finite_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Non-NaN f to e4m3 (OCP e4m3fn), rounding to nearest even, saturating at +-448.
SS_HOST_DEVICE inline uint8_t to_e4m3(float f) {
  const uint8_t sign = (float_bits(f) >> 24) & 0x80u;
  const float a = fabsf(f);
  if (a >= 448.0f) return sign | 0x7e;
  // Below 2^-6 the codes are multiples of 2^-9 (code m = m * 2^-9; code 8 = 2^-6 is the first
  // normal): a * 512 is exact, rounded to the nearest integer, ties to even.
  if (a < 0.015625f) return sign | static_cast<uint8_t>(rintf(a * 512.0f));
  // Normal: keep 3 of float's 23 mantissa bits, rounding to nearest even on the 20 dropped (a
  // carry moves into the exponent, as it should). Float's exponent bias is 127, e4m3's 7, so the
  // top bits minus 120 << 3 are the code; a < 448 keeps it at most 0x7e.
  const uint32_t bits = float_bits(a);
  const uint32_t rounded = (bits + 0x7ffffu + ((bits >> 20) & 1u)) >> 20;
  return sign | static_cast<uint8_t>(rounded - (120u << 3));
}

}  // namespace seekserve
