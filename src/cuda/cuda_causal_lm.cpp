#include "cuda/cuda_causal_lm.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/dtype.h"
#include "cuda/dummy_weights.h"

namespace seekserve::cuda {

namespace {

bool is_w8a8(const Weight& w) {
  return w.format == WeightFormat::kF8Block && w.fp8_activations && w.block_rows == kFp8Group && w.block_cols == kFp8Group;
}

// Each part's elements as they are; its block scales copied into rows of scale_ld (the GEMM's
// padded leading dimension), every part starting on a fresh block row.
Status upload_fp8_matrix(const std::vector<const Weight*>& parts, DeviceMatrix* out) {
  const int64_t K = out->cols;  // a multiple of kFp8Group (upload_matrix)
  out->scale_ld = LtGemm::fp8_weight_scale_ld(K);
  int64_t block_rows = 0;
  for (const Weight* w : parts) {
    out->parts.push_back({out->rows, w->rows, block_rows});
    out->rows += w->rows;
    block_rows += (w->rows + kFp8Group - 1) / kFp8Group;
  }
  std::vector<float> scales(static_cast<size_t>(block_rows * out->scale_ld), 0.0f);
  std::vector<int32_t> scale_row(static_cast<size_t>(out->rows));
  SS_RETURN_IF_ERROR(out->fp8.reserve(static_cast<size_t>(out->rows * K)));
  for (size_t i = 0; i < parts.size(); ++i) {
    const Weight& w = *parts[i];
    const DeviceMatrix::Part& part = out->parts[i];
    uint8_t* dst = out->fp8.data() + part.row0 * K;
    if (w.dummy_on_device) fill_dummy_fp8(dst, w.rows * K, w.dummy_seed, nullptr);
    else SS_CUDA_CHECK(cudaMemcpy(dst, w.data, static_cast<size_t>(w.rows * K), cudaMemcpyHostToDevice));
    const int64_t grid_rows = (w.rows + kFp8Group - 1) / kFp8Group, grid_cols = w.scale_cols();
    for (int64_t r = 0; r < grid_rows; ++r)
      for (int64_t c = 0; c < grid_cols; ++c)
        scales[static_cast<size_t>((part.block_row0 + r) * out->scale_ld + c)] = w.scale_inv[r * grid_cols + c];
    for (int64_t r = 0; r < w.rows; ++r) scale_row[static_cast<size_t>(part.row0 + r)] = static_cast<int32_t>(part.block_row0 + r / kFp8Group);
  }
  SS_RETURN_IF_ERROR(out->scales.reserve(scales.size()));
  SS_CUDA_CHECK(cudaMemcpy(out->scales.data(), scales.data(), scales.size() * 4, cudaMemcpyHostToDevice));
  SS_RETURN_IF_ERROR(out->scale_row.reserve(scale_row.size()));
  SS_CUDA_CHECK(cudaMemcpy(out->scale_row.data(), scale_row.data(), scale_row.size() * 4, cudaMemcpyHostToDevice));
  SS_CUDA_CHECK(cudaStreamSynchronize(nullptr));  // generated elements are ready before any model stream reads them
  return Status::Ok();
}

}  // namespace

Status upload_matrix(const std::vector<const Weight*>& parts, DeviceMatrix* out) {
  out->cols = parts[0]->cols;
  // W8A8 matrices whose input width is not a multiple of 128 (DeepSeek-V2-Lite's dense MLP down,
  // 10,944 wide) have no whole activation groups: they run in bf16, dequantized here.
  if (out->cols % kFp8Group == 0 && std::all_of(parts.begin(), parts.end(), [](const Weight* w) { return is_w8a8(*w); })) {
    out->rows = 0;
    return upload_fp8_matrix(parts, out);
  }
  out->rows = 0;
  for (const Weight* w : parts) out->rows += w->rows;
  SS_RETURN_IF_ERROR(out->data.reserve(static_cast<size_t>(out->rows * out->cols)));
  int64_t row0 = 0;
  std::vector<uint16_t> staging;
  std::vector<float> row;
  for (const Weight* w : parts) {
    bf16* dst = out->data.data() + row0 * out->cols;
    if (w->dummy_on_device && w->format == WeightFormat::kBF16) {
      fill_dummy_bf16(dst, w->rows * w->cols, w->dummy_seed, w->dummy_amplitude, nullptr);
    } else if (w->format == WeightFormat::kBF16) {
      SS_CUDA_CHECK(cudaMemcpy(dst, w->data, static_cast<size_t>(w->rows * w->cols) * 2, cudaMemcpyHostToDevice));
    } else {
      staging.resize(static_cast<size_t>(w->rows * w->cols));
      row.resize(static_cast<size_t>(w->cols));
      for (int64_t r = 0; r < w->rows; ++r) {
        w->row_to_f32(r, row.data());
        for (int64_t c = 0; c < w->cols; ++c) staging[static_cast<size_t>(r * w->cols + c)] = f32_to_bf16(row[static_cast<size_t>(c)]);
      }
      SS_CUDA_CHECK(cudaMemcpy(dst, staging.data(), staging.size() * 2, cudaMemcpyHostToDevice));
    }
    row0 += w->rows;
  }
  SS_CUDA_CHECK(cudaStreamSynchronize(nullptr));  // generated elements are ready before any model stream reads them
  return Status::Ok();
}

Status upload_floats(const std::vector<const std::vector<float>*>& parts, DeviceBuffer<float>* out) {
  std::vector<float> all;
  for (const auto* p : parts) all.insert(all.end(), p->begin(), p->end());
  if (all.empty()) return Status::Ok();
  SS_RETURN_IF_ERROR(out->reserve(all.size()));
  SS_CUDA_CHECK(cudaMemcpy(out->data(), all.data(), all.size() * 4, cudaMemcpyHostToDevice));
  return Status::Ok();
}

CudaCausalLM::CudaCausalLM()
    : fuse_inputs_(std::getenv("SEEKSERVE_CUDA_NO_FUSION") == nullptr),
      timing_(std::getenv("SEEKSERVE_CUDA_STEP_TIMING") != nullptr),
      use_graphs_(std::getenv("SEEKSERVE_CUDA_NO_GRAPHS") == nullptr) {
  SS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

CudaCausalLM::~CudaCausalLM() {
  if (timing_ && timed_steps_ > 0) {
    std::fprintf(stderr, "cuda decode-step timing over %lld steps: host before launch %.3f ms, device %.3f ms, whole call %.3f ms (means)\n",
                 static_cast<long long>(timed_steps_), host_ms_ / timed_steps_, device_ms_ / timed_steps_, call_ms_ / timed_steps_);
    cudaEventDestroy(timing_start_);
    cudaEventDestroy(timing_stop_);
  }
  drop_graphs();
  if (host_argmax_) cudaFreeHost(host_argmax_);
  if (host_step_) cudaFreeHost(host_step_);
  if (host_logits_) cudaFreeHost(host_logits_);
  cudaStreamDestroy(stream_);
}

int64_t CudaCausalLM::device_bytes(const DeviceMatrix& m) {
  if (!m.is_fp8()) return m.rows * m.cols * static_cast<int64_t>(sizeof(bf16));
  return m.rows * m.cols + static_cast<int64_t>(m.scales.size() * sizeof(float) + m.scale_row.size() * sizeof(int32_t));
}

Status CudaCausalLM::upload(const std::vector<const Weight*>& parts, DeviceMatrix* out, bool stacked_experts) {
  SS_RETURN_IF_ERROR(upload_matrix(parts, out));
  uploaded_bytes_ += device_bytes(*out);
  uploaded_elements_ += out->rows * out->cols;
  if (out->is_fp8()) {
    fp8_max_cols_ = std::max(fp8_max_cols_, out->cols);
    if (!stacked_experts) fp8_max_linear_rows_ = std::max(fp8_max_linear_rows_, out->rows);
  }
  return Status::Ok();
}

Status CudaCausalLM::upload(const std::vector<const std::vector<float>*>& parts, DeviceBuffer<float>* out) {
  SS_RETURN_IF_ERROR(upload_floats(parts, out));
  for (const auto* p : parts) uploaded_bytes_ += static_cast<int64_t>(p->size() * sizeof(float));
  return Status::Ok();
}

Status CudaCausalLM::bind_embeddings(WeightBinder& binder, bool tie_word_embeddings, float norm_eps) {
  const int64_t V = info_.vocab_size, H = info_.hidden_size;
  norm_eps_ = norm_eps;
  const Weight embed = binder.table("model.embed_tokens.weight", V, H);
  const std::vector<float> norm = binder.vector("model.norm.weight", H, 1.0f);
  SS_RETURN_IF_ERROR(binder.status());
  SS_RETURN_IF_ERROR(upload({&embed}, &embed_tokens_));
  SS_RETURN_IF_ERROR(upload({&norm}, &final_norm_));
  info_.embedding_bytes = device_bytes(embed_tokens_);
  head_elements_ = V * H * (tie_word_embeddings ? 1 : 2);
  if (tie_word_embeddings) {
    lm_head_ = &embed_tokens_;
    return Status::Ok();
  }
  const Weight head = binder.linear("lm_head", V, H);
  SS_RETURN_IF_ERROR(binder.status());
  SS_RETURN_IF_ERROR(upload({&head}, &lm_head_own_));
  lm_head_ = &lm_head_own_;
  return Status::Ok();
}

Status CudaCausalLM::upload_rope_tables(const RopeFrequencies& rope) {
  std::vector<int32_t> positions(static_cast<size_t>(info_.max_positions));
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<int32_t>(i);
  std::vector<float> cos, sin;
  rope_cos_sin(rope, positions, &cos, &sin);
  SS_RETURN_IF_ERROR(upload_floats({&cos}, &rope_cos_));
  return upload_floats({&sin}, &rope_sin_);
}

void CudaCausalLM::linear(const DeviceMatrix& w, const bf16* x, int64_t n, const float* bias, bool accumulate, float* y) {
  if (w.is_fp8()) return fp8_linear(w, x, n, bias, accumulate, y);
  if (n <= kGemvMaxTokens) return gemv(w.data.data(), w.rows, w.cols, x, n, bias, accumulate, y, w.rows, stream_);
  gemm_.run(w.data.data(), w.rows, w.cols, x, n, accumulate, y, stream_);
  if (bias) add_bias(bias, n, w.rows, y, stream_);
}

void CudaCausalLM::normed_linear(const DeviceMatrix& w, const float* hidden, const int32_t* rows, int64_t n, const float* norm_weight,
                                 float eps, const float* bias, bf16* normed, float* y) {
  if (fuse_inputs_ && !w.is_fp8() && gemv_builds_input(n, w.cols))
    return gemv(w.data.data(), w.rows, w.cols, GemvInput::normed(hidden, rows, norm_weight, eps), n, bias, false, y, w.rows, stream_);
  rms_norm(hidden, rows, norm_weight, n, w.cols, eps, normed, stream_);
  linear(w, normed, n, bias, false, y);
}

void CudaCausalLM::mlp(const DeviceMatrix& gate_up, const DeviceMatrix& down, const float* norm_weight, float eps, float* hidden,
                       int64_t n, const MlpScratch& s, bool input_normed) {
  const int64_t I = down.cols;
  if (gate_up.is_fp8()) {
    if (!input_normed) rms_norm(hidden, nullptr, norm_weight, n, gate_up.cols, eps, s.normed, stream_);
    if (n > kGemvMaxTokens && fp8_gemm_available(gate_up, n)) {
      silu_mul(fp8_gemm(gate_up, s.normed, n), n, I, s.act, stream_);
    } else {  // the GEMV, 8 tokens at a time (gate_up_f32 holds 8 rows)
      for (int64_t t0 = 0; t0 < n; t0 += kGemvMaxTokens) {
        const int64_t m = std::min(kGemvMaxTokens, n - t0);
        fp8_linear(gate_up, s.normed + t0 * gate_up.cols, m, nullptr, false, s.gate_up_f32);
        silu_mul(s.gate_up_f32, m, I, s.act + t0 * I, stream_);
      }
    }
    linear(down, s.act, n, nullptr, true, hidden);
    return;
  }
  if (fuse_inputs_ && gemv_builds_input(n, gate_up.cols)) {
    gemv_swiglu(gate_up.data.data(), I, gate_up.cols, GemvInput::normed(hidden, nullptr, norm_weight, eps), n, s.act, stream_);
  } else if (n <= kGemvMaxTokens) {
    if (input_normed) linear(gate_up, s.normed, n, nullptr, false, s.gate_up_f32);
    else normed_linear(gate_up, hidden, nullptr, n, norm_weight, eps, nullptr, s.normed, s.gate_up_f32);
    silu_mul(s.gate_up_f32, n, I, s.act, stream_);
  } else {  // gate and up come out of cuBLASLt as bf16 (as they would in a bf16 model): half the bytes
    if (!input_normed) rms_norm(hidden, nullptr, norm_weight, n, gate_up.cols, eps, s.normed, stream_);
    gemm_.run(gate_up.data.data(), gate_up.rows, gate_up.cols, s.normed, n, s.gate_up_bf16, stream_);
    silu_mul(s.gate_up_bf16, n, I, s.act, stream_);
  }
  linear(down, s.act, n, nullptr, true, hidden);
}

Fp8Activations CudaCausalLM::quantize_activations(const bf16* x, int64_t n, int64_t K, int64_t ld) {
  quantize_fp8_rows(x, n, K, fp8_xq_.data(), fp8_xs_.data(), ld, stream_);
  return {fp8_xq_.data(), fp8_xs_.data(), ld};
}

void CudaCausalLM::fp8_linear(const DeviceMatrix& w, const bf16* x, int64_t n, const float* bias, bool accumulate, float* y) {
  if (n > kGemvMaxTokens && fp8_gemm_available(w, n)) {
    add_bf16_rows(fp8_gemm(w, x, n), n, w.rows, bias, accumulate, y, stream_);
    return;
  }
  const Fp8Activations a = quantize_activations(x, n, w.cols, n);
  for (int64_t t0 = 0; t0 < n; t0 += kGemvMaxTokens) {  // scales of token t0 + t sit at column t0 + t
    const Fp8Activations chunk{a.xq + t0 * w.cols, a.scales + t0, a.ld};
    fp8_gemv(w.fp8_weight(), w.rows, w.cols, chunk, std::min(kGemvMaxTokens, n - t0), bias, accumulate, y + t0 * w.rows, w.rows, stream_);
  }
}

bool CudaCausalLM::fp8_gemm_available(const DeviceMatrix& w, int64_t n) {
  const int64_t rows = LtGemm::fp8_rows(n);
  return std::all_of(w.parts.begin(), w.parts.end(), [&](const DeviceMatrix::Part& p) {  // 16-byte aligned output slices
    return p.row0 % 8 == 0 && gemm_.fp8_available(p.rows, w.cols, rows, w.rows);
  });
}

const bf16* CudaCausalLM::fp8_gemm(const DeviceMatrix& w, const bf16* x, int64_t n) {
  const int64_t rows = LtGemm::fp8_rows(n);
  const Fp8Activations a = quantize_activations(x, n, w.cols, rows);
  for (const DeviceMatrix::Part& p : w.parts)  // part p writes output columns [row0, row0 + rows)
    gemm_.run_fp8(w.fp8.data() + p.row0 * w.cols, w.scales.data() + p.block_row0 * w.scale_ld, p.rows, w.cols, a.xq, a.scales, rows,
                  fp8_out_.data() + p.row0, w.rows, stream_);
  return fp8_out_.data();
}

Status CudaCausalLM::ensure_fp8_scratch(const StepShape& shape) {
  if (fp8_max_cols_ == 0) return Status::Ok();
  const int64_t rows = LtGemm::fp8_rows(std::max(shape.n, fp8_activation_rows(shape)));
  if (rows > fp8_scratch_rows_) {
    SS_RETURN_IF_ERROR(fp8_xq_.reserve(static_cast<size_t>(rows * fp8_max_cols_)));
    SS_RETURN_IF_ERROR(fp8_xs_.reserve(static_cast<size_t>(rows * (fp8_max_cols_ / kFp8Group))));
    fp8_scratch_rows_ = rows;
    drop_graphs();
  }
  if (shape.n > kGemvMaxTokens && shape.n > fp8_out_tokens_) {
    SS_RETURN_IF_ERROR(fp8_out_.reserve(static_cast<size_t>(LtGemm::fp8_rows(shape.n) * fp8_max_linear_rows_)));
    fp8_out_tokens_ = shape.n;
    drop_graphs();
  }
  return Status::Ok();
}

Status CudaCausalLM::ensure_outputs(int64_t n, int64_t n_logits) {
  if (n > hidden_tokens_) {
    SS_RETURN_IF_ERROR(hidden_.reserve(static_cast<size_t>(n * info_.hidden_size)));
    hidden_tokens_ = n;
    drop_graphs();
  }
  if (n_logits > act_logits_) {
    SS_RETURN_IF_ERROR(logit_normed_.reserve(static_cast<size_t>(n_logits * info_.hidden_size)));
    SS_RETURN_IF_ERROR(logits_.reserve(static_cast<size_t>(n_logits * info_.vocab_size)));
    SS_RETURN_IF_ERROR(argmax_.reserve(static_cast<size_t>(n_logits)));
    if (host_argmax_) SS_CUDA_CHECK(cudaFreeHost(host_argmax_));
    SS_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_argmax_), static_cast<size_t>(n_logits) * 8));
    act_logits_ = n_logits;
    drop_graphs();
  }
  return Status::Ok();
}

