// Compute-bound matmuls for many tokens at once (prefill, large batches) on AVX-512.
//
// The decode kernels dot whole weight rows with each token and reduce across lanes; with many
// tokens that re-reads every token's activations once per 4 weight rows and spends its time on
// L2 traffic and reductions. These kernels instead copy 32 weight rows at a time into a panel
// where each 64-byte vector holds one 4-byte unit (a bf16 pair, or 4 int8s) of 16 rows, then
// multiply it against a token's unit broadcast to all lanes: the accumulators hold 16 outputs of
// one token each, no reduction is needed, and the panel (in L2) is reused by every token.
#pragma once

#include <cstdint>

#include "backend/thread_pool.h"

namespace seekserve {

// Token count from which the panel kernels beat the row-dot kernels (packing costs about what
// a few tokens' worth of products do).
constexpr int64_t kGemmMinTokens = 12;

// y[t][r] = sum_k w[r][k] * x[t][k] in float32 from bf16 operands.
// w: [M, K] row-major bf16; x: [N, x_stride] bf16, zero beyond K up to an even count.
void gemm_bf16_avx512(const uint16_t* w, int64_t M, int64_t K, const uint16_t* x, int64_t x_stride, int64_t N, float* y,
                      int64_t y_stride, ThreadPool& pool);

// y[t][r] = x_scale[t] * w_scale[r] * (sum_k w[r][k] * x[t][k]), the sum exact in int32.
// w: [M, K] row-major int8; x: [N, x_stride] int8, zero beyond K up to a multiple of 4.
// x_bias[t] = 128 * sum_k x[t][k] (the kernel multiplies w + 128). Needs AVX512_VNNI.
void gemm_i8_vnni(const int8_t* w, const float* w_scale, int64_t M, int64_t K, const int8_t* x, int64_t x_stride,
                  const float* x_scale, const int32_t* x_bias, int64_t N, float* y, int64_t y_stride, ThreadPool& pool);

}  // namespace seekserve
