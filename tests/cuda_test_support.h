// Helpers of the GPU tests (cuda_test.cpp, cuda_deepseek_test.cpp): a fixture that skips
// without a device, host <-> device copies, bf16 conversions and the relative error.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace seekserve::cuda {

constexpr float kSentinel = -7.25f;

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!device_present()) GTEST_SKIP() << "no CUDA device";
  }
  std::mt19937 rng_{11};
  std::vector<float> random(size_t n, float sigma = 1.0f) {
    std::normal_distribution<float> dist(0.0f, sigma);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng_);
    return v;
  }
};

template <typename T>
inline DeviceBuffer<T> upload(const std::vector<T>& host, size_t pad = 0, T fill = T{}) {
  DeviceBuffer<T> d;
  EXPECT_TRUE(d.reserve(host.size() + pad).ok());
  std::vector<T> padded = host;
  padded.resize(host.size() + pad, fill);
  SS_CUDA_CHECK(cudaMemcpy(d.data(), padded.data(), padded.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
inline std::vector<T> download(const DeviceBuffer<T>& d, size_t n) {
  std::vector<T> host(n);
  SS_CUDA_CHECK(cudaDeviceSynchronize());
  SS_CUDA_CHECK(cudaMemcpy(host.data(), d.data(), n * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

inline std::vector<bf16> to_bf16_host(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t bits = f32_to_bf16(v[i]);
    std::memcpy(static_cast<void*>(&out[i]), &bits, 2);
  }
  return out;
}

inline float bf16_value(bf16 v) {
  uint16_t bits;
  std::memcpy(&bits, static_cast<const void*>(&v), 2);
  return bf16_to_f32(bits);
}

// ||got - want|| / ||want|| over the valid entries, every one finite.
inline double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_TRUE(std::isfinite(got[i])) << "at " << i;
    diff += (got[i] - want[i]) * static_cast<double>(got[i] - want[i]);
    ref += want[i] * static_cast<double>(want[i]);
  }
  return std::sqrt(diff / std::max(ref, 1e-30));
}

}  // namespace seekserve::cuda
