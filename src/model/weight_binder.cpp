#include "model/weight_binder.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "core/dummy_values.h"
#include "core/parallel_for.h"

namespace seekserve {

namespace {

bool aligned_for(const void* p, int64_t size) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(size) == 0;
}

// Wraps checkpoint bytes (kept alive by `owner`) as a Weight, copying when misaligned.
Weight view_or_copy(const uint8_t* bytes, int64_t rows, int64_t cols, WeightFormat format,
                    int64_t element_size, std::shared_ptr<const void> owner) {
  Weight w;
  w.format = format;
  w.rows = rows;
  w.cols = cols;
  if (aligned_for(bytes, element_size)) {
    w.data = bytes;
    w.storage = std::move(owner);
  } else {
    auto copy = std::make_shared<std::vector<uint64_t>>(static_cast<size_t>((rows * cols * element_size + 7) / 8));
    std::memcpy(copy->data(), bytes, static_cast<size_t>(rows * cols * element_size));
    w.data = copy->data();
    w.storage = copy;
  }
  return w;
}

}  // namespace

WeightBinder::WeightBinder(std::shared_ptr<const Checkpoint> checkpoint, BindOptions options)
    : checkpoint_(std::move(checkpoint)), options_(options) {}

void WeightBinder::fail(Status status) {
  if (status_.ok()) status_ = std::move(status);
}

bool WeightBinder::has(const std::string& name) const {
  return checkpoint_ != nullptr && checkpoint_->find(name).entry != nullptr;
}

Weight WeightBinder::linear(const std::string& prefix, int64_t out, int64_t in, Keep keep) {
  Weight w = bind_matrix(prefix + ".weight", out, in, /*allow_fp8=*/true, keep);
  bytes_bound_ += w.empty() ? 0 : w.bytes();
  return w;
}

Weight WeightBinder::table(const std::string& name, int64_t rows, int64_t cols) {
  Weight w = bind_matrix(name, rows, cols, /*allow_fp8=*/false, Keep::kWorking);
  bytes_bound_ += w.empty() ? 0 : w.bytes();
  return w;
}