Status CudaCausalLM::ensure_cache_rows(int64_t rows) {
  if (rows <= cache_rows_) return Status::Ok();
  const KvLayout layout = kv_layout();
  for (auto [caches, width] : {std::pair{&cache_a_, layout.a_width}, std::pair{&cache_b_, layout.b_width}}) {
    caches->resize(static_cast<size_t>(layout.n_layers));
    for (DeviceBuffer<bf16>& cache : *caches) {
      DeviceBuffer<bf16> bigger;
      SS_RETURN_IF_ERROR(bigger.reserve(static_cast<size_t>(rows * width)));
      if (cache_rows_ > 0)
        SS_CUDA_CHECK(cudaMemcpyAsync(bigger.data(), cache.data(), static_cast<size_t>(cache_rows_ * width) * sizeof(bf16),
                                      cudaMemcpyDeviceToDevice, stream_));
      SS_CUDA_CHECK(cudaStreamSynchronize(stream_));
      cache = std::move(bigger);
    }
  }
  cache_rows_ = rows;
  drop_graphs();
  return Status::Ok();
}

void CudaCausalLM::observe(const LayerObserver& observer, int64_t layer, const float* device_hidden, int64_t n) {
  std::vector<float> host(static_cast<size_t>(n * info_.hidden_size));
  SS_CUDA_CHECK(cudaMemcpyAsync(host.data(), device_hidden, host.size() * 4, cudaMemcpyDeviceToHost, stream_));
  SS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  observer(layer, host.data(), n);
}

