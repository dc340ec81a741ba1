#include "engine/sampler.h"

#include <algorithm>
#include <cmath>

namespace seekserve {

Status SamplingParams::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) return invalid_argument("temperature must be a finite number >= 0");
  if (top_k < 0) return invalid_argument("top_k must be >= 0");
  if (!(top_p > 0.0f && top_p <= 1.0f)) return invalid_argument("top_p must be in (0, 1]");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return invalid_argument("min_p must be in [0, 1]");
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) return invalid_argument("presence_penalty must be in [-2, 2]");
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) return invalid_argument("frequency_penalty must be in [-2, 2]");
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty)) return invalid_argument("repetition_penalty must be > 0");
  return Status::Ok();
}

int32_t argmax(const float* logits, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<int32_t>(best);
}

int32_t Sampler::sample(const float* logits, int64_t vocab) {
  if (params_.greedy()) return argmax(logits, vocab);

  // Softmax of logits / temperature, kept as (probability, token) sorted most likely first.
  candidates_.resize(static_cast<size_t>(vocab));
  float max_logit = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) max_logit = std::max(max_logit, logits[i]);
  double total = 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    const float p = std::exp((logits[i] - max_logit) / params_.temperature);
    candidates_[static_cast<size_t>(i)] = {p, static_cast<int32_t>(i)};
    total += p;
  }
  auto by_probability = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t keep = candidates_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) {
    keep = static_cast<size_t>(params_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<long>(keep), candidates_.end(), by_probability);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_probability);
  }
  // Renormalize over the kept set before top-p, as filtering in logit space does.
  total = 0.0;
  for (size_t i = 0; i < keep; ++i) total += candidates_[i].first;
  if (params_.top_p < 1.0f) {
    double cumulative = 0.0;
    size_t n = 0;
    while (n < keep) {
      cumulative += candidates_[n].first / total;
      ++n;
      if (cumulative >= params_.top_p) break;
    }
    keep = std::max<size_t>(n, 1);
  }
  if (params_.min_p > 0.0f) {
    const float threshold = params_.min_p * candidates_[0].first;
    size_t n = 1;
    while (n < keep && candidates_[n].first >= threshold) ++n;
    keep = n;
  }
  total = 0.0;
  for (size_t i = 0; i < keep; ++i) total += candidates_[i].first;
  // u in [0, 1) from 53 random bits, independent of the standard library's distributions.
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * total;
  double cumulative = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    cumulative += candidates_[i].first;
    if (u < cumulative) return candidates_[i].second;
  }
  return candidates_[keep - 1].second;
}

}  // namespace seekserve
