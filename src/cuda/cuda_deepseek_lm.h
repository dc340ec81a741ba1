// DeepSeek V2/V3 (MLA attention, mixture of experts) on an NVIDIA GPU, in bf16.
//
// Attention runs in the absorbed form over a paged latent cache (bf16 c_kv and k_pe rows);
// the MoE layers route on the device and read only the experts their tokens chose, so decode
// steps replay CUDA graphs as the dense models' do. FP8 checkpoints are converted to bf16 at load.
#pragma once

#include <memory>

#include "models/deepseek_v3.h"
#include "models/causal_lm.h"
#include "model/weight_binder.h"

namespace seekserve::cuda {

Result<std::unique_ptr<CausalLM>> make_cuda_deepseek(DeepseekConfig config, ConfigReader& reader, WeightBinder& binder);

}  // namespace seekserve::cuda
