// Weights as the backends see them: a row-major [rows, cols] matrix in one storage format.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace seekserve {

// How a Weight's elements are stored.
enum class WeightFormat {
  kF32,
  kBF16,
  // F8_E4M3 elements with one float32 "scale_inv" per block_rows x block_cols block (DeepSeek-V3's
  // checkpoint format): real value = fp8(w[r][c]) * scale_inv[r / block_rows][c / block_cols].
  kF8Block,
  // Symmetric int8 with one float32 scale per output row (scale_inv[r]): w = q * scale_inv[r].
  // Quantized at load (--dtype int8); activations are quantized per token on the fly.
  kI8Row,
};

const char* weight_format_name(WeightFormat format);

// What `--dtype` asks for: the precision weights are held in and matmuls are computed in.
enum class ComputeDType {
  kF32,   // reference: every weight converted to float32, float32 activations
  kBF16,  // bf16 weights (FP8 checkpoints stay FP8), activations rounded to bf16 at matmul inputs
  kInt8,  // linear layers quantized at load to int8 per output channel; embeddings stay bf16
  // W8A8 FP8 as DeepSeek's own inference: linear layers in e4m3 with 128x128 block scales (FP8
  // checkpoints as they are, others quantized at load), activations quantized per token per 128
  // channels to e4m3 at the matmul input; embeddings and the router stay as in bf16.
  kFP8,
};

struct Weight {
  WeightFormat format = WeightFormat::kF32;
  int64_t rows = 0;  // out_features
  int64_t cols = 0;  // in_features
  const void* data = nullptr;          // [rows, cols], element type per format
  const float* scale_inv = nullptr;    // kF8Block only: [ceil(rows/block_rows), ceil(cols/block_cols)]
  int64_t block_rows = 128;
  int64_t block_cols = 128;
  std::shared_ptr<const void> storage;  // owns `data` / `scale_inv` (a buffer or the mapped file)
  // kF8Block under --dtype fp8: the input is quantized per token per block_cols channels to e4m3
  // (quantize_fp8_groups) before the product, as well as the weight (W8A8).
  bool fp8_activations = false;
  // --dummy-weights bound for a device that generates them in place (BindOptions::
  // dummies_on_device): no host elements (data is null), only their source — element i is
  // dummy::bf16_element(dummy_seed, i, dummy_amplitude) for kBF16, dummy::fp8_element(dummy_seed,
  // i) for kF8Block (whose scales are on the host as usual). row_to_f32 computes them.
  bool dummy_on_device = false;
  uint64_t dummy_seed = 0;
  float dummy_amplitude = 0.0f;

  bool empty() const { return data == nullptr && !dummy_on_device; }
  int64_t scale_cols() const { return (cols + block_cols - 1) / block_cols; }
  // Bytes a matmul streams from memory for this weight (elements plus scales).
  int64_t bytes() const;
  // Dequantizes row r into out[0, cols).
  void row_to_f32(int64_t r, float* out) const;
};

// Owned int8 copy with per-row scales (max |w| / 127), from any format.
Weight weight_to_i8(const Weight& w);
// The first element of a weight buffer: a vector, or an array made without initialization.
template <typename Element>
const Element* buffer_data(const std::shared_ptr<std::vector<Element>>& b) { return b->data(); }
template <typename Element>
const Element* buffer_data(const std::shared_ptr<Element[]>& b) { return b.get(); }

// A weight owning its quantized elements and their scales (kI8Row: one per row; kF8Block: one
// per block_rows x block_cols block). Elements: shared_ptr to a vector or an array.
template <typename Elements>
Weight owned_quantized_weight(WeightFormat format, int64_t rows, int64_t cols, Elements elements,
                              std::shared_ptr<std::vector<float>> scales, int64_t block_rows = 128, int64_t block_cols = 128) {
  Weight out;
  out.format = format;
  out.rows = rows;
  out.cols = cols;
  out.data = buffer_data(elements);
  out.scale_inv = scales->data();
  out.block_rows = block_rows;
  out.block_cols = block_cols;
  out.storage = std::make_shared<std::pair<std::shared_ptr<const void>, std::shared_ptr<const void>>>(std::move(elements), std::move(scales));
  return out;
}
// e4m3 with block scales (scale_inv = amax / 448 of each block_rows x block_cols block), from
// any format; FP8-block weights are returned as they are.
Weight weight_to_fp8_block(const Weight& w, int64_t block_rows = 128, int64_t block_cols = 128);
// In place, per group of `group` consecutive values (the last may be shorter): x = e4m3(x / s) * s
// with s = amax / 448 — DeepSeek's dynamic activation quantization. All-zero groups stay zero.
void quantize_fp8_groups(float* x, int64_t n, int64_t group);
// Owned float32 copy of a weight in another format, same shape.
Weight weight_to_f32(const Weight& w);
// Owned bf16 copy (from F32 or F8Block; BF16 is returned as is).
Weight weight_to_bf16(const Weight& w);
// Wraps owned float32 data of shape [rows, cols].
Weight weight_from_f32(std::vector<float> values, int64_t rows, int64_t cols);

}  // namespace seekserve
