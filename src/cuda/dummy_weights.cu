// Dummy weight generation on the device (dummy_weights.h): a thread an element.
#include "core/dummy_values.h"
#include "cuda/dummy_weights.h"
#include "cuda/kernel_support.cuh"

namespace seekserve::cuda {

using namespace detail;

namespace {

__global__ void fill_dummy_bf16_kernel(uint16_t* out, int64_t n, uint64_t seed, float amplitude) {
  dependency_wait();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = dummy::bf16_element(seed, static_cast<uint64_t>(i), amplitude);
}

__global__ void fill_dummy_fp8_kernel(uint8_t* out, int64_t n, uint64_t seed) {
  dependency_wait();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = dummy::fp8_element(seed, static_cast<uint64_t>(i));
}

}  // namespace

void fill_dummy_bf16(bf16* out, int64_t n, uint64_t seed, float amplitude, cudaStream_t stream) {
  if (n == 0) return;
  launch(fill_dummy_bf16_kernel, blocks_for(n, 256), 256, stream, reinterpret_cast<uint16_t*>(out), n, seed, amplitude);
  SS_CUDA_CHECK_LAUNCH();
}

void fill_dummy_fp8(uint8_t* out, int64_t n, uint64_t seed, cudaStream_t stream) {
  if (n == 0) return;
  launch(fill_dummy_fp8_kernel, blocks_for(n, 256), 256, stream, out, n, seed);
  SS_CUDA_CHECK_LAUNCH();
}

}  // namespace seekserve::cuda
