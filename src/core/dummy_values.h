// The values of --dummy-weights: deterministic pseudo-random elements, a pure function of (the
// tensor's seed, the element's index), so they do not depend on binding order, need no shared
// state, and come out bit for bit the same on the host and on a GPU (which generates them in place
// instead of receiving tens of GB over PCIe). Host and device code; no CUDA dependency.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "core/float_convert.h"

namespace seekserve::dummy {

// FNV-1a of the tensor name: the seed of its elements.
inline uint64_t name_seed(const std::string& name) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ULL;
  return h;
}

SS_HOST_DEVICE inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// 24 random bits for element i.
SS_HOST_DEVICE inline uint32_t random_bits24(uint64_t seed, uint64_t i) {
  return static_cast<uint32_t>(mix64(seed + i * 0x9e3779b97f4a7c15ULL) >> 40);
}

// Uniform in [-1, 1).
SS_HOST_DEVICE inline float unit_uniform(uint64_t seed, uint64_t i) {
  return static_cast<float>(random_bits24(seed, i)) * (2.0f / 16777216.0f) - 1.0f;
}

// The range of a matrix's dummy values, [-amplitude, amplitude): variance 1 / cols keeps
// activations O(1) through any depth of random layers.
inline float amplitude(int64_t cols) { return std::sqrt(3.0f / static_cast<float>(cols)); }

// Element i of a dummy bf16 weight: uniform in [-amplitude, amplitude).
SS_HOST_DEVICE inline uint16_t bf16_element(uint64_t seed, uint64_t i, float amplitude) {
  return seekserve::finite_to_bf16(unit_uniform(seed, i) * amplitude);
}

// Element i of a dummy FP8 block-scaled weight: e4m3 of a uniform value in [-240, 240), every
// block's scale amplitude / 240 (fp8_block_scale), so the weight is uniform in [-amplitude,
// amplitude) as the bf16 one (up to e4m3's rounding).
SS_HOST_DEVICE inline uint8_t fp8_element(uint64_t seed, uint64_t i) { return seekserve::to_e4m3(unit_uniform(seed, i) * 240.0f); }
inline float fp8_block_scale(float amplitude) { return amplitude / 240.0f; }
// Int8 weights (--dtype int8): uniform codes in [-127, 127] with a row scale of amplitude / 127,
// made directly (quantizing generated floats held 4 bytes a parameter and took most of a load).
inline int8_t i8_element(uint64_t seed, uint64_t i) {
  return static_cast<int8_t>(static_cast<int32_t>((uint64_t{random_bits24(seed, i)} * 255) >> 24) - 127);
}
inline float i8_row_scale(float amplitude) { return amplitude / 127.0f; }

}  // namespace seekserve::dummy
