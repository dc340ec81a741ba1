#include "cuda/device_ceilings.h"

#include <algorithm>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "cuda/cuda_check.h"
#include "cuda/lt_gemm.h"

namespace seekserve::cuda {

double median_event_ms(int repeats, cudaStream_t stream, const std::function<void()>& body) {
  cudaEvent_t start, stop;
  SS_CUDA_CHECK(cudaEventCreate(&start));
  SS_CUDA_CHECK(cudaEventCreate(&stop));
  body();  // warm-up
  std::vector<float> ms;
  for (int i = 0; i < repeats; ++i) {
    SS_CUDA_CHECK(cudaEventRecord(start, stream));
    body();
    SS_CUDA_CHECK(cudaEventRecord(stop, stream));
    SS_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    SS_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  SS_CUDA_CHECK(cudaEventDestroy(start));
  SS_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

DeviceCeilings measure_device_ceilings() {
  DeviceCeilings c;
  cudaDeviceProp prop{};
  SS_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  c.name = prop.name;
  cudaStream_t stream;
  SS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  {
    const size_t bytes = size_t{2} << 30;
    DeviceBuffer<uint8_t> a, b;
    if (a.reserve(bytes).ok() && b.reserve(bytes).ok()) {
      SS_CUDA_CHECK(cudaMemsetAsync(a.data(), 1, bytes, stream));
      const double ms = median_event_ms(10, stream, [&] { SS_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, stream)); });
      c.copy_GBps = 2.0 * static_cast<double>(bytes) / (ms * 1e-3) / 1e9;
    }
  }
  {
    const int64_t n = 8192;
    std::vector<uint16_t> host(static_cast<size_t>(n * n));
    std::mt19937 rng(5);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (auto& v : host) v = f32_to_bf16(dist(rng));
    DeviceBuffer<bf16> w, x;
    DeviceBuffer<float> y;
    if (w.reserve(host.size()).ok() && x.reserve(host.size()).ok() && y.reserve(host.size()).ok()) {
      SS_CUDA_CHECK(cudaMemcpy(w.data(), host.data(), host.size() * 2, cudaMemcpyHostToDevice));
      SS_CUDA_CHECK(cudaMemcpy(x.data(), host.data(), host.size() * 2, cudaMemcpyHostToDevice));
      LtGemm gemm;
      const double ms = median_event_ms(10, stream, [&] { gemm.run(w.data(), n, n, x.data(), n, false, y.data(), stream); });
      c.bf16_tflops = 2.0 * static_cast<double>(n * n * n) / (ms * 1e-3) / 1e12;
    }
    // FP8: e4m3 of the same values, random block scales, bf16 out.
    std::vector<uint8_t> q(host.size());
    for (size_t i = 0; i < q.size(); ++i) q[i] = f32_to_fp8_e4m3(bf16_to_f32(host[i]));
    std::vector<float> scales(static_cast<size_t>((n / 128) * (n / 128)));
    std::uniform_real_distribution<float> uniform(0.5f, 2.0f);
    for (float& s : scales) s = uniform(rng);
    DeviceBuffer<uint8_t> wq, xq;
    DeviceBuffer<float> ws, xs;
    DeviceBuffer<bf16> out;
    LtGemm fp8;
    if (fp8.fp8_available(n, n, n) && wq.reserve(q.size()).ok() && xq.reserve(q.size()).ok() && ws.reserve(scales.size()).ok() &&
        xs.reserve(static_cast<size_t>(n * (n / 128))).ok() && out.reserve(q.size()).ok()) {
      SS_CUDA_CHECK(cudaMemcpy(wq.data(), q.data(), q.size(), cudaMemcpyHostToDevice));
      SS_CUDA_CHECK(cudaMemcpy(xq.data(), q.data(), q.size(), cudaMemcpyHostToDevice));
      SS_CUDA_CHECK(cudaMemcpy(ws.data(), scales.data(), scales.size() * 4, cudaMemcpyHostToDevice));
      std::vector<float> x_scales(static_cast<size_t>(n * (n / 128)), 1.0f);
      SS_CUDA_CHECK(cudaMemcpy(xs.data(), x_scales.data(), x_scales.size() * 4, cudaMemcpyHostToDevice));
      const double ms = median_event_ms(10, stream, [&] { fp8.run_fp8(wq.data(), ws.data(), n, n, xq.data(), xs.data(), n, out.data(), n, stream); });
      c.fp8_tflops = 2.0 * static_cast<double>(n * n * n) / (ms * 1e-3) / 1e12;
    }
  }
  SS_CUDA_CHECK(cudaStreamDestroy(stream));
  return c;
}

}  // namespace seekserve::cuda
