#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace seekserve {

namespace {

// Dimension index at which a frequency makes `rotations` turns over the original context.
double yarn_correction_dim(double rotations, int64_t dim, double base, int64_t max_positions) {
  return (static_cast<double>(dim) *
          std::log(static_cast<double>(max_positions) / (rotations * 2.0 * std::numbers::pi))) /
         (2.0 * std::log(base));
}

void apply_yarn(const RopeConfig& c, int64_t dim, const std::vector<float>& pos_freqs,
                std::vector<float>* inv_freq, float* attention_factor) {
  double low = std::floor(yarn_correction_dim(c.beta_fast, dim, c.theta, c.original_max_positions));
  double high = std::ceil(yarn_correction_dim(c.beta_slow, dim, c.theta, c.original_max_positions));
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  const float factor = static_cast<float>(c.factor);
  for (size_t i = 0; i < inv_freq->size(); ++i) {
    // ramp = 1 -> interpolate (divide by factor), ramp = 0 -> keep (extrapolate).
    const float ramp = std::clamp(static_cast<float>((static_cast<double>(i) - low) / (high - low)), 0.0f, 1.0f);
    const float extrapolation = 1.0f - ramp;
    const float keep = (*inv_freq)[i];
    const float interpolated = 1.0f / (factor * pos_freqs[i]);
    (*inv_freq)[i] = interpolated * (1.0f - extrapolation) + keep * extrapolation;
  }
  if (c.attention_factor) {
    *attention_factor = static_cast<float>(*c.attention_factor);
  } else if (c.mscale != 0.0 && c.mscale_all_dim != 0.0) {
    *attention_factor = static_cast<float>(yarn_mscale(c.factor, c.mscale) / yarn_mscale(c.factor, c.mscale_all_dim));
  } else {
    *attention_factor = static_cast<float>(yarn_mscale(c.factor, 1.0));
  }
}

void apply_llama3(const RopeConfig& c, std::vector<float>* inv_freq) {
  const double L = static_cast<double>(c.original_max_positions);
  const double low_freq_wavelen = L / c.low_freq_factor;
  const double high_freq_wavelen = L / c.high_freq_factor;
  const float factor = static_cast<float>(c.factor);
  for (float& f : *inv_freq) {
    const double wavelen = 2.0 * std::numbers::pi / f;
    if (wavelen < high_freq_wavelen) continue;
    if (wavelen > low_freq_wavelen) {
      f = f / factor;
      continue;
    }
    const float smooth = static_cast<float>((L / wavelen - c.low_freq_factor) /
                                            (c.high_freq_factor - c.low_freq_factor));
    f = (1.0f - smooth) * f / factor + smooth * f;
  }
}

}  // namespace

RopeFrequencies make_rope_frequencies(const RopeConfig& config, int64_t rotary_dim) {
  RopeFrequencies out;
  out.inv_freq.resize(static_cast<size_t>(rotary_dim / 2));
  std::vector<float> pos_freqs(out.inv_freq.size());
  for (int64_t i = 0; i < rotary_dim / 2; ++i) {
    // float32 throughout, as torch: base ** (arange(0, d, 2).float() / d), then reciprocal.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rotary_dim);
    const float pos_freq = std::pow(static_cast<float>(config.theta), exponent);
    pos_freqs[static_cast<size_t>(i)] = pos_freq;
    out.inv_freq[static_cast<size_t>(i)] = 1.0f / pos_freq;
  }
  switch (config.scaling) {
    case RopeScaling::kNone: break;
    case RopeScaling::kLinear:
      for (float& f : out.inv_freq) f /= static_cast<float>(config.factor);
      break;
    case RopeScaling::kYarn: apply_yarn(config, rotary_dim, pos_freqs, &out.inv_freq, &out.attention_factor); break;
    case RopeScaling::kLlama3: apply_llama3(config, &out.inv_freq); break;
  }
  return out;
}

void rope_cos_sin(const RopeFrequencies& freqs, std::span<const int32_t> positions,
                  std::vector<float>* cos, std::vector<float>* sin) {
  const size_t half = freqs.inv_freq.size();
  cos->resize(positions.size() * half);
  sin->resize(positions.size() * half);
  for (size_t t = 0; t < positions.size(); ++t) {
    const float pos = static_cast<float>(positions[t]);
    for (size_t i = 0; i < half; ++i) {
      const float angle = pos * freqs.inv_freq[i];  // float32 product, as torch's matmul
      (*cos)[t * half + i] = static_cast<float>(std::cos(static_cast<double>(angle))) * freqs.attention_factor;
      (*sin)[t * half + i] = static_cast<float>(std::sin(static_cast<double>(angle))) * freqs.attention_factor;
    }
  }
}

}  // namespace seekserve
