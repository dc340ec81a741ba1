// Rotary position embedding frequencies: default, linear, YaRN and Llama 3 variants.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/hf_config.h"

namespace seekserve {

// Which elements rotate together.
enum class RopePairing {
  kInterleaved,  // (2i, 2i+1): DeepSeek V2/V3
  kHalfSplit,    // (i, i + d/2): Qwen2, Llama
};

struct RopeFrequencies {
  std::vector<float> inv_freq;    // [rotary_dim / 2], radians per position
  float attention_factor = 1.0f;  // multiplies cos and sin (YaRN magnitude correction)
};

// Frequencies for a rotary dimension `rotary_dim` (even). Computed in float32 the way
// transformers does, so positions far into the context rotate bit-for-bit alike.
RopeFrequencies make_rope_frequencies(const RopeConfig& config, int64_t rotary_dim);

// cos and sin tables for the given positions: each [positions.size(), rotary_dim / 2].
void rope_cos_sin(const RopeFrequencies& freqs, std::span<const int32_t> positions,
                  std::vector<float>* cos, std::vector<float>* sin);

}  // namespace seekserve
