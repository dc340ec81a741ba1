#include "core/dtype.h"

#include <array>
#include <cmath>

namespace seekserve {

namespace {

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  int64_t size;
};

constexpr std::array<DTypeEntry, 11> kDTypes = {{
    {DType::kF64, "F64", 8},
    {DType::kF32, "F32", 4},
    {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2},
    {DType::kF8E4M3, "F8_E4M3", 1},
    {DType::kI64, "I64", 8},
    {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},
    {DType::kI8, "I8", 1},
    {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
}};

// Decoded once: 256 entries cover every E4M3 bit pattern.
std::array<float, 256> make_fp8_table() {
  std::array<float, 256> table{};
  for (int bits = 0; bits < 256; ++bits) {
    const int sign = bits >> 7;
    const int exponent = (bits >> 3) & 0xf;
    const int mantissa = bits & 0x7;
    float value;
    if (exponent == 0xf && mantissa == 0x7) {
      value = std::nanf("");
    } else if (exponent == 0) {
      value = std::ldexp(static_cast<float>(mantissa) / 8.0f, -6);  // subnormal
    } else {
      value = std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, exponent - 7);
    }
    table[bits] = sign ? -value : value;
  }
  return table;
}

const std::array<float, 256> kFp8Table = make_fp8_table();

}  // namespace

int64_t dtype_size(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return e.size;
  return 0;
}

std::string_view dtype_name(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return e.name;
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& e : kDTypes)
    if (e.name == name) return e.dtype;
  return std::nullopt;
}

float f16_to_f32(uint16_t bits) {
  const uint32_t sign = (bits >> 15) & 1u;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  float value;
  if (exponent == 0) {
    value = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    value = mantissa ? std::nanf("") : INFINITY;
  } else {
    value = std::ldexp(static_cast<float>(mantissa | 0x400u), static_cast<int>(exponent) - 25);
  }
  return sign ? -value : value;
}

float fp8_e4m3_to_f32(uint8_t bits) { return kFp8Table[bits]; }

uint8_t f32_to_fp8_e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  return to_e4m3(f);
}

}  // namespace seekserve
