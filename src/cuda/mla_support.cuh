// Device helpers shared by the MLA decode kernels (mla.cu on CUDA cores, mla_decode_mma.cu on
// tensor cores). Included only by .cu files.
#pragma once

#include <cuda_runtime.h>

#include "cuda/deepseek_kernels.h"

namespace seekserve::cuda::detail {

// Head h's query rotary pair j at the token's position (RoPE on interleaved pairs); 0 past H.
__device__ __forceinline__ float2 rotated_q_pe(const MlaAttentionParams& p, int64_t t, int h, int j, int pos) {
  const int64_t P = p.rope_dim;
  if (h >= p.n_heads) return make_float2(0.0f, 0.0f);
  const float* qp = p.q + t * p.q_stride + h * p.q_head_stride + p.q_pe_offset;
  const float a = qp[2 * j], b = qp[2 * j + 1];
  const float c = p.cos[pos * (P / 2) + j], s = p.sin[pos * (P / 2) + j];
  return make_float2(a * c - b * s, b * c + a * s);
}

}  // namespace seekserve::cuda::detail
