#include "cuda/cuda_device.h"

#include "cuda/cuda_check.h"
#include "cuda/cuda_deepseek_lm.h"
#include "cuda/cuda_dense_lm.h"
#include "models/deepseek_v3.h"
#include "models/model_loader.h"

namespace seekserve::cuda {

namespace {

Result<std::unique_ptr<CausalLM>> make_cuda_model(const std::string& architecture, ConfigReader& config, WeightBinder& binder) {
  if (!device_present()) return unimplemented("--device cuda: no CUDA device is present");
  if (architecture == "Qwen2ForCausalLM" || architecture == "LlamaForCausalLM") {
    DenseDecoderConfig dense = architecture == "Qwen2ForCausalLM" ? read_qwen2_config(config) : read_llama_config(config);
    SS_RETURN_IF_ERROR(config.status());
    return make_cuda_dense(std::move(dense), config, binder);
  }
  if (architecture == "DeepseekV3ForCausalLM" || architecture == "DeepseekV2ForCausalLM") {
    DeepseekConfig deepseek = read_deepseek_config(config, architecture == "DeepseekV3ForCausalLM");
    SS_RETURN_IF_ERROR(config.status());
    return make_cuda_deepseek(std::move(deepseek), config, binder);
  }
  return unimplemented(architecture + " does not run on --device cuda");
}

}  // namespace

void register_cuda_device() { register_device("cuda", make_cuda_model); }

}  // namespace seekserve::cuda
