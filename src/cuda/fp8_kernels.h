// W8A8 FP8 as DeepSeek's own inference (--dtype fp8 on the GPU): weights e4m3 with one float32
// scale per 128 x 128 block, activations quantized on the fly to e4m3 with one scale per token
// per 128 channels; products accumulated in float32. The CPU reference (ComputeDType::kFP8) is
// the oracle. Decode-sized steps run the CUDA-core GEMVs below (memory-bound: one byte a weight);
// bigger ones LtGemm::run_fp8 (tensor cores, cuBLASLt block scaling).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/deepseek_kernels.h"

namespace seekserve::cuda {

constexpr int64_t kFp8Group = 128;  // channels per scale, both operands

// A device FP8 weight: e4m3 [rows, K]; row r's scales are the row scale_row[r] of the block grid
// scales [*, scale_ld] (a matrix concatenated from parts keeps each part's blocks: rows of a part
// that does not start on a multiple of 128 still find theirs).
struct Fp8Weight {
  const uint8_t* w = nullptr;
  const float* scales = nullptr;
  const int32_t* scale_row = nullptr;
  int64_t scale_ld = 0;
};

// Quantized activations: e4m3 [rows, K] and scales [K / kFp8Group, ld] with the token index
// contiguous (cuBLASLt's layout for the GEMM's token operand).
struct Fp8Activations {
  const uint8_t* xq = nullptr;
  const float* scales = nullptr;
  int64_t ld = 0;
};

// xq[t][k] = e4m3(x[t][k] / s), scales[g][t] = s = amax(group g of row t) / 448 (1 for an
// all-zero group): bit for bit the CPU reference's quantize_fp8_groups. Rows n..scale_ld-1 (the
// GEMM's padding to a multiple of 4) are written as zeros. K a multiple of kFp8Group.
void quantize_fp8_rows(const bf16* x, int64_t n, int64_t K, uint8_t* xq, float* scales, int64_t scale_ld, cudaStream_t stream);

// quantize_fp8_rows over the experts' gathered rows x [rows, K] (moe_gather_rows: expert e's
// rows are [padded[e], padded[e + 1]), counts multiples of 16), for one block-scaled GEMM an
// expert: expert e's scales form a [K / 128, rows_e] block of their own (token-contiguous, as
// cuBLASLt reads a GEMM's activation scales) at scales + padded[e] * K / 128. padded: [E + 1] on
// the device.
void quantize_fp8_expert_rows(const bf16* x, int64_t rows, int64_t K, const int32_t* padded, int64_t E, uint8_t* xq, float* scales,
                              cudaStream_t stream);

// y[t][r] (+)= sum_g scale_w(r, g) scale_x(t, g) sum_{k in g} w[r][k] xq[t][k] (+ bias[r]) for
// n <= 8 tokens, 16 weight bytes a lane per load, on CUDA cores (e4m3 decoded by the conversion
// units, a row a warp). y: [n, y_stride] float32. (A tensor-core version, mma.sync m16n8k32 on
// the bytes, measured slower on the H200 at batch 1 — 3.59 vs 3.34 ms a V3 8-layer step — and
// equal at batch 32, 2026-11-30: the conversions are not what bounds it.)
void fp8_gemv(const Fp8Weight& w, int64_t M, int64_t K, const Fp8Activations& x, int64_t n, const float* bias, bool accumulate, float* y,
              int64_t y_stride, cudaStream_t stream);

// y[t][c] = (accumulate ? y[t][c] : 0) + src[t][c] (+ bias[c]) over [n, M]: a bf16 GEMM output
// added into the float32 residual stream.
void add_bf16_rows(const bf16* src, int64_t n, int64_t M, const float* bias, bool accumulate, float* y, cudaStream_t stream);

// The grouped expert matmuls of deepseek_kernels.h over FP8 experts (stacked as there: gate
// rows, then up rows per expert): the CUDA-core GEMV, or tensor cores (mma.sync m16n8k32 e4m3 on
// the weight bytes as they are; default_moe_kernel). x holds one
// quantized row per token (swiglu) or per pair (down).
void moe_fp8_gemv_swiglu(MoeKernel kernel, const Fp8Weight& w_gate_up, int64_t I, int64_t K, const Fp8Activations& x, int64_t top_k,
                         const MoeGroups& groups, int64_t max_active, bf16* act, cudaStream_t stream);
void moe_fp8_gemv_down(MoeKernel kernel, const Fp8Weight& w_down, int64_t M, int64_t I, const Fp8Activations& act, const MoeGroups& groups,
                       int64_t max_active, float* out, cudaStream_t stream);

}  // namespace seekserve::cuda
