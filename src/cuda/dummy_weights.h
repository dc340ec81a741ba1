// --dummy-weights generated on the device, in place (core/dummy_values.h: the same bytes the host
// would make), instead of tens of GB generated on the host and copied up. Asynchronous on `stream`.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/kernels.h"

namespace seekserve::cuda {

// out[i] = dummy::bf16_element(seed, i, amplitude) for i < n.
void fill_dummy_bf16(bf16* out, int64_t n, uint64_t seed, float amplitude, cudaStream_t stream);
// out[i] = dummy::fp8_element(seed, i) for i < n.
void fill_dummy_fp8(uint8_t* out, int64_t n, uint64_t seed, cudaStream_t stream);

}  // namespace seekserve::cuda
