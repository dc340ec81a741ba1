// The dense decoder families (Qwen2, Llama: the R1-Distill models) on an NVIDIA GPU, in bf16.
//
// The whole forward pass runs on the device: weights uploaded once (q/k/v and gate/up fused
// into one matrix each, so a decode step launches one GEMV for each), the paged KV cache in
// device memory as bf16 rows, a step's inputs copied up in one transfer and its logits copied
// back in one. Matmuls of up to kGemvMaxTokens tokens use the memory-bound GEMV kernel; larger
// ones cuBLASLt. The batched engine drives it through the same CausalLM interface as on CPUs.
#pragma once

#include <memory>

#include "models/dense_decoder.h"

namespace seekserve::cuda {

Result<std::unique_ptr<CausalLM>> make_cuda_dense(DenseDecoderConfig config, ConfigReader& reader, WeightBinder& binder);

}  // namespace seekserve::cuda
