#include "model/weight.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "core/dummy_values.h"
#include "core/parallel_for.h"
#include "core/status.h"

namespace seekserve {

const char* weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kF32: return "f32";
    case WeightFormat::kBF16: return "bf16";
    case WeightFormat::kF8Block: return "fp8-block";
    case WeightFormat::kI8Row: return "int8-row";
  }
  return "?";
}

int64_t Weight::bytes() const {
  switch (format) {
    case WeightFormat::kF32: return rows * cols * 4;
    case WeightFormat::kBF16: return rows * cols * 2;
    case WeightFormat::kF8Block:
      return rows * cols + ((rows + block_rows - 1) / block_rows) * scale_cols() * 4;
    case WeightFormat::kI8Row: return rows * cols + rows * 4;
  }
  return 0;
}

void Weight::row_to_f32(int64_t r, float* out) const {
  SS_CHECK(r >= 0 && r < rows, "row out of range");
  if (dummy_on_device) {
    SS_CHECK(format == WeightFormat::kBF16 || format == WeightFormat::kF8Block, "dummy weights on the device are bf16 or FP8");
    const auto first = static_cast<uint64_t>(r * cols);
    if (format == WeightFormat::kBF16) {
      for (int64_t c = 0; c < cols; ++c) out[c] = bf16_to_f32(dummy::bf16_element(dummy_seed, first + static_cast<uint64_t>(c), dummy_amplitude));
    } else {
      const float* scales = scale_inv + (r / block_rows) * scale_cols();
      for (int64_t c = 0; c < cols; ++c)
        out[c] = fp8_e4m3_to_f32(dummy::fp8_element(dummy_seed, first + static_cast<uint64_t>(c))) * scales[c / block_cols];
    }
    return;
  }
  switch (format) {
    case WeightFormat::kF32: {
      const float* src = static_cast<const float*>(data) + r * cols;
      for (int64_t c = 0; c < cols; ++c) out[c] = src[c];
      break;
    }
    case WeightFormat::kBF16: {
      const uint16_t* src = static_cast<const uint16_t*>(data) + r * cols;
      for (int64_t c = 0; c < cols; ++c) out[c] = bf16_to_f32(src[c]);
      break;
    }
    case WeightFormat::kF8Block: {
      const uint8_t* src = static_cast<const uint8_t*>(data) + r * cols;
      const float* scales = scale_inv + (r / block_rows) * scale_cols();
      for (int64_t c = 0; c < cols; ++c) out[c] = fp8_e4m3_to_f32(src[c]) * scales[c / block_cols];
      break;
    }
    case WeightFormat::kI8Row: {
      const int8_t* src = static_cast<const int8_t*>(data) + r * cols;
      for (int64_t c = 0; c < cols; ++c) out[c] = static_cast<float>(src[c]) * scale_inv[r];
      break;
    }
  }
}

Weight weight_from_f32(std::vector<float> values, int64_t rows, int64_t cols) {
  SS_CHECK(static_cast<int64_t>(values.size()) == rows * cols, "size mismatch");
  auto owned = std::make_shared<std::vector<float>>(std::move(values));
  Weight w;
  w.format = WeightFormat::kF32;
  w.rows = rows;
  w.cols = cols;
  w.data = owned->data();
  w.storage = owned;
  return w;
}

Weight weight_to_f32(const Weight& w) {
  if (w.format == WeightFormat::kF32) return w;
  std::vector<float> values(static_cast<size_t>(w.rows * w.cols));
  for (int64_t r = 0; r < w.rows; ++r) w.row_to_f32(r, values.data() + r * w.cols);
  return weight_from_f32(std::move(values), w.rows, w.cols);
}

// x rounded half away from zero (std::lround's rule), exact for |x| < 2^31 and branch-light
// enough to vectorize: the truncation is exact, so is x - trunc(x).
static inline int32_t round_half_away(float x) {
  int32_t i = static_cast<int32_t>(x);
  const float fraction = x - static_cast<float>(i);
  i += (fraction >= 0.5f) - (fraction <= -0.5f);
  return i;
}

