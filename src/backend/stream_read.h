// Streaming sums of float buffers: the read-bandwidth probes that `seekserve bench` and the kernel
// benchmarks judge memory-bound kernels against.
#pragma once

#include <cstddef>
#include <cstring>

namespace seekserve {

// GCC vector types of 8 and 16 floats (vector_size cannot depend on a template parameter).
template <int kLanes>
struct FloatVector;
template <>
struct FloatVector<8> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct FloatVector<16> {
  typedef float type __attribute__((vector_size(64)));
};

// Sum of the first n - n % (4 * kLanes) floats with four independent accumulators of kLanes
// floats, so one thread is limited by memory, not by the add latency. Inlined into the
// target-specific wrappers below, which pick the vector width.
template <int kLanes>
[[gnu::always_inline]] inline float stream_sum(const float* p, size_t n) {
  using Vec = typename FloatVector<kLanes>::type;
  Vec acc[4] = {};
  for (size_t i = 0; i + 4 * kLanes <= n; i += 4 * kLanes)
    for (int j = 0; j < 4; ++j) {
      Vec v;
      std::memcpy(&v, p + i + j * kLanes, sizeof v);
      acc[j] += v;
    }
  const Vec all = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  float sum = 0;
  for (int l = 0; l < kLanes; ++l) sum += all[l];
  return sum;
}

inline __attribute__((target("avx512f"))) float stream_sum_avx512(const float* p, size_t n) { return stream_sum<16>(p, n); }
inline __attribute__((target("avx2"))) float stream_sum_avx2(const float* p, size_t n) { return stream_sum<8>(p, n); }

}  // namespace seekserve
