// The two ceilings GPU figures are judged against, measured on the device in the same run:
// device-to-device copy bandwidth (bytes read plus written) and the bf16 GEMM rate (and the
// block-scaled FP8 GEMM rate the DeepSeek FP8 figures compare with it).
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <string>

namespace seekserve::cuda {

struct DeviceCeilings {
  std::string name;         // e.g. "NVIDIA H200"
  double copy_GBps = 0;     // median of 10 copies of 2 GiB, read + written bytes
  double bf16_tflops = 0;   // median of 10 cuBLASLt 8192^3 bf16 GEMMs on random data
  double fp8_tflops = 0;    // the same with FP8 operands and DeepSeek's block scales (0: not supported)
};

DeviceCeilings measure_device_ceilings();

// The median time of `repeats` runs of body (after one warm-up run) on stream, from events.
double median_event_ms(int repeats, cudaStream_t stream, const std::function<void()>& body);

}  // namespace seekserve::cuda