Weight WeightBinder::bind_matrix(const std::string& name, int64_t rows, int64_t cols, bool allow_fp8, Keep keep) {
  if (!status_.ok()) return {};
  if (options_.dummy_weights) {
    if (allow_fp8 && keep == Keep::kWorking && options_.dtype == ComputeDType::kInt8)  // int8 linear layers
      return dummy_i8_matrix(name, rows, cols);
    if (allow_fp8 && keep == Keep::kWorking && options_.dtype == ComputeDType::kFP8) {  // W8A8 linear layers
      // Random e4m3 codes with block scales directly, whatever the checkpoint's format: generating
      // floats to quantize them would hold 4 bytes a parameter on the host (63 GB for V2-Lite).
      Weight w = dummy_matrix(name, rows, cols, /*fp8=*/true, keep);
      w.fp8_activations = true;
      return w;
    }
    return dummy_matrix(name, rows, cols, allow_fp8 && options_.dummy_fp8, keep);
  }

  const TensorRef ref = checkpoint_->find(name);
  if (ref.entry == nullptr) {
    fail(not_found("checkpoint is missing tensor '" + name + "' (expected shape [" +
                   std::to_string(rows) + ", " + std::to_string(cols) + "])"));
    return {};
  }
  const TensorEntry& e = *ref.entry;
  const std::string where = ref.file->path() + ": tensor '" + name + "'";
  if (e.shape.size() != 2 || e.shape[0] != rows || e.shape[1] != cols) {
    fail(invalid_argument(where + ": expected shape [" + std::to_string(rows) + ", " +
                          std::to_string(cols) + "], found " + shape_to_string(e.shape)));
    return {};
  }
  auto owner = ref.file->mapping();
  Weight w;
  switch (e.dtype) {
    case DType::kF32: w = view_or_copy(ref.data(), rows, cols, WeightFormat::kF32, 4, owner); break;
    case DType::kBF16: w = view_or_copy(ref.data(), rows, cols, WeightFormat::kBF16, 2, owner); break;
    case DType::kF16: {
      std::vector<float> values(static_cast<size_t>(rows * cols));
      for (size_t i = 0; i < values.size(); ++i) {
        uint16_t bits;
        std::memcpy(&bits, ref.data() + 2 * i, 2);
        values[i] = f16_to_f32(bits);
      }
      w = weight_from_f32(std::move(values), rows, cols);
      break;
    }
    case DType::kF8E4M3: {
      const std::string scale_name = name + "_scale_inv";
      const TensorRef sref = checkpoint_->find(scale_name);
      const int64_t br = options_.fp8_block_rows, bc = options_.fp8_block_cols;
      const int64_t srows = (rows + br - 1) / br, scols = (cols + bc - 1) / bc;
      if (!allow_fp8) {
        fail(unimplemented(where + ": F8_E4M3 is not supported for this tensor"));
        return {};
      }
      if (sref.entry == nullptr) {
        fail(not_found(where + ": F8_E4M3 weight without its block scales '" + scale_name + "'"));
        return {};
      }
      if (sref.entry->dtype != DType::kF32 || sref.entry->shape.size() != 2 ||
          sref.entry->shape[0] != srows || sref.entry->shape[1] != scols) {
        fail(invalid_argument(sref.file->path() + ": tensor '" + scale_name + "': expected F32 [" +
                              std::to_string(srows) + ", " + std::to_string(scols) + "], found " +
                              std::string(dtype_name(sref.entry->dtype)) + " " +
                              shape_to_string(sref.entry->shape)));
        return {};
      }
      w = view_or_copy(ref.data(), rows, cols, WeightFormat::kF8Block, 1, owner);
      Weight scales = view_or_copy(sref.data(), srows, scols, WeightFormat::kF32, 4, sref.file->mapping());
      w.scale_inv = static_cast<const float*>(scales.data);
      w.block_rows = br;
      w.block_cols = bc;
      // Both views must outlive the weight: hold the scales' owner next to the data's.
      w.storage = std::make_shared<std::pair<std::shared_ptr<const void>, std::shared_ptr<const void>>>(
          w.storage, scales.storage);
      break;
    }
    default:
      fail(invalid_argument(where + ": dtype " + std::string(dtype_name(e.dtype)) +
                            " is not a weight dtype (expected F32, BF16, F16 or F8_E4M3)"));
      return {};
  }
  if (keep == Keep::kF32 || options_.dtype == ComputeDType::kF32) return weight_to_f32(w);
  if (options_.dtype == ComputeDType::kInt8 && allow_fp8) return weight_to_i8(w);  // linear layers only
  if (options_.dtype == ComputeDType::kFP8 && allow_fp8 && keep == Keep::kWorking) {  // linear layers only
    Weight f = weight_to_fp8_block(w, options_.fp8_block_rows, options_.fp8_block_cols);
    f.fp8_activations = true;
    return f;
  }
  if (w.format == WeightFormat::kF8Block) return w;  // bf16 compute keeps FP8 checkpoints native
  return weight_to_bf16(w);
}

