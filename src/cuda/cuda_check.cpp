#include "cuda/cuda_check.h"

#include <cstdio>
#include <cstdlib>

namespace seekserve::cuda {

void fail(const char* expr, cudaError_t error, const char* file, int line) {
  std::fprintf(stderr, "CUDA error %s (%s) in %s at %s:%d\n", cudaGetErrorName(error), cudaGetErrorString(error), expr, file,
               line);
  std::abort();
}

bool device_present() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

}  // namespace seekserve::cuda