Weight weight_to_i8(const Weight& w) {
  if (w.format == WeightFormat::kI8Row) return w;
  auto q = std::make_shared<std::vector<int8_t>>(static_cast<size_t>(w.rows * w.cols));
  auto scales = std::make_shared<std::vector<float>>(static_cast<size_t>(w.rows));
  // Rows over the hardware threads: a real model quantized at load is billions of elements.
  parallel_for_index(static_cast<size_t>(w.rows), [&](size_t r) {
    thread_local std::vector<float> row;
    row.resize(static_cast<size_t>(w.cols));
    w.row_to_f32(static_cast<int64_t>(r), row.data());
    float amax = 0.0f;
    for (float v : row) amax = std::max(amax, std::fabs(v));
    const float scale = amax > 0.0f ? amax / 127.0f : 1.0f;
    (*scales)[r] = scale;
    int8_t* dst = q->data() + static_cast<int64_t>(r) * w.cols;
    for (int64_t c = 0; c < w.cols; ++c) dst[c] = static_cast<int8_t>(std::clamp(round_half_away(row[static_cast<size_t>(c)] / scale), -127, 127));
  }, std::max<size_t>(1, (size_t{1} << 20) / static_cast<size_t>(std::max<int64_t>(w.cols, 1))));
  return owned_quantized_weight(WeightFormat::kI8Row, w.rows, w.cols, q, scales);
}

Weight weight_to_fp8_block(const Weight& w, int64_t block_rows, int64_t block_cols) {
  if (w.format == WeightFormat::kF8Block) return w;
  const Weight f = weight_to_f32(w);
  const float* v = static_cast<const float*>(f.data);
  const int64_t srows = (w.rows + block_rows - 1) / block_rows, scols = (w.cols + block_cols - 1) / block_cols;
  auto q = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(w.rows * w.cols));
  auto scales = std::make_shared<std::vector<float>>(static_cast<size_t>(srows * scols));
  // Block rows over the hardware threads: quantizing a model's bf16 experts at load (--dtype fp8)
  // is billions of elements.
  parallel_for_index(static_cast<size_t>(srows), [&](size_t block_row) {
    const auto br = static_cast<int64_t>(block_row);
    for (int64_t bc = 0; bc < scols; ++bc) {
      const int64_t r1 = std::min(w.rows, (br + 1) * block_rows), c1 = std::min(w.cols, (bc + 1) * block_cols);
      float amax = 0.0f;
      for (int64_t r = br * block_rows; r < r1; ++r)
        for (int64_t c = bc * block_cols; c < c1; ++c) amax = std::max(amax, std::fabs(v[r * w.cols + c]));
      const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
      (*scales)[static_cast<size_t>(br * scols + bc)] = scale;
      for (int64_t r = br * block_rows; r < r1; ++r)
        for (int64_t c = bc * block_cols; c < c1; ++c) (*q)[static_cast<size_t>(r * w.cols + c)] = f32_to_fp8_e4m3(v[r * w.cols + c] / scale);
    }
  });
  return owned_quantized_weight(WeightFormat::kF8Block, w.rows, w.cols, q, scales, block_rows, block_cols);
}

void quantize_fp8_groups(float* x, int64_t n, int64_t group) {
  for (int64_t g0 = 0; g0 < n; g0 += group) {
    const int64_t g1 = std::min(n, g0 + group);
    float amax = 0.0f;
    for (int64_t i = g0; i < g1; ++i) amax = std::max(amax, std::fabs(x[i]));
    if (amax == 0.0f) continue;
    const float scale = amax / 448.0f;
    for (int64_t i = g0; i < g1; ++i) x[i] = fp8_e4m3_to_f32(f32_to_fp8_e4m3(x[i] / scale)) * scale;
  }
}

Weight weight_to_bf16(const Weight& w) {
  if (w.format == WeightFormat::kBF16) return w;
  auto owned = std::make_shared<std::vector<uint16_t>>(static_cast<size_t>(w.rows * w.cols));
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    w.row_to_f32(r, row.data());
    for (int64_t c = 0; c < w.cols; ++c) (*owned)[static_cast<size_t>(r * w.cols + c)] = f32_to_bf16(row[static_cast<size_t>(c)]);
  }
  Weight out;
  out.format = WeightFormat::kBF16;
  out.rows = w.rows;
  out.cols = w.cols;
  out.data = owned->data();
  out.storage = owned;
  return out;
}

}  // namespace seekserve