namespace {

// Offsets of one step's inputs inside the staging area (each 256-byte aligned).
struct StepLayout {
  size_t tokens, positions, slots, token_seq, tables, logit_rows, tiles, total;
  StepLayout(int64_t n, int64_t n_seqs, int64_t table_stride, int64_t n_logits, int64_t n_tiles) {
    size_t at = 0;
    auto take = [&at](size_t bytes) {
      const size_t offset = at;
      at += (bytes + 255) / 256 * 256;
      return offset;
    };
    tokens = take(static_cast<size_t>(n) * 4);
    positions = take(static_cast<size_t>(n) * 4);
    slots = take(static_cast<size_t>(n) * 4);
    token_seq = take(static_cast<size_t>(n) * 4);
    tables = take(static_cast<size_t>(n_seqs * table_stride) * 4);
    logit_rows = take(static_cast<size_t>(n_logits) * 4);
    tiles = take(static_cast<size_t>(n_tiles) * 12);
    total = at;
  }
};

}  // namespace

Status CudaCausalLM::forward_batch(const ForwardBatch& batch, KvPool& pool, std::vector<float>* logits) {
  const auto call_start = std::chrono::steady_clock::now();
  logits->clear();
  ForwardContext ctx;
  std::vector<int32_t> tokens;
  std::vector<int64_t> logit_rows;
  SS_RETURN_IF_ERROR(plan_forward_batch(batch, pool, info_, &ctx, &tokens, &logit_rows));
  StepShape shape;
  shape.n = ctx.n_tokens;
  shape.n_logits = static_cast<int64_t>(logit_rows.size());
  shape.n_seqs = static_cast<int64_t>(ctx.segments.size());
  shape.block_size = pool.block_size();
  shape.argmax = batch.greedy_tokens != nullptr;
  // Block tables padded to a multiple of 32 entries, so a decode graph serves 512 positions.
  int64_t longest = 1;
  for (const SequenceChunk& chunk : batch.chunks) longest = std::max<int64_t>(longest, static_cast<int64_t>(chunk.block_table.size()));
  shape.table_stride = (longest + 31) / 32 * 32;
  if (!shape.decode() && uses_prefill_tiles())
    for (const auto& seg : ctx.segments) shape.n_tiles += (seg.n + kPrefillTileRows - 1) / kPrefillTileRows;

  segments_.clear();
  for (const auto& seg : ctx.segments)
    segments_.push_back({seg.begin, seg.n, ctx.positions[static_cast<size_t>(seg.begin)]});
  SS_RETURN_IF_ERROR(ensure_outputs(shape.n, shape.n_logits));
  SS_RETURN_IF_ERROR(ensure_fp8_scratch(shape));
  SS_RETURN_IF_ERROR(ensure_cache_rows(pool.n_blocks() * pool.block_size()));
  SS_RETURN_IF_ERROR(prepare_step(shape));

  // Stage every input in pinned memory and send it up in one copy.
  const StepLayout L(shape.n, shape.n_seqs, shape.table_stride, shape.n_logits, shape.n_tiles);
  if (L.total > host_step_bytes_) {
    if (host_step_) SS_CUDA_CHECK(cudaFreeHost(host_step_));
    SS_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_step_), L.total));
    host_step_bytes_ = L.total;
    SS_RETURN_IF_ERROR(step_.reserve(L.total));
    drop_graphs();
  }
  SS_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the previous step's copy may still read host_step_
  auto put = [&](size_t offset) { return reinterpret_cast<int32_t*>(host_step_ + offset); };
  std::memcpy(put(L.tokens), tokens.data(), tokens.size() * 4);
  std::memcpy(put(L.positions), ctx.positions.data(), ctx.positions.size() * 4);
  int32_t* slots = put(L.slots);
  int32_t* token_seq = put(L.token_seq);
  int32_t* tables = put(L.tables);
  for (int64_t t = 0; t < shape.n; ++t) slots[t] = static_cast<int32_t>(ctx.slots[static_cast<size_t>(t)]);
  for (int64_t s = 0; s < shape.n_seqs; ++s) {
    const auto& seg = ctx.segments[static_cast<size_t>(s)];
    for (int64_t t = seg.begin; t < seg.begin + seg.n; ++t) token_seq[t] = static_cast<int32_t>(s);
    const auto& table = batch.chunks[static_cast<size_t>(s)].block_table;
    for (int64_t b = 0; b < shape.table_stride; ++b)
      tables[s * shape.table_stride + b] = b < static_cast<int64_t>(table.size()) ? table[static_cast<size_t>(b)] : 0;
  }
  for (int64_t r = 0; r < shape.n_logits; ++r) put(L.logit_rows)[r] = static_cast<int32_t>(logit_rows[static_cast<size_t>(r)]);
  if (shape.n_tiles > 0) {
    int32_t* tile = put(L.tiles);
    for (int64_t s = 0; s < shape.n_seqs; ++s) {
      const auto& seg = ctx.segments[static_cast<size_t>(s)];
      for (int64_t r = 0; r < seg.n; r += kPrefillTileRows, tile += 3) {
        tile[0] = static_cast<int32_t>(s);
        tile[1] = static_cast<int32_t>(seg.begin + r);
        tile[2] = static_cast<int32_t>(std::min<int64_t>(kPrefillTileRows, seg.n - r));
      }
    }
  }
  SS_CUDA_CHECK(cudaMemcpyAsync(step_.data(), host_step_, L.total, cudaMemcpyHostToDevice, stream_));

  // Decode steps (one token per sequence) replay a captured graph; prefill is launched directly.
  const bool timed = timing_ && shape.decode();  // decode steps only: one prefill would swamp the means
  if (timed) {
    if (!timing_start_) {
      SS_CUDA_CHECK(cudaEventCreate(&timing_start_));
      SS_CUDA_CHECK(cudaEventCreate(&timing_stop_));
    }
    host_ms_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - call_start).count();
    SS_CUDA_CHECK(cudaEventRecord(timing_start_, stream_));
  }
  if (shape.decode() && !batch.observer && use_graphs_ && capturable(shape)) launch_graph(shape);
  else enqueue_forward(shape, batch.observer);
  if (timed) SS_CUDA_CHECK(cudaEventRecord(timing_stop_, stream_));
  if (batch.on_routing) queue_routing_copy(shape);

  if (shape.n_logits == 0) {
    SS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } else if (shape.argmax) {
    SS_CUDA_CHECK(cudaMemcpyAsync(host_argmax_, argmax_.data(), static_cast<size_t>(shape.n_logits) * 8, cudaMemcpyDeviceToHost, stream_));
    SS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    batch.greedy_tokens->resize(static_cast<size_t>(shape.n_logits));
    for (int64_t r = 0; r < shape.n_logits; ++r) (*batch.greedy_tokens)[static_cast<size_t>(r)] = argmax_key_index(host_argmax_[r]);
  } else {
    const size_t count = static_cast<size_t>(shape.n_logits * info_.vocab_size);
    if (count > host_logits_floats_) {
      if (host_logits_) SS_CUDA_CHECK(cudaFreeHost(host_logits_));
      SS_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_logits_), count * 4));
      host_logits_floats_ = count;
    }
    SS_CUDA_CHECK(cudaMemcpyAsync(host_logits_, logits_.data(), count * 4, cudaMemcpyDeviceToHost, stream_));
    SS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    logits->assign(host_logits_, host_logits_ + count);
  }
  if (batch.on_routing) report_routing(batch.on_routing, shape);
  if (timed) {
    float ms = 0;
    SS_CUDA_CHECK(cudaEventElapsedTime(&ms, timing_start_, timing_stop_));
    device_ms_ += ms;
    call_ms_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - call_start).count();
    ++timed_steps_;
  }
  return Status::Ok();
}

