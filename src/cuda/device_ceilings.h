// The two ceilings GPU figures are judged against, measured on the device in the same run:
// device-to-device copy bandwidth (bytes read plus written) and the bf16 GEMM rate (and the
// block-scaled FP8 GEMM rate the DeepSeek FP8 figures compare with it).
#pragma once

#include <string>

namespace seekserve::cuda {

struct DeviceCeilings {
  std::string name;         // e.g. "NVIDIA H200"
  double copy_GBps = 0;     // median of 10 copies of 2 GiB, read + written bytes
  double bf16_tflops = 0;   // median of 10 cuBLASLt 8192^3 bf16 GEMMs on random data
  double fp8_tflops = 0;    // the same with FP8 operands and DeepSeek's block scales (0: not supported)
};

DeviceCeilings measure_device_ceilings();

}  // namespace seekserve::cuda
