// Helpers shared by the test binaries: fixture paths and golden-file access.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "loader/safetensors.h"
#include "models/causal_lm.h"

namespace seekserve::testing {

// The repository root: set by CMake, overridden by the SEEKSERVE_SOURCE_DIR environment variable
// (test binaries carried to another machine, e.g. the GPU tests).
inline std::string source_dir() {
  const char* moved = std::getenv("SEEKSERVE_SOURCE_DIR");
  return moved && *moved ? moved : SEEKSERVE_SOURCE_DIR;
}
inline std::string fixtures_dir() { return source_dir() + "/tests/fixtures"; }
// ../shared beside the checkout, when present (developers and CI have it; users may not).
inline std::string shared_dir() { return source_dir() + "/../shared"; }
// Unpacked real tokenizers (build tree): <dir>/deepseek_v3, <dir>/qwen3.
inline std::string tokenizers_dir() { return SEEKSERVE_TOKENIZERS_DIR; }
inline bool have_shared() { return std::filesystem::exists(shared_dir() + "/fixtures/models"); }

// Folder of a fixture model: models/ for the bundled one, tests/fixtures/models otherwise,
// ../shared for the large tiny-qwen2. Empty when absent.
std::string model_dir(const std::string& name);

// Folder holding tokenizer.json for a golden tokenizer name: "tiny" (the bundled model),
// "deepseek_v3" or "qwen3" (unpacked into the build tree).
inline std::string tokenizer_dir(const std::string& name) {
  if (name == "tiny") return source_dir() + "/models/tiny-deepseek-v3";
  return tokenizers_dir() + "/" + name;
}

// A golden_<model>.safetensors file: typed access by tensor name.
class Golden {
 public:
  explicit Golden(const std::string& model);
  bool ok() const { return file_ != nullptr; }
  bool has(const std::string& name) const { return file_->find(name) != nullptr; }
  std::vector<int32_t> ints(const std::string& name) const;
  std::vector<float> floats(const std::string& name) const;
  std::vector<int64_t> shape(const std::string& name) const;
  // Prompt names p0, p1, ... present in the file.
  std::vector<std::string> prompts() const;

 private:
  std::shared_ptr<SafetensorsFile> file_;
};

// A tensor to write into a test checkpoint.
struct RawTensor {
  std::string name;
  std::string dtype;  // safetensors spelling
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

// All tensors of a checkpoint folder, bytes copied out (for building broken variants).
std::vector<RawTensor> read_all_tensors(const std::string& model_dir);
// Writes a safetensors file, offsets packed in the given order.
void write_safetensors(const std::string& path, const std::vector<RawTensor>& tensors);
// A fresh empty folder under the system temp dir.
std::string make_temp_dir(const std::string& tag);

// ||a - b|| / ||b||.
double relative_l2(const float* a, const float* b, size_t n);

// Top-1 minus top-2 value.
float top2_margin(const float* logits, int64_t n);

// Expert choices of one forward pass: per (layer, token), the sorted ids and the routing margin.
struct RoutingRecord {
  std::map<std::pair<int64_t, int64_t>, std::pair<std::vector<int32_t>, float>> choices;
  RoutingObserver observer() {
    return [this](int64_t layer, int64_t n_tokens, int64_t top_k, const int32_t* ids, const float* margins) {
      for (int64_t t = 0; t < n_tokens; ++t) {
        std::vector<int32_t> set(ids + t * top_k, ids + (t + 1) * top_k);
        std::sort(set.begin(), set.end());
        choices[{layer, t}] = {set, margins[t]};
      }
    };
  }
};

// Largest routing margin at which bf16 rounding of the activations may flip an expert choice.
// Router scores live in [0, 1] (sigmoid or softmax); bf16 keeps ~3 significant digits.
constexpr float kRoutingNearTie = 0.05f;

// The first token whose experts `got` chose differently from the float32 reference `ref` in
// any layer (-1: none). A lower precision may flip a near-tie, after which that token and the
// later ones (through attention) legitimately diverge; the tokens before it are unaffected.
// Every flip of the first layer that has one must be a near-tie of the reference (checked here;
// later layers see its consequences and are not).
int64_t first_routing_flip(const RoutingRecord& ref, const RoutingRecord& got);

// Routed-expert arguments: x [n_tokens, hidden], ids and weights [n_tokens, top_k], out
// [n_tokens, hidden] accumulated into.
inline MoeArgs moe_args(const std::vector<float>& x, int64_t n_tokens, int64_t hidden, int64_t top_k, const std::vector<int32_t>& ids,
                        const std::vector<float>& weights, std::span<const MlpWeights> experts, float* out) {
  MoeArgs args;
  args.x = x.data();
  args.n_tokens = n_tokens;
  args.hidden = hidden;
  args.top_k = top_k;
  args.expert_ids = ids.data();
  args.expert_weights = weights.data();
  args.experts = experts;
  args.out = out;
  return args;
}

}  // namespace seekserve::testing
