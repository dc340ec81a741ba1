// Declarative, shape-checked weight binding: a model asks for each tensor by name with the
// shape it expects; the binder finds it in the checkpoint (or generates it with
// --dummy-weights), converts it to the requested format and records the first error, naming
// the file, the tensor, what was expected and what was found.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loader/checkpoint.h"
#include "model/weight.h"

namespace seekserve {

struct BindOptions {
  ComputeDType dtype = ComputeDType::kF32;
  // Generate weights instead of reading them (checkpoint may then be null).
  bool dummy_weights = false;
  // For dummy weights: make the linear layers FP8 block-scaled, as the config's
  // quantization_config says the real checkpoint is.
  bool dummy_fp8 = false;
  int64_t fp8_block_rows = 128;
  int64_t fp8_block_cols = 128;
  // For dummy weights bound for a GPU: leave bf16 and FP8 matrices' elements to the device, which
  // generates the same values in place (Weight::dummy_on_device) instead of receiving them.
  bool dummies_on_device = false;
};

// Precision a tensor must have regardless of --dtype.
enum class Keep {
  kWorking,  // follow --dtype (and keep FP8 checkpoints as FP8 under bf16)
  kF32,      // always float32 (router weights: logits are computed in float32)
};

class WeightBinder {
 public:
  WeightBinder(std::shared_ptr<const Checkpoint> checkpoint, BindOptions options);

  // A [out, in] matrix stored as `<prefix>.weight` (+ `<prefix>.weight_scale_inv` when FP8).
  Weight linear(const std::string& prefix, int64_t out, int64_t in, Keep keep = Keep::kWorking);
  // An embedding table [rows, cols] stored as `name` (never FP8 in a checkpoint).
  Weight table(const std::string& name, int64_t rows, int64_t cols);
  // A float32 vector of length n stored as `name` (norm weights, biases, router bias).
  // Dummy weights fill it with `dummy_value`.
  std::vector<float> vector(const std::string& name, int64_t n, float dummy_value);
  // Whether the checkpoint holds `name` (always false for dummy weights).
  bool has(const std::string& name) const;

  const Status& status() const { return status_; }
  // Bytes of every weight bound so far, as held after conversion.
  int64_t bytes_bound() const { return bytes_bound_; }
  const BindOptions& options() const { return options_; }

 private:
  Weight bind_matrix(const std::string& name, int64_t rows, int64_t cols, bool allow_fp8, Keep keep);
  Weight dummy_matrix(const std::string& name, int64_t rows, int64_t cols, bool fp8, Keep keep);
  Weight dummy_i8_matrix(const std::string& name, int64_t rows, int64_t cols);
  void fail(Status status);

  std::shared_ptr<const Checkpoint> checkpoint_;
  BindOptions options_;
  Status status_;
  int64_t bytes_bound_ = 0;
};

}  // namespace seekserve
