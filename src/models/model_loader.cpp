#include "models/model_loader.h"

#include <cstdlib>
#include <filesystem>
#include <map>

#include "backend/cpu_backend.h"
#include "loader/checkpoint.h"

namespace seekserve {

namespace fs = std::filesystem;

// Registered device implementations, by device name.
std::map<std::string, DeviceModelFactory>& devices();

namespace {

struct Family {
  const char* architecture;
  ModelFactory factory;
};

constexpr Family kFamilies[] = {
    {"DeepseekV3ForCausalLM", make_deepseek},
    {"DeepseekV2ForCausalLM", make_deepseek},
    {"Qwen2ForCausalLM", make_qwen2},
    {"LlamaForCausalLM", make_llama},
};

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

}  // namespace

std::vector<std::string> supported_architectures() {
  std::vector<std::string> out;
  for (const auto& f : kFamilies) out.emplace_back(f.architecture);
  return out;
}

SamplingParams sampling_defaults(const std::string& model_dir) {
  SamplingParams p;
  p.temperature = 0.0f;
  const fs::path path = fs::path(model_dir) / "generation_config.json";
  if (!fs::is_directory(model_dir) || !fs::exists(path)) return p;
  auto config = load_config(path.string());
  if (!config.ok() || !config->bool_or("do_sample", false)) return p;
  p.temperature = static_cast<float>(config->double_or("temperature", 1.0));
  p.top_k = config->int_or("top_k", 0);
  p.top_p = static_cast<float>(config->double_or("top_p", 1.0));
  p.min_p = static_cast<float>(config->double_or("min_p", 0.0));
  return p;
}

Result<ComputeDType> parse_compute_dtype(const std::string& name) {
  if (name == "f32" || name == "float32") return ComputeDType::kF32;
  if (name == "bf16" || name == "bfloat16") return ComputeDType::kBF16;
  if (name == "int8") return ComputeDType::kInt8;
  if (name == "fp8") return ComputeDType::kFP8;
  return invalid_argument("unknown --dtype '" + name + "' (supported: f32, bf16, int8, fp8)");
}

void read_common_info(ConfigReader& config, ModelInfo* info) {
  const std::string model_dir = fs::path(config.source()).parent_path().string();
  info->architecture = config_architecture(config).ok() ? config_architecture(config).value() : "";
  info->vocab_size = config.require_int("vocab_size");
  info->hidden_size = config.require_int("hidden_size");
  info->n_layers = config.require_int("num_hidden_layers");
  info->max_positions = config.int_or("max_position_embeddings", 4096);
  if (config.has("bos_token_id")) info->bos_token_id = static_cast<int32_t>(config.require_int("bos_token_id"));
  for (int64_t id : config.int_list("eos_token_id")) info->eos_token_ids.push_back(static_cast<int32_t>(id));
  if (info->vocab_size <= 0 || info->hidden_size <= 0 || info->n_layers <= 0 || info->max_positions <= 0)
    config.fail("vocab_size, hidden_size, num_hidden_layers and max_position_embeddings must be positive");

  const fs::path generation_config = fs::path(model_dir) / "generation_config.json";
  if (!fs::exists(generation_config)) return;
  auto gen = load_config(generation_config.string());
  if (!gen.ok()) {
    config.fail(gen.status().message());
    return;
  }
  std::vector<int64_t> eos = gen->int_list("eos_token_id");
  if (!eos.empty()) {
    info->eos_token_ids.clear();
    for (int64_t id : eos) info->eos_token_ids.push_back(static_cast<int32_t>(id));
  }
  if (gen->has("bos_token_id")) info->bos_token_id = static_cast<int32_t>(gen->require_int("bos_token_id"));
  if (!gen->status().ok()) config.fail(gen->status().message());
}

Status read_quantization_config(ConfigReader& config, BindOptions* options) {
  if (!config.has("quantization_config")) return Status::Ok();
  const auto& q = config.root()["quantization_config"];
  const std::string method = q.is_object() && q.contains("quant_method") && q["quant_method"].is_string()
                                 ? q["quant_method"].get<std::string>() : "";
  if (method != "fp8")
    return unimplemented(config.source() + ": quantization_config.quant_method '" + method +
                         "' is not supported (supported: fp8 with block scales)");
  const auto block = q.find("weight_block_size");
  if (block == q.end() || !block->is_array() || block->size() != 2 || !(*block)[0].is_number_unsigned() ||
      !(*block)[1].is_number_unsigned() || (*block)[0].get<int64_t>() <= 0 || (*block)[1].get<int64_t>() <= 0)
    return unimplemented(config.source() + ": fp8 quantization needs weight_block_size [rows, cols] "
                         "(per-tensor FP8 scales are not supported)");
  options->fp8_block_rows = (*block)[0].get<int64_t>();
  options->fp8_block_cols = (*block)[1].get<int64_t>();
  options->dummy_fp8 = true;
  return Status::Ok();
}

namespace {

// The config with num_hidden_layers cut to n (every family reads its depth from there; the
// weights of later layers are then never bound).
Status keep_first_layers(int64_t n, ConfigReader* config) {
  if (n == 0) return Status::Ok();
  const int64_t total = config->require_int("num_hidden_layers");
  SS_RETURN_IF_ERROR(config->status());
  if (n < 0 || n > total)
    return invalid_argument("--num-layers " + std::to_string(n) + ": the model has " + std::to_string(total) + " decoder layers");
  nlohmann::json root = config->root();
  root["num_hidden_layers"] = n;
  *config = ConfigReader(std::move(root), config->source());
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<CausalLM>> load_model(const LoadOptions& options) {
  SS_ASSIGN_OR_RETURN(ConfigReader config, load_config(options.path));
  SS_RETURN_IF_ERROR(keep_first_layers(options.num_layers, &config));
  SS_ASSIGN_OR_RETURN(std::string architecture, config_architecture(config));
  const Family* family = nullptr;
  for (const auto& f : kFamilies)
    if (architecture == f.architecture) family = &f;
  if (family == nullptr)
    return unimplemented(config.source() + ": architecture '" + architecture +
                         "' is not supported (supported: " + join(supported_architectures()) + ")");

  const std::string dir = fs::is_directory(options.path) ? options.path : fs::path(options.path).parent_path().string();
  std::shared_ptr<const Checkpoint> checkpoint;
  if (!options.dummy_weights) {
    SS_ASSIGN_OR_RETURN(auto opened, Checkpoint::open(dir.empty() ? "." : dir));
    checkpoint = std::move(opened);
  }
  BindOptions bind;
  bind.dtype = options.dtype;
  bind.dummy_weights = options.dummy_weights;
  // Generated in place on a GPU (SEEKSERVE_DUMMIES_ON_HOST=1: on the host and copied, as before).
  bind.dummies_on_device = options.dummy_weights && options.device != "cpu" && std::getenv("SEEKSERVE_DUMMIES_ON_HOST") == nullptr;
  SS_RETURN_IF_ERROR(read_quantization_config(config, &bind));
  WeightBinder binder(checkpoint, bind);
  if (options.device != "cpu") {
    const auto device = devices().find(options.device);
    if (device == devices().end())
      return unimplemented("--device " + options.device + " is not available in this build (supported: " +
                           join(available_devices()) + ")");
    return device->second(architecture, config, binder);
  }
  std::shared_ptr<Backend> backend = options.backend ? options.backend : std::shared_ptr<Backend>(make_cpu_backend());
  return family->factory(config, binder, std::move(backend));
}

std::map<std::string, DeviceModelFactory>& devices() {
  static std::map<std::string, DeviceModelFactory> registered;
  return registered;
}

void register_device(const std::string& device, DeviceModelFactory factory) { devices()[device] = factory; }

std::vector<std::string> available_devices() {
  std::vector<std::string> names{"cpu"};
  for (const auto& entry : devices()) names.push_back(entry.first);
  return names;
}

}  // namespace seekserve
