// Loading a model: config.json -> architecture -> family factory -> bound weights.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/sampler.h"
#include "model/hf_config.h"
#include "model/weight_binder.h"
#include "models/causal_lm.h"

namespace seekserve {

struct LoadOptions {
  std::string path;                          // model folder (or config.json with dummy weights)
  ComputeDType dtype = ComputeDType::kF32;   // --dtype
  bool dummy_weights = false;                // generate weights of the config's shapes
  std::shared_ptr<Backend> backend;          // null: the optimized CPU backend (make_cpu_backend)
  std::string device = "cpu";                // "cuda": a registered device implementation (bf16)
  // --num-layers: keep only the first N decoder layers (0: all). For benchmarks of real shapes
  // that do not fit (DeepSeek-V3's first 3 dense + a few MoE layers); the output is not the
  // model's, and per-layer figures scale to the full depth.
  int64_t num_layers = 0;
};

Result<std::unique_ptr<CausalLM>> load_model(const LoadOptions& options);

// Devices load_model accepts: "cpu" and those a device library registered.
std::vector<std::string> available_devices();

// A model implementation on another device (the CUDA library registers one): builds the model
// of `architecture` from the same config and weights, or says it does not run there.
using DeviceModelFactory = Result<std::unique_ptr<CausalLM>> (*)(const std::string& architecture, ConfigReader& config,
                                                                 WeightBinder& binder);
void register_device(const std::string& device, DeviceModelFactory factory);

// The architectures load_model accepts, in the order they are listed in errors.
std::vector<std::string> supported_architectures();

// Sampling defaults of a model folder: generation_config.json's temperature, top_k, top_p and
// min_p when it says do_sample; greedy otherwise (and when the file is absent).
SamplingParams sampling_defaults(const std::string& model_dir);

// Parses "f32" / "bf16" (the --dtype values).
Result<ComputeDType> parse_compute_dtype(const std::string& name);

// --- for the family files ---------------------------------------------------------------

// Fills the ModelInfo fields every family shares: vocab, hidden, layers, max positions, BOS and
// EOS (config.json, then generation_config.json beside it, which wins as in transformers).
void read_common_info(ConfigReader& config, ModelInfo* info);

using ModelFactory = Result<std::unique_ptr<CausalLM>> (*)(ConfigReader& config, WeightBinder& binder,
                                                          std::shared_ptr<Backend> backend);
// The FP8 block size from quantization_config (DeepSeek-V3 format) into `options`; refuses other
// quantization methods by name.
Status read_quantization_config(ConfigReader& config, BindOptions* options);

Result<std::unique_ptr<CausalLM>> make_deepseek(ConfigReader& config, WeightBinder& binder, std::shared_ptr<Backend> backend);
Result<std::unique_ptr<CausalLM>> make_qwen2(ConfigReader& config, WeightBinder& binder, std::shared_ptr<Backend> backend);
Result<std::unique_ptr<CausalLM>> make_llama(ConfigReader& config, WeightBinder& binder, std::shared_ptr<Backend> backend);

}  // namespace seekserve
