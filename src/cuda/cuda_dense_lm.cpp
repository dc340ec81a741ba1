#include "cuda/cuda_dense_lm.h"

#include <cuda_runtime_api.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <tuple>
#include <vector>

#include "core/dtype.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "cuda/lt_gemm.h"
#include "layers/swiglu_mlp.h"
#include "models/dense_decoder.h"
#include "models/model_loader.h"

namespace seekserve::cuda {

namespace {

// A bf16 matrix on the device: [rows, cols] row-major.
struct DeviceMatrix {
  DeviceBuffer<bf16> data;
  int64_t rows = 0, cols = 0;
};

// Uploads the row-wise concatenation of `parts` (same cols) as one bf16 matrix.
Status upload_matrix(const std::vector<const Weight*>& parts, DeviceMatrix* out) {
  out->cols = parts[0]->cols;
  out->rows = 0;
  for (const Weight* w : parts) out->rows += w->rows;
  SS_RETURN_IF_ERROR(out->data.reserve(static_cast<size_t>(out->rows * out->cols)));
  int64_t row0 = 0;
  std::vector<uint16_t> staging;
  std::vector<float> row;
  for (const Weight* w : parts) {
    bf16* dst = out->data.data() + row0 * out->cols;
    if (w->format == WeightFormat::kBF16) {
      SS_CUDA_CHECK(cudaMemcpy(dst, w->data, static_cast<size_t>(w->rows * w->cols) * 2, cudaMemcpyHostToDevice));
    } else {  // float32 or FP8 blocks: converted on the host, rounding to nearest even
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

class CudaDenseLM final : public CausalLM {
 public:
  explicit CudaDenseLM(DenseDecoderConfig config)
      : config_(std::move(config)), rope_(make_rope_frequencies(config_.rope, config_.attention.head_dim)) {
    SS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~CudaDenseLM() override {
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

  Status bind(ConfigReader& reader, WeightBinder& binder);

  const ModelInfo& info() const override { return info_; }
  KvLayout kv_layout() const override {
    const int64_t width = config_.attention.n_kv_heads * config_.attention.head_dim;
    KvLayout layout{config_.n_layers, width, width};
    layout.element_bytes = 2;
    layout.on_device = true;
    return layout;
  }
  Status forward_batch(const ForwardBatch& batch, KvPool& pool, std::vector<float>* logits) override;

 private:
  struct Layer {
    DeviceBuffer<float> input_norm, post_attention_norm;  // [hidden]
    DeviceMatrix qkv;                                     // [(H + 2 Hkv) * D, hidden]: q, k, v rows
    DeviceBuffer<float> qkv_bias;                         // [(H + 2 Hkv) * D] or empty
    DeviceMatrix o;                                       // [hidden, H * D]
    DeviceBuffer<float> o_bias;                           // [hidden] or empty
    DeviceMatrix gate_up;                                 // [2 * intermediate, hidden]: gate, up rows
    DeviceMatrix down;                                    // [hidden, intermediate]
  };

  // y (+)= x w^T (+ bias): the GEMV kernel for a few tokens, cuBLASLt beyond.
  void linear(const DeviceMatrix& w, const bf16* x, int64_t n, const float* bias, bool accumulate, float* y) {
    if (n <= kGemvMaxTokens) return gemv(w.data.data(), w.rows, w.cols, x, n, bias, accumulate, y, w.rows, stream_);
    gemm_.run(w.data.data(), w.rows, w.cols, x, n, accumulate, y, stream_);
    if (bias) add_bias(bias, n, w.rows, y, stream_);
  }
  // y (+)= rms_norm(hidden[rows]) w^T for n rows: the norm built inside the GEMV's prologue when
  // it fits there (decode), else by its own kernel into `normed`.
  void normed_linear(const DeviceMatrix& w, const float* hidden, const int32_t* rows, int64_t n, const float* norm_weight,
                     const float* bias, bf16* normed, float* y) {
    if (fuse_inputs_ && gemv_builds_input(n, w.cols))
      return gemv(w.data.data(), w.rows, w.cols, GemvInput::normed(hidden, rows, norm_weight, config_.rms_norm_eps), n, bias, false, y,
                  w.rows, stream_);
    rms_norm(hidden, rows, norm_weight, n, w.cols, config_.rms_norm_eps, normed, stream_);
    linear(w, normed, n, bias, false, y);
  }
  // The MLP: hidden += swiglu(rms_norm(hidden) w_gate_up^T) w_down^T. Decode-sized steps make
  // the SwiGLU input in one GEMV (norm, gate and up rows side by side, SwiGLU on the way out).
  void mlp(const Layer& layer, float* hidden, int64_t n) {
    const int64_t I = config_.intermediate_size;
    if (fuse_inputs_ && gemv_builds_input(n, layer.gate_up.cols)) {
      gemv_swiglu(layer.gate_up.data.data(), I, layer.gate_up.cols,
                  GemvInput::normed(hidden, nullptr, layer.post_attention_norm.data(), config_.rms_norm_eps), n, act_.data(), stream_);
    } else if (n <= kGemvMaxTokens) {
      normed_linear(layer.gate_up, hidden, nullptr, n, layer.post_attention_norm.data(), nullptr, normed_.data(), gate_up_.data());
      silu_mul(gate_up_.data(), n, I, act_.data(), stream_);
    } else {  // gate and up come out of cuBLASLt as bf16 (as they would in a bf16 model): half the bytes
      rms_norm(hidden, nullptr, layer.post_attention_norm.data(), n, config_.hidden_size, config_.rms_norm_eps, normed_.data(), stream_);
      gemm_.run(layer.gate_up.data.data(), layer.gate_up.rows, layer.gate_up.cols, normed_.data(), n, gate_up_bf16_.data(), stream_);
      silu_mul(gate_up_bf16_.data(), n, I, act_.data(), stream_);
    }
    linear(layer.down, act_.data(), n, nullptr, true, hidden);
  }
  // What one forward pass enqueues: everything a captured graph depends on besides buffers.
  struct StepShape {
    int64_t n = 0, n_logits = 0, n_seqs = 0, table_stride = 0, block_size = 0;
    int64_t n_tiles = 0;  // prefill: query tiles for the tensor-core attention (0: decode kernel)
    bool argmax = false;
    auto key() const { return std::make_tuple(n, n_logits, n_seqs, table_stride, block_size, argmax); }
  };
  Status ensure_kv_rows(int64_t rows);
  Status ensure_activations(int64_t n, int64_t n_logits);
  void observe(const LayerObserver& observer, int64_t layer, const float* device_hidden, int64_t n);
  // Enqueues embedding, layers, final norm, lm_head (and argmax) on stream_ for the staged step.
  void enqueue_forward(const StepShape& shape, const LayerObserver& observer);
  // Runs enqueue_forward through a CUDA graph captured once per shape (decode steps), so a step
  // costs one launch instead of hundreds.
  void launch_graph(const StepShape& shape);
  void drop_graphs();

  DenseDecoderConfig config_;
  RopeFrequencies rope_;
  ModelInfo info_;
  cudaStream_t stream_ = nullptr;
  LtGemm gemm_;

  DeviceMatrix embed_tokens, lm_head_own;
  const DeviceMatrix* lm_head = nullptr;  // lm_head_own, or the embedding when tied
  DeviceBuffer<float> final_norm;
  std::vector<Layer> layers_;
  // RoPE cos/sin of every position the model accepts, [max_positions, D/2] each: computed once at
  // load (as rope_cos_sin does per step on CPUs), so a step sends no tables and computes none.
  DeviceBuffer<float> rope_cos_, rope_sin_;

  // Paged KV cache, per layer: [rows, Hkv * D] bf16.
  std::vector<DeviceBuffer<bf16>> k_cache_, v_cache_;
  int64_t kv_rows_ = 0;

  // Step inputs: one pinned staging area and its device copy, laid out by forward_batch.
  DeviceBuffer<uint8_t> step_;
  uint8_t* host_step_ = nullptr;
  size_t host_step_bytes_ = 0;
  float* host_logits_ = nullptr;
  size_t host_logits_floats_ = 0;

  // Activations, grow-only.
  int64_t act_tokens_ = 0, act_logits_ = 0;
  DeviceBuffer<float> hidden_, qkv_, gate_up_, logits_, observed_;
  DeviceBuffer<bf16> normed_, attn_out_, act_, logit_normed_;
  DeviceBuffer<bf16> gate_up_bf16_;  // [n, 2I] gate|up of GEMM-sized steps (gate_up_: GEMV-sized, float)
  DeviceBuffer<float> partial_;     // split-KV attention slices (kernels.h)
  DeviceBuffer<int> split_counters_;  // split-KV slices finished per (token, KV head), kept zero between steps
  DeviceBuffer<uint64_t> argmax_;  // argmax keys (kernels.h)
  uint64_t* host_argmax_ = nullptr;

  // SEEKSERVE_CUDA_STEP_TIMING=1: mean host time before the launch, device time of the launched
  // work (events) and the whole call, printed at exit (where a step's time goes).
  bool timing_ = std::getenv("SEEKSERVE_CUDA_STEP_TIMING") != nullptr;
  bool use_graphs_ = std::getenv("SEEKSERVE_CUDA_NO_GRAPHS") == nullptr;  // to compare with direct launches
  // SEEKSERVE_CUDA_NO_FUSION=1: RMSNorm and SwiGLU as kernels of their own at every size (to
  // measure what folding them into the decode GEMVs saves).
  bool fuse_inputs_ = std::getenv("SEEKSERVE_CUDA_NO_FUSION") == nullptr;
  cudaEvent_t timing_start_ = nullptr, timing_stop_ = nullptr;
  double host_ms_ = 0, device_ms_ = 0, call_ms_ = 0;
  int64_t timed_steps_ = 0;

  // Captured decode graphs by step shape; any buffer reallocation invalidates them all.
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, bool>, cudaGraphExec_t> graphs_;
};

Status CudaDenseLM::bind(ConfigReader& reader, WeightBinder& binder) {
  const DenseDecoderConfig& c = config_;
  const GqaConfig& a = c.attention;
  if (binder.options().dtype != ComputeDType::kBF16)
    return unimplemented("--device cuda computes in bf16: pass --dtype bf16");
  if (!attention_supported(a.head_dim, a.n_heads / a.n_kv_heads))
    return unimplemented("--device cuda: head_dim " + std::to_string(a.head_dim) + " with " + std::to_string(a.n_heads / a.n_kv_heads) +
                         " query heads per KV head is not built (head_dim 16/32/64/128, up to 8 per KV head)");
  read_common_info(reader, &info_);
  SS_RETURN_IF_ERROR(reader.status());
  const Weight embed = binder.table("model.embed_tokens.weight", c.vocab_size, c.hidden_size);
  SS_RETURN_IF_ERROR(binder.status());
  SS_RETURN_IF_ERROR(upload_matrix({&embed}, &embed_tokens));
  layers_.resize(static_cast<size_t>(c.n_layers));
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    Layer& layer = layers_[static_cast<size_t>(i)];
    const std::vector<float> in_norm = binder.vector(p + ".input_layernorm.weight", c.hidden_size, 1.0f);
    const std::vector<float> post_norm = binder.vector(p + ".post_attention_layernorm.weight", c.hidden_size, 1.0f);
    const GqaWeights attn = bind_gqa(binder, p + ".self_attn", a);
    const MlpWeights mlp = bind_mlp(binder, p + ".mlp", c.hidden_size, c.intermediate_size);
    SS_RETURN_IF_ERROR(binder.status());
    SS_RETURN_IF_ERROR(upload_floats({&in_norm}, &layer.input_norm));
    SS_RETURN_IF_ERROR(upload_floats({&post_norm}, &layer.post_attention_norm));
    SS_RETURN_IF_ERROR(upload_matrix({&attn.q_proj, &attn.k_proj, &attn.v_proj}, &layer.qkv));
    SS_RETURN_IF_ERROR(upload_floats({&attn.q_bias, &attn.k_bias, &attn.v_bias}, &layer.qkv_bias));
    SS_RETURN_IF_ERROR(upload_matrix({&attn.o_proj}, &layer.o));
    SS_RETURN_IF_ERROR(upload_floats({&attn.o_bias}, &layer.o_bias));
    SS_RETURN_IF_ERROR(upload_matrix({&mlp.gate, &mlp.up}, &layer.gate_up));
    SS_RETURN_IF_ERROR(upload_matrix({&mlp.down}, &layer.down));
  }
  const std::vector<float> norm = binder.vector("model.norm.weight", c.hidden_size, 1.0f);
  SS_RETURN_IF_ERROR(upload_floats({&norm}, &final_norm));
  if (c.tie_word_embeddings) {
    lm_head = &embed_tokens;
  } else {
    const Weight head = binder.linear("lm_head", c.vocab_size, c.hidden_size);
    SS_RETURN_IF_ERROR(binder.status());
    SS_RETURN_IF_ERROR(upload_matrix({&head}, &lm_head_own));
    lm_head = &lm_head_own;
  }
  info_.weight_bytes = binder.bytes_bound();
  info_.embedding_bytes = embed.bytes();
  info_.attention_flops_per_pair = 4 * a.n_heads * a.head_dim * c.n_layers;  // 2 for q.k, 2 for p.v, per head dim
  {
    std::vector<int32_t> positions(static_cast<size_t>(info_.max_positions));
    for (size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<int32_t>(i);
    std::vector<float> cos, sin;
    rope_cos_sin(rope_, positions, &cos, &sin);
    SS_RETURN_IF_ERROR(upload_floats({&cos}, &rope_cos_));
    SS_RETURN_IF_ERROR(upload_floats({&sin}, &rope_sin_));
  }
  k_cache_.resize(static_cast<size_t>(c.n_layers));
  v_cache_.resize(static_cast<size_t>(c.n_layers));
  return Status::Ok();
}

// Grows every layer's cache to `rows`, keeping what the old rows hold.
Status CudaDenseLM::ensure_kv_rows(int64_t rows) {
  if (rows <= kv_rows_) return Status::Ok();
  const int64_t width = config_.attention.n_kv_heads * config_.attention.head_dim;
  for (auto* caches : {&k_cache_, &v_cache_})
    for (DeviceBuffer<bf16>& cache : *caches) {
      DeviceBuffer<bf16> bigger;
      SS_RETURN_IF_ERROR(bigger.reserve(static_cast<size_t>(rows * width)));
      if (kv_rows_ > 0)
        SS_CUDA_CHECK(cudaMemcpyAsync(bigger.data(), cache.data(), static_cast<size_t>(kv_rows_ * width) * 2,
                                      cudaMemcpyDeviceToDevice, stream_));
      SS_CUDA_CHECK(cudaStreamSynchronize(stream_));
      cache = std::move(bigger);
    }
  kv_rows_ = rows;
  drop_graphs();
  return Status::Ok();
}

Status CudaDenseLM::ensure_activations(int64_t n, int64_t n_logits) {
  const DenseDecoderConfig& c = config_;
  const GqaConfig& a = c.attention;
  if (n > act_tokens_) {
    const auto N = static_cast<size_t>(n);
    SS_RETURN_IF_ERROR(hidden_.reserve(N * c.hidden_size));
    SS_RETURN_IF_ERROR(normed_.reserve(N * c.hidden_size));
    SS_RETURN_IF_ERROR(qkv_.reserve(N * (a.n_heads + 2 * a.n_kv_heads) * a.head_dim));
    SS_RETURN_IF_ERROR(attn_out_.reserve(N * a.n_heads * a.head_dim));
    SS_RETURN_IF_ERROR(gate_up_.reserve(std::min<size_t>(N, kGemvMaxTokens) * 2 * c.intermediate_size));
    if (n > kGemvMaxTokens) SS_RETURN_IF_ERROR(gate_up_bf16_.reserve(N * 2 * c.intermediate_size));
    SS_RETURN_IF_ERROR(act_.reserve(N * c.intermediate_size));
    SS_RETURN_IF_ERROR(split_counters_.reserve(N * a.n_kv_heads));
    SS_CUDA_CHECK(cudaMemset(split_counters_.data(), 0, N * a.n_kv_heads * sizeof(int)));
    act_tokens_ = n;
    drop_graphs();
  }
  if (n_logits > act_logits_) {
    SS_RETURN_IF_ERROR(logit_normed_.reserve(static_cast<size_t>(n_logits * c.hidden_size)));
    SS_RETURN_IF_ERROR(logits_.reserve(static_cast<size_t>(n_logits * c.vocab_size)));
    SS_RETURN_IF_ERROR(argmax_.reserve(static_cast<size_t>(n_logits)));
    if (host_argmax_) SS_CUDA_CHECK(cudaFreeHost(host_argmax_));
    SS_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_argmax_), static_cast<size_t>(n_logits) * 8));
    act_logits_ = n_logits;
    drop_graphs();
  }
  return Status::Ok();
}

void CudaDenseLM::observe(const LayerObserver& observer, int64_t layer, const float* device_hidden, int64_t n) {
  std::vector<float> host(static_cast<size_t>(n * config_.hidden_size));
  SS_CUDA_CHECK(cudaMemcpyAsync(host.data(), device_hidden, host.size() * 4, cudaMemcpyDeviceToHost, stream_));
  SS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  observer(layer, host.data(), n);
}

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

Status CudaDenseLM::forward_batch(const ForwardBatch& batch, KvPool& pool, std::vector<float>* logits) {
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
  const bool decode = shape.n == shape.n_seqs;
  if (!decode && attention_prefill_supported(config_.attention.head_dim))
    for (const auto& seg : ctx.segments) shape.n_tiles += (seg.n + kPrefillTileRows - 1) / kPrefillTileRows;

  SS_RETURN_IF_ERROR(ensure_kv_rows(pool.n_blocks() * pool.block_size()));
  SS_RETURN_IF_ERROR(ensure_activations(shape.n, shape.n_logits));
  if (shape.n_tiles == 0) {  // split-KV scratch of the decode attention
    const GqaConfig& a = config_.attention;
    const int64_t splits = attention_splits(shape.n, a.n_kv_heads, shape.table_stride * shape.block_size);
    const auto need = static_cast<size_t>(attention_partial_floats(shape.n, a.n_heads, splits, a.head_dim));
    if (need > partial_.size()) {
      SS_RETURN_IF_ERROR(partial_.reserve(need));
      drop_graphs();
    }
  }

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
  const bool timed = timing_ && decode;  // decode steps only: one prefill would swamp the means
  if (timed) {
    if (!timing_start_) {
      SS_CUDA_CHECK(cudaEventCreate(&timing_start_));
      SS_CUDA_CHECK(cudaEventCreate(&timing_stop_));
    }
    host_ms_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - call_start).count();
    SS_CUDA_CHECK(cudaEventRecord(timing_start_, stream_));
  }
  if (decode && !batch.observer && use_graphs_) launch_graph(shape);
  else enqueue_forward(shape, batch.observer);
  if (timed) SS_CUDA_CHECK(cudaEventRecord(timing_stop_, stream_));

  if (shape.n_logits == 0) {
    SS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } else if (shape.argmax) {
    SS_CUDA_CHECK(cudaMemcpyAsync(host_argmax_, argmax_.data(), static_cast<size_t>(shape.n_logits) * 8, cudaMemcpyDeviceToHost, stream_));
    SS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    batch.greedy_tokens->resize(static_cast<size_t>(shape.n_logits));
    for (int64_t r = 0; r < shape.n_logits; ++r) (*batch.greedy_tokens)[static_cast<size_t>(r)] = argmax_key_index(host_argmax_[r]);
  } else {
    const size_t count = static_cast<size_t>(shape.n_logits * config_.vocab_size);
    if (count > host_logits_floats_) {
      if (host_logits_) SS_CUDA_CHECK(cudaFreeHost(host_logits_));
      SS_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_logits_), count * 4));
      host_logits_floats_ = count;
    }
    SS_CUDA_CHECK(cudaMemcpyAsync(host_logits_, logits_.data(), count * 4, cudaMemcpyDeviceToHost, stream_));
    SS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    logits->assign(host_logits_, host_logits_ + count);
  }
  if (timed) {
    float ms = 0;
    SS_CUDA_CHECK(cudaEventElapsedTime(&ms, timing_start_, timing_stop_));
    device_ms_ += ms;
    call_ms_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - call_start).count();
    ++timed_steps_;
  }
  return Status::Ok();
}

