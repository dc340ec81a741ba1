// Registers the GPU implementations with the model loader: load_model(... device = "cuda")
// then builds Qwen2ForCausalLM and LlamaForCausalLM (cuda_dense_lm.h) and DeepseekV2/V3ForCausalLM
// (cuda_deepseek_lm.h) on the GPU. Call once at start-up (the CLI and the GPU tests do).
#pragma once

namespace seekserve::cuda {

void register_cuda_device();

}  // namespace seekserve::cuda
