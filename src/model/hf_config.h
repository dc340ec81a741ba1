// Reading Hugging Face config.json files: typed lookups that remember the first error, and the
// RoPE settings in both the hub's spelling (rope_scaling + rope_theta) and transformers 5's
// (rope_parameters).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"

namespace seekserve {

// Wraps a parsed config.json. Getters never throw: a missing or mistyped required key records
// an error (the first one wins) and returns a harmless default; callers check status() once.
class ConfigReader {
 public:
  ConfigReader(nlohmann::json root, std::string source) : root_(std::move(root)), source_(std::move(source)) {}

  int64_t require_int(const std::string& key);
  int64_t int_or(const std::string& key, int64_t fallback);
  // Present and not null.
  bool has(const std::string& key) const;
  double double_or(const std::string& key, double fallback);
  bool bool_or(const std::string& key, bool fallback);
  std::string string_or(const std::string& key, const std::string& fallback);
  // An int or a list of ints ("eos_token_id": 1 or [1, 2]).
  std::vector<int64_t> int_list(const std::string& key);

  const nlohmann::json& root() const { return root_; }
  const std::string& source() const { return source_; }
  void fail(const std::string& message);
  const Status& status() const { return status_; }

 private:
  nlohmann::json root_;
  std::string source_;
  Status status_;
};

// Loads config.json from a model folder or a path to the file itself.
Result<ConfigReader> load_config(const std::string& dir_or_file);
// architectures[0], or model_type mapped to its architecture when "architectures" is absent.
Result<std::string> config_architecture(const ConfigReader& config);

enum class RopeScaling { kNone, kLinear, kYarn, kLlama3 };

struct RopeConfig {
  double theta = 10000.0;                 // base of the geometric frequency ladder
  RopeScaling scaling = RopeScaling::kNone;
  double factor = 1.0;                    // context extension factor (linear, yarn, llama3)
  int64_t original_max_positions = 0;     // L: the context the model was pre-trained on
  // YaRN (DeepSeek): ramp bounds in rotations and the attention-magnitude terms.
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 0.0;                    // 0 = not given
  double mscale_all_dim = 0.0;            // 0 = not given
  std::optional<double> attention_factor; // explicit cos/sin multiplier, rarely given
  // Llama 3: wavelengths shorter than L/high_freq_factor keep their frequency, longer than
  // L/low_freq_factor are divided by factor, in between blend.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
};

// Reads rope_theta and rope_scaling / rope_parameters; refuses unknown rope types by name.
RopeConfig read_rope_config(ConfigReader& config);

// yarn_get_mscale: 0.1 * mscale * ln(factor) + 1 for factor > 1, else 1.
double yarn_mscale(double factor, double mscale);

}  // namespace seekserve