void CudaDenseLM::enqueue_forward(const StepShape& shape, const LayerObserver& observer) {
  const DenseDecoderConfig& c = config_;
  const GqaConfig& a = c.attention;
  const int64_t n = shape.n, H = c.hidden_size, D = a.head_dim;
  const StepLayout L(n, shape.n_seqs, shape.table_stride, shape.n_logits, shape.n_tiles);
  auto dev = [&](size_t offset) { return reinterpret_cast<int32_t*>(step_.data() + offset); };
  const float* d_cos = rope_cos_.data();  // [max positions, D/2], made at load
  const float* d_sin = rope_sin_.data();

  float* hidden = hidden_.data();
  embedding(embed_tokens.data.data(), H, dev(L.tokens), n, hidden, stream_);
  if (observer) observe(observer, 0, hidden, n);
  const int64_t qkv_width = (a.n_heads + 2 * a.n_kv_heads) * D;
  const bool interleaved = false;  // Qwen2 and Llama rotate half-split pairs
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const Layer& layer = layers_[static_cast<size_t>(i)];
    bf16* k_cache = k_cache_[static_cast<size_t>(i)].data();
    bf16* v_cache = v_cache_[static_cast<size_t>(i)].data();
    normed_linear(layer.qkv, hidden, nullptr, n, layer.input_norm.data(), layer.qkv_bias.size() ? layer.qkv_bias.data() : nullptr,
                  normed_.data(), qkv_.data());
    // Decode steps rotate and cache inside the attention kernel; prefill does it for all rows first.
    const bool fused_rope = shape.n_tiles == 0 && shape.n == shape.n_seqs;
    if (!fused_rope) rope_and_cache(qkv_.data(), n, a.n_heads, a.n_kv_heads, D, d_cos, d_sin, dev(L.positions), interleaved, dev(L.slots), k_cache, v_cache, stream_);
    AttentionParams p;
    p.q = qkv_.data();
    p.q_stride = qkv_width;
    p.k_pool = k_cache;
    p.v_pool = v_cache;
    p.block_tables = dev(L.tables);
    p.table_stride = shape.table_stride;
    p.token_seq = dev(L.token_seq);
    p.positions = dev(L.positions);
    p.n_tokens = n;
    p.n_heads = a.n_heads;
    p.n_kv_heads = a.n_kv_heads;
    p.head_dim = D;
    p.block_size = shape.block_size;
    p.scale = 1.0f / std::sqrt(static_cast<float>(D));
    p.out = attn_out_.data();
    if (shape.n_tiles == 0) {
      p.n_splits = attention_splits(n, a.n_kv_heads, shape.table_stride * shape.block_size);
      p.partial = partial_.data();
      p.split_counters = split_counters_.data();
    }
    if (fused_rope) {
      p.rope_cos = d_cos;
      p.rope_sin = d_sin;
      p.rope_interleaved = interleaved;
      p.slots = dev(L.slots);
    }
    if (shape.n_tiles > 0) attention_prefill(p, dev(L.tiles), shape.n_tiles, stream_);
    else attention(p, stream_);
    linear(layer.o, attn_out_.data(), n, layer.o_bias.size() ? layer.o_bias.data() : nullptr, true, hidden);
    mlp(layer, hidden, n);
    if (observer) observe(observer, i + 1, hidden, n);
  }
  if (observer) {
    const Status reserved = observed_.reserve(static_cast<size_t>(n * H));
    SS_CHECK(reserved.ok(), "no device memory for the observed final norm");
    rms_norm(hidden, nullptr, final_norm.data(), n, H, c.rms_norm_eps, observed_.data(), stream_);
    observe(observer, c.n_layers + 1, observed_.data(), n);
  }
  if (shape.n_logits > 0) {
    normed_linear(*lm_head, hidden, dev(L.logit_rows), shape.n_logits, final_norm.data(), nullptr, logit_normed_.data(), logits_.data());
    if (shape.argmax) argmax_rows(logits_.data(), shape.n_logits, c.vocab_size, argmax_.data(), stream_);
  }
}

void CudaDenseLM::launch_graph(const StepShape& shape) {
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

void CudaDenseLM::drop_graphs() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
}

Result<std::unique_ptr<CausalLM>> make_cuda_dense(DenseDecoderConfig config, ConfigReader& reader, WeightBinder& binder) {
  if (!device_present()) return unimplemented("--device cuda: no CUDA device is present");
  auto model = std::make_unique<CudaDenseLM>(std::move(config));
  SS_RETURN_IF_ERROR(model->bind(reader, binder));
  return std::unique_ptr<CausalLM>(std::move(model));
}

}  // namespace

void register_cuda_device() { register_dense_device("cuda", make_cuda_dense); }

}  // namespace seekserve::cuda
