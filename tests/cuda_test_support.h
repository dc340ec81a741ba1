// Helpers of the GPU tests (cuda_test.cpp, cuda_deepseek_test.cpp): a fixture that skips
// without a device, host <-> device copies, bf16 conversions and the relative error.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_device.h"
#include "cuda/deepseek_kernels.h"
#include "cuda/kernels.h"
#include "layers/moe.h"
#include "models/model_loader.h"
#include "models/causal_lm.h"
#include "test_support.h"

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
  // n random tokens of width D (bf16 values) routed to top_k of E experts by random logits
  // (route_tokens' default rule): ids and weights [n, top_k].
  struct RoutedTokens {
    std::vector<float> x;
    std::vector<int32_t> ids;
    std::vector<float> weights;
  };
  RoutedTokens random_routed_tokens(int64_t n, int64_t D, int64_t E, int64_t top_k) {
    RoutedTokens r;
    r.x = random(static_cast<size_t>(n * D));
    for (float& v : r.x) v = round_to_bf16(v);
    r.ids.resize(static_cast<size_t>(n * top_k));
    r.weights.resize(r.ids.size());
    MoeConfig c;
    c.n_routed_experts = E;
    c.top_k = top_k;
    const std::vector<float> logits = random(static_cast<size_t>(n * E));
    route_tokens(c, logits.data(), n, {}, r.ids.data(), r.weights.data());
    return r;
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

inline std::vector<float> from_bf16_host(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_value(v[i]);
  return out;
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

// MoeGroups over one buffer of pairs + 2 E + 2 ints, laid out as the model lays them out.
inline MoeGroups moe_groups_in(int32_t* buffer, int64_t pairs, int64_t E) {
  MoeGroups g;
  g.offsets = buffer;
  g.sorted = g.offsets + E + 1;
  g.active = g.sorted + pairs;
  g.n_active = g.active + E;
  return g;
}

// A test over one model fixture (the parameter): skips without a device or the fixture; load()
// builds it for a device and dtype.
class CudaModelTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!device_present()) GTEST_SKIP() << "no CUDA device";
    dir_ = testing::model_dir(GetParam());
    if (dir_.empty()) GTEST_SKIP() << GetParam() << " is not available";
    register_cuda_device();
  }
  Result<std::unique_ptr<CausalLM>> load(const std::string& device, ComputeDType dtype) {
    LoadOptions options;
    options.path = dir_;
    options.dtype = dtype;
    options.device = device;
    auto loaded = load_model(options);
    EXPECT_TRUE(loaded.ok()) << loaded.status().to_string();
    return loaded;
  }
  std::string dir_;
};

// A fixture name as a gtest parameter name ('-' is not allowed there).
inline std::string fixture_param_name(const ::testing::TestParamInfo<std::string>& param) {
  std::string name = param.param;
  for (char& c : name)
    if (c == '-') c = '_';
  return name;
}

// The logits of every token of `tokens` run on top of what `cache` holds (the test fails on an
// error), the step's routing recorded into `routing`.
inline std::vector<float> forward_logits(CausalLM& model, KvCache& cache, std::span<const int32_t> tokens,
                                         testing::RoutingRecord* routing) {
  ForwardRequest request;
  request.tokens = tokens;
  request.logits_from = 0;
  request.on_routing = routing->observer();
  std::vector<float> logits;
  const Status status = model.forward(request, cache, &logits);
  EXPECT_TRUE(status.ok()) << status.to_string();
  return logits;
}

}  // namespace seekserve::cuda
