#include "model/hf_config.h"

#include <cmath>
#include <filesystem>

#include "core/mapped_file.h"

namespace seekserve {

using nlohmann::json;

void ConfigReader::fail(const std::string& message) {
  if (status_.ok()) status_ = invalid_argument(source_ + ": " + message);
}

bool ConfigReader::has(const std::string& key) const {
  auto it = root_.find(key);
  return it != root_.end() && !it->is_null();
}

int64_t ConfigReader::require_int(const std::string& key) {
  auto it = root_.find(key);
  if (it == root_.end() || it->is_null()) {
    fail("missing required key \"" + key + "\"");
    return 0;
  }
  if (!it->is_number_integer()) {
    fail("\"" + key + "\" must be an integer");
    return 0;
  }
  return it->get<int64_t>();
}

int64_t ConfigReader::int_or(const std::string& key, int64_t fallback) {
  if (!has(key)) return fallback;
  return require_int(key);
}

double ConfigReader::double_or(const std::string& key, double fallback) {
  if (!has(key)) return fallback;
  const json& v = root_[key];
  if (!v.is_number()) {
    fail("\"" + key + "\" must be a number");
    return fallback;
  }
  return v.get<double>();
}

bool ConfigReader::bool_or(const std::string& key, bool fallback) {
  if (!has(key)) return fallback;
  const json& v = root_[key];
  if (!v.is_boolean()) {
    fail("\"" + key + "\" must be true or false");
    return fallback;
  }
  return v.get<bool>();
}

std::string ConfigReader::string_or(const std::string& key, const std::string& fallback) {
  if (!has(key)) return fallback;
  const json& v = root_[key];
  if (!v.is_string()) {
    fail("\"" + key + "\" must be a string");
    return fallback;
  }
  return v.get<std::string>();
}

std::vector<int64_t> ConfigReader::int_list(const std::string& key) {
  std::vector<int64_t> out;
  if (!has(key)) return out;
  const json& v = root_[key];
  if (v.is_number_integer()) {
    out.push_back(v.get<int64_t>());
  } else if (v.is_array()) {
    for (const auto& e : v) {
      if (!e.is_number_integer()) {
        fail("\"" + key + "\" must hold integers");
        return {};
      }
      out.push_back(e.get<int64_t>());
    }
  } else {
    fail("\"" + key + "\" must be an integer or a list of integers");
  }
  return out;
}

Result<ConfigReader> load_config(const std::string& dir_or_file) {
  namespace fs = std::filesystem;
  std::string path = dir_or_file;
  if (fs::is_directory(path)) path = (fs::path(path) / "config.json").string();
  SS_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return invalid_argument(path + ": not valid JSON");
  if (!root.is_object()) return invalid_argument(path + ": not a JSON object");
  return ConfigReader(std::move(root), path);
}

Result<std::string> config_architecture(const ConfigReader& config) {
  const json& root = config.root();
  auto it = root.find("architectures");
  if (it != root.end() && it->is_array() && !it->empty() && (*it)[0].is_string())
    return (*it)[0].get<std::string>();
  static const std::pair<const char*, const char*> kByModelType[] = {
      {"deepseek_v3", "DeepseekV3ForCausalLM"}, {"deepseek_v2", "DeepseekV2ForCausalLM"},
      {"qwen2", "Qwen2ForCausalLM"},            {"llama", "LlamaForCausalLM"}};
  auto mt = root.find("model_type");
  if (mt != root.end() && mt->is_string())
    for (const auto& [type, arch] : kByModelType)
      if (*mt == type) return std::string(arch);
  return invalid_argument(config.source() + ": no \"architectures\" list and no known \"model_type\"");
}

double yarn_mscale(double factor, double mscale) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

RopeConfig read_rope_config(ConfigReader& config) {
  RopeConfig rope;
  const json& root = config.root();
  // transformers 5 keeps theta and scaling together in rope_parameters; the hub splits them.
  const json* params = nullptr;
  if (config.has("rope_parameters")) params = &root["rope_parameters"];
  else if (config.has("rope_scaling")) params = &root["rope_scaling"];
  rope.theta = config.double_or("rope_theta", 10000.0);
  if (params == nullptr) return rope;
  if (!params->is_object()) {
    config.fail("rope_scaling / rope_parameters must be an object");
    return rope;
  }
  ConfigReader p(*params, config.source() + " (rope parameters)");
  rope.theta = p.double_or("rope_theta", rope.theta);
  std::string type = p.string_or("rope_type", p.string_or("type", "default"));
  rope.factor = p.double_or("factor", 1.0);
  rope.original_max_positions =
      p.int_or("original_max_position_embeddings", config.int_or("max_position_embeddings", 0));
  if (type == "default") {
    rope.scaling = RopeScaling::kNone;
  } else if (type == "linear") {
    rope.scaling = RopeScaling::kLinear;
  } else if (type == "yarn") {
    rope.scaling = RopeScaling::kYarn;
    rope.beta_fast = p.double_or("beta_fast", 32.0);
    rope.beta_slow = p.double_or("beta_slow", 1.0);
    rope.mscale = p.double_or("mscale", 0.0);
    rope.mscale_all_dim = p.double_or("mscale_all_dim", 0.0);
    if (p.has("attention_factor")) rope.attention_factor = p.double_or("attention_factor", 1.0);
  } else if (type == "llama3") {
    rope.scaling = RopeScaling::kLlama3;
    rope.low_freq_factor = p.double_or("low_freq_factor", 1.0);
    rope.high_freq_factor = p.double_or("high_freq_factor", 4.0);
  } else {
    config.fail("unsupported rope type \"" + type + "\" (supported: default, linear, yarn, llama3)");
  }
  if (!p.status().ok()) config.fail(p.status().message());
  if (rope.scaling != RopeScaling::kNone && rope.factor <= 0.0) config.fail("rope factor must be > 0");
  if (rope.scaling == RopeScaling::kLlama3 && rope.high_freq_factor <= rope.low_freq_factor)
    config.fail("llama3 rope needs high_freq_factor > low_freq_factor");
  return rope;
}

}  // namespace seekserve