Weight WeightBinder::dummy_matrix(const std::string& name, int64_t rows, int64_t cols, bool fp8, Keep keep) {
  const uint64_t seed = dummy::name_seed(name);
  const float amplitude = dummy::amplitude(cols);
  const size_t n = static_cast<size_t>(rows * cols);
  // FP8 elements go to the device only as W8A8 weights (--dtype fp8); under bf16 the uploader
  // converts them on the host.
  const bool on_device = options_.dummies_on_device && keep == Keep::kWorking && (!fp8 || options_.dtype == ComputeDType::kFP8);
  // Host arrays are made without zeroing: each generating thread is first to touch its pages, so
  // the kernel's page clearing runs on every thread, not on this one before them.
  if (fp8 && keep == Keep::kWorking && (options_.dtype == ComputeDType::kBF16 || options_.dtype == ComputeDType::kFP8)) {
    const int64_t br = options_.fp8_block_rows, bc = options_.fp8_block_cols;
    const int64_t srows = (rows + br - 1) / br, scols = (cols + bc - 1) / bc;
    auto scales = std::make_shared<std::vector<float>>(static_cast<size_t>(srows * scols), dummy::fp8_block_scale(amplitude));
    auto bytes = on_device ? std::shared_ptr<uint8_t[]>() : std::make_shared_for_overwrite<uint8_t[]>(n);
    if (!on_device) parallel_for_index(n, [&](size_t i) { bytes[i] = dummy::fp8_element(seed, i); });
    Weight w = owned_quantized_weight(WeightFormat::kF8Block, rows, cols, bytes, scales, br, bc);
    w.dummy_on_device = on_device;
    w.dummy_seed = seed;
    return w;
  }
  if (keep == Keep::kF32 || options_.dtype == ComputeDType::kF32) {
    std::vector<float> values(n);
    parallel_for_index(n, [&](size_t i) { values[i] = dummy::unit_uniform(seed, i) * amplitude; });
    return weight_from_f32(std::move(values), rows, cols);
  }
  Weight w;
  w.format = WeightFormat::kBF16;
  w.rows = rows;
  w.cols = cols;
  if (on_device) {
    w.dummy_on_device = true;
    w.dummy_seed = seed;
    w.dummy_amplitude = amplitude;
    return w;
  }
  auto bits = std::make_shared_for_overwrite<uint16_t[]>(n);
  parallel_for_index(n, [&](size_t i) { bits[i] = dummy::bf16_element(seed, i, amplitude); });
  w.data = bits.get();
  w.storage = bits;
  return w;
}

Weight WeightBinder::dummy_i8_matrix(const std::string& name, int64_t rows, int64_t cols) {
  const uint64_t seed = dummy::name_seed(name);
  const size_t n = static_cast<size_t>(rows * cols);
  auto codes = std::make_shared_for_overwrite<int8_t[]>(n);
  parallel_for_index(n, [&](size_t i) { codes[i] = dummy::i8_element(seed, i); });
  auto scales = std::make_shared<std::vector<float>>(static_cast<size_t>(rows), dummy::i8_row_scale(dummy::amplitude(cols)));
  return owned_quantized_weight(WeightFormat::kI8Row, rows, cols, codes, scales);
}

std::vector<float> WeightBinder::vector(const std::string& name, int64_t n, float dummy_value) {
  bytes_bound_ += 4 * n;
  if (!status_.ok()) return std::vector<float>(static_cast<size_t>(n), dummy_value);
  if (options_.dummy_weights) return std::vector<float>(static_cast<size_t>(n), dummy_value);
  const TensorRef ref = checkpoint_->find(name);
  if (ref.entry == nullptr) {
    fail(not_found("checkpoint is missing tensor '" + name + "' (expected shape [" + std::to_string(n) + "])"));
    return {};
  }
  const TensorEntry& e = *ref.entry;
  const std::string where = ref.file->path() + ": tensor '" + name + "'";
  if (e.shape.size() != 1 || e.shape[0] != n) {
    fail(invalid_argument(where + ": expected shape [" + std::to_string(n) + "], found " + shape_to_string(e.shape)));
    return {};
  }
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t* p = ref.data();
  for (size_t i = 0; i < out.size(); ++i) {
    switch (e.dtype) {
      case DType::kF32: std::memcpy(&out[i], p + 4 * i, 4); break;
      case DType::kBF16: {
        uint16_t b;
        std::memcpy(&b, p + 2 * i, 2);
        out[i] = bf16_to_f32(b);
        break;
      }
      case DType::kF16: {
        uint16_t b;
        std::memcpy(&b, p + 2 * i, 2);
        out[i] = f16_to_f32(b);
        break;
      }
      default:
        fail(invalid_argument(where + ": dtype " + std::string(dtype_name(e.dtype)) +
                              " is not supported here (expected F32, BF16 or F16)"));
        return {};
    }
  }
  return out;
}

}  // namespace seekserve
