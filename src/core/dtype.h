// Element types found in checkpoints, and the scalar conversions between them.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "core/float_convert.h"

namespace seekserve {

// The dtypes a safetensors header may name. Weights use F32/BF16/F16/F8_E4M3; goldens use I32.
enum class DType { kF64, kF32, kF16, kBF16, kF8E4M3, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element.
int64_t dtype_size(DType dtype);
// The safetensors spelling ("BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType dtype);
// Parses the safetensors spelling; nullopt for anything else.
std::optional<DType> parse_dtype(std::string_view name);

inline float bf16_to_f32(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest even, as PyTorch does; NaN stays a (quiet) NaN.
inline uint16_t f32_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  return finite_to_bf16(f);
}

// Rounds a float to the nearest bf16 value, kept as a float.
inline float round_to_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

float f16_to_f32(uint16_t bits);

// OCP FP8 E4M3 ("e4m3fn"): no infinities, 0x7f/0xff are NaN, max finite 448.
float fp8_e4m3_to_f32(uint8_t bits);
// Round to nearest even with saturation to +-448 (what torch's float8_e4m3fn cast does for finite input).
uint8_t f32_to_fp8_e4m3(float f);

}  // namespace seekserve