void CudaCausalLM::enqueue_forward(const StepShape& shape, const LayerObserver& observer) {
  const int64_t n = shape.n, H = info_.hidden_size;
  const StepLayout L(n, shape.n_seqs, shape.table_stride, shape.n_logits, shape.n_tiles);
  auto dev = [&](size_t offset) { return reinterpret_cast<const int32_t*>(step_.data() + offset); };
  StepInputs in;
  in.tokens = dev(L.tokens);
  in.positions = dev(L.positions);
  in.slots = dev(L.slots);
  in.token_seq = dev(L.token_seq);
  in.tables = dev(L.tables);
  in.logit_rows = dev(L.logit_rows);
  in.tiles = dev(L.tiles);

  float* hidden = hidden_.data();
  embedding(embed_tokens_.data.data(), H, in.tokens, n, hidden, stream_);
  if (observer) observe(observer, 0, hidden, n);
  enqueue_layers(shape, in, observer);
  if (observer) {
    const Status reserved = observed_.reserve(static_cast<size_t>(n * H));
    SS_CHECK(reserved.ok(), "no device memory for the observed final norm");
    rms_norm(hidden, nullptr, final_norm_.data(), n, H, norm_eps_, observed_.data(), stream_);
    observe(observer, info_.n_layers + 1, observed_.data(), n);
  }
  if (shape.n_logits > 0) {
    normed_linear(*lm_head_, hidden, in.logit_rows, shape.n_logits, final_norm_.data(), norm_eps_, nullptr, logit_normed_.data(),
                  logits_.data());
    if (shape.argmax) argmax_rows(logits_.data(), shape.n_logits, info_.vocab_size, argmax_.data(), stream_);
  }
}

void CudaCausalLM::launch_graph(const StepShape& shape) {
  auto it = graphs_.find(shape.key());
  if (it == graphs_.end()) {
    cudaGraph_t graph;
    SS_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    enqueue_forward(shape, nullptr);
    SS_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    cudaGraphExec_t exec;
    SS_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    SS_CUDA_CHECK(cudaGraphDestroy(graph));
    it = graphs_.emplace(shape.key(), exec).first;
  }
  SS_CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
}

void CudaCausalLM::drop_graphs() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
}

}  // namespace seekserve::cuda
