// What every model on the GPU shares around its decoder layers: the step's inputs staged in
// pinned memory and sent up in one copy, the embedding, the final norm and lm_head (with argmax
// on the device for greedy steps), decode steps replayed from CUDA graphs captured per step
// shape, and weight upload helpers. The family files (cuda_dense_lm.cpp, cuda_deepseek_lm.cpp)
// bind their layers and enqueue them.
#pragma once

#include <cuda_runtime_api.h>

#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/fp8_kernels.h"
#include "cuda/kernels.h"
#include "cuda/lt_gemm.h"
#include "model/rope.h"
#include "model/weight.h"
#include "model/weight_binder.h"
#include "models/causal_lm.h"

namespace seekserve::cuda {

// A matrix on the device, [rows, cols] row-major: bf16 (`data`), or under --dtype fp8 e4m3 with
// 128 x 128 block scales (fp8_kernels.h), each uploaded part keeping its checkpoint's blocks.
struct DeviceMatrix {
  DeviceBuffer<bf16> data;
  int64_t rows = 0, cols = 0;
  // FP8 form: elements [rows, cols], scales [block rows, scale_ld], scale_row [rows].
  DeviceBuffer<uint8_t> fp8;
  DeviceBuffer<float> scales;
  DeviceBuffer<int32_t> scale_row;
  int64_t scale_ld = 0;
  struct Part {  // rows [row0, row0 + rows) use scale rows from block_row0 on (a GEMM each)
    int64_t row0 = 0, rows = 0, block_row0 = 0;
  };
  std::vector<Part> parts;

  bool is_fp8() const { return scale_ld > 0; }
  Fp8Weight fp8_weight() const { return {fp8.data(), scales.data(), scale_row.data(), scale_ld}; }
};

// Uploads the row-wise concatenation of `parts` (same cols) as one matrix: FP8 when every part
// is a W8A8 FP8 weight (--dtype fp8, fp8_activations), else bf16 (float32 and FP8 weights
// converted on the host, rounding to nearest even).
Status upload_matrix(const std::vector<const Weight*>& parts, DeviceMatrix* out);
// Uploads the concatenation of `parts` (nothing when all are empty).
Status upload_floats(const std::vector<const std::vector<float>*>& parts, DeviceBuffer<float>* out);

class CudaCausalLM : public CausalLM {
 public:
  CudaCausalLM();
  ~CudaCausalLM() override;
  CudaCausalLM(const CudaCausalLM&) = delete;
  CudaCausalLM& operator=(const CudaCausalLM&) = delete;

  const ModelInfo& info() const override { return info_; }
  Status forward_batch(const ForwardBatch& batch, KvPool& pool, std::vector<float>* logits) final;

 protected:
  // What one forward pass enqueues: everything a captured graph depends on besides buffers.
  struct StepShape {
    int64_t n = 0, n_logits = 0, n_seqs = 0, table_stride = 0, block_size = 0;
    int64_t n_tiles = 0;  // prefill: query tiles for the tensor-core attention (0: decode kernel)
    bool argmax = false;
    bool decode() const { return n == n_seqs; }
    auto key() const { return std::make_tuple(n, n_logits, n_seqs, table_stride, block_size, argmax); }
  };
  // Device addresses of the step's staged inputs (int32 arrays).
  struct StepInputs {
    const int32_t* tokens = nullptr;      // [n]
    const int32_t* positions = nullptr;   // [n]
    const int32_t* slots = nullptr;       // [n] pool row of each token's cache entry
    const int32_t* token_seq = nullptr;   // [n] sequence of each token
    const int32_t* tables = nullptr;      // [n_seqs, table_stride] block tables
    const int32_t* logit_rows = nullptr;  // [n_logits]
    const int32_t* tiles = nullptr;       // [n_tiles, 3] prefill tiles (kernels.h)
  };

  // The step's sequences as the host sees them (valid while a step is enqueued): rows
  // [begin, begin + n) of the batch at positions [first_position, first_position + n).
  struct StepSegment {
    int64_t begin = 0, n = 0, first_position = 0;
  };
  std::vector<StepSegment> segments_;

  // Prefill steps are cut into query tiles for attention_prefill (dense models).
  virtual bool uses_prefill_tiles() const { return false; }
  // Whether a decode step of this shape may be captured in a graph (false: the model
  // synchronizes with the host inside the step).
  virtual bool capturable(const StepShape& /*shape*/) const { return true; }
  // Grows the family's activations and scratch for `shape` (the KV cache is grown by the base);
  // reallocating anything a graph captured must call drop_graphs().
  virtual Status prepare_step(const StepShape& shape) = 0;
  // Enqueues every decoder layer on stream_ over hidden_ [n, hidden] (the embedded tokens),
  // calling observer(i + 1, ...) after layer i when set.
  virtual void enqueue_layers(const StepShape& shape, const StepInputs& in, const LayerObserver& observer) = 0;
  // MoE models: queue the copy of the step's routing decisions to the host (before the step's
  // final synchronization), then hand them to on_routing once the step has finished.
  virtual void queue_routing_copy(const StepShape& /*shape*/) {}
  virtual void report_routing(const RoutingObserver& /*on_routing*/, const StepShape& /*shape*/) {}

  // upload_matrix / upload_floats for the model's weights, adding what they hold on the device
  // to uploaded_bytes_ (the bytes a forward pass may read: the bench's byte counts come from
  // them, not from the checkpoint's format, which may be FP8 while the device holds bf16).
  // stacked_experts: read by the grouped expert kernels only, never through linear().
  Status upload(const std::vector<const Weight*>& parts, DeviceMatrix* out, bool stacked_experts = false);
  Status upload(const std::vector<const std::vector<float>*>& parts, DeviceBuffer<float>* out);
  static int64_t device_bytes(const DeviceMatrix& m);
  // Rows of quantized activations a step needs (FP8 models): the tokens, or more (MoE pairs).
  virtual int64_t fp8_activation_rows(const StepShape& shape) const { return shape.n; }
  // Quantizes x [n, K] into the step's FP8 activation scratch (scale rows ld >= n).
  Fp8Activations quantize_activations(const bf16* x, int64_t n, int64_t K, int64_t ld);
  // That scratch itself (fp8_activation_rows rows of the widest FP8 input, and their scales), for
  // layouts of a model's own.
  uint8_t* fp8_scratch_values() { return fp8_xq_.data(); }
  float* fp8_scratch_scales() { return fp8_xs_.data(); }

  // Binds model.embed_tokens, model.norm and lm_head (or the tied embedding) and uploads them.
  Status bind_embeddings(WeightBinder& binder, bool tie_word_embeddings, float norm_eps);
  // RoPE cos/sin of every position the model accepts, [max_positions, dim/2] each: computed
  // once at load, so a step sends no tables and computes none.
  Status upload_rope_tables(const RopeFrequencies& rope);

  // y (+)= x w^T (+ bias): the GEMV kernel for a few tokens, cuBLASLt beyond (FP8 matrices:
  // activations quantized per token per 128 channels first, W8A8).
  void linear(const DeviceMatrix& w, const bf16* x, int64_t n, const float* bias, bool accumulate, float* y);
  // y = rms_norm(hidden[rows]) w^T (+ bias) for n rows: the norm built inside the GEMV's prologue
  // when it fits there (decode), else by its own kernel into `normed`.
  void normed_linear(const DeviceMatrix& w, const float* hidden, const int32_t* rows, int64_t n, const float* norm_weight,
                     float eps, const float* bias, bf16* normed, float* y);
  // hidden += swiglu(rms_norm(hidden) gate_up^T) down^T (gate_up: [2I, H] gate rows then up
  // rows). Decode-sized steps make the SwiGLU input in one GEMV; bigger ones get gate and up out
  // of cuBLASLt as bf16. Scratch: normed [n, H], gate_up_f32 [min(n, 8), 2I], gate_up_bf16
  // [n, 2I] (n > 8), act [n, I].
  struct MlpScratch {
    bf16* normed;
    float* gate_up_f32;
    bf16* gate_up_bf16;
    bf16* act;
  };
  // input_normed: scratch.normed already holds rms_norm(hidden) * norm_weight for the n rows (an
  // MoE layer's shared experts read what its router read), so no path computes it again.
  void mlp(const DeviceMatrix& gate_up, const DeviceMatrix& down, const float* norm_weight, float eps, float* hidden, int64_t n,
           const MlpScratch& scratch, bool input_normed = false);
  // The paged KV cache on the device, per layer: rows of kv_layout().a_width and .b_width bf16
  // (keys and values, or c_kv and k_pe), grown to the pool's rows before each step.
  bf16* cache_a(int64_t layer) const { return cache_a_[static_cast<size_t>(layer)].data(); }
  bf16* cache_b(int64_t layer) const { return cache_b_[static_cast<size_t>(layer)].data(); }
  // Copies hidden [n, hidden] to the host and hands it to the observer (tests).
  void observe(const LayerObserver& observer, int64_t layer, const float* device_hidden, int64_t n);
  void drop_graphs();

  ModelInfo info_;
  int64_t uploaded_bytes_ = 0;     // weights held on the device (upload)
  int64_t uploaded_elements_ = 0;  // of which matrix elements (rows x cols of every DeviceMatrix)
  int64_t head_elements_ = 0;      // embedding table plus an untied lm_head (bind_embeddings)
  cudaStream_t stream_ = nullptr;
  LtGemm gemm_;
  DeviceBuffer<float> rope_cos_, rope_sin_;  // upload_rope_tables
  DeviceBuffer<float> hidden_;               // residual stream [n, hidden]
  // SEEKSERVE_CUDA_NO_FUSION=1: RMSNorm and SwiGLU as kernels of their own at every size (to
  // measure what folding them into the decode GEMVs saves).
  bool fuse_inputs_;

 private:
  Status ensure_outputs(int64_t n, int64_t n_logits);
  Status ensure_fp8_scratch(const StepShape& shape);
  void fp8_linear(const DeviceMatrix& w, const bf16* x, int64_t n, const float* bias, bool accumulate, float* y);
  // FP8 tensor-core GEMM of n > kGemvMaxTokens rows into fp8_out_ (bf16 [fp8_rows(n), w.rows]);
  // false when cuBLASLt has no block-scaled algorithm for a part (then the GEMV runs in chunks).
  bool fp8_gemm_available(const DeviceMatrix& w, int64_t n);
  const bf16* fp8_gemm(const DeviceMatrix& w, const bf16* x, int64_t n);
  // Grows every layer's cache to `rows`, keeping what the old rows hold (the pool's block
  // numbers stay valid).
  Status ensure_cache_rows(int64_t rows);
  // Enqueues embedding, layers, final norm, lm_head (and argmax) for the staged step.
  void enqueue_forward(const StepShape& shape, const LayerObserver& observer);
  // Runs enqueue_forward through a CUDA graph captured once per shape (decode steps), so a step
  // costs one launch instead of hundreds.
  void launch_graph(const StepShape& shape);

  // FP8 (W8A8) scratch: the widest FP8 input and the most rows any FP8 linear() writes (upload),
  // quantized activations, and the FP8 GEMM's bf16 output.
  int64_t fp8_max_cols_ = 0, fp8_max_linear_rows_ = 0;
  int64_t fp8_scratch_rows_ = 0, fp8_out_tokens_ = 0;
  DeviceBuffer<uint8_t> fp8_xq_;
  DeviceBuffer<float> fp8_xs_;
  DeviceBuffer<bf16> fp8_out_;

  std::vector<DeviceBuffer<bf16>> cache_a_, cache_b_;
  int64_t cache_rows_ = 0;

  DeviceMatrix embed_tokens_, lm_head_own_;
  const DeviceMatrix* lm_head_ = nullptr;  // lm_head_own_, or the embedding when tied
  DeviceBuffer<float> final_norm_;
  float norm_eps_ = 1e-6f;

  // Step inputs: one pinned staging area and its device copy, laid out by forward_batch.
  DeviceBuffer<uint8_t> step_;
  uint8_t* host_step_ = nullptr;
  size_t host_step_bytes_ = 0;
  float* host_logits_ = nullptr;
  size_t host_logits_floats_ = 0;

  int64_t hidden_tokens_ = 0, act_logits_ = 0;
  DeviceBuffer<float> logits_, observed_;
  DeviceBuffer<bf16> logit_normed_;
  DeviceBuffer<uint64_t> argmax_;  // argmax keys (kernels.h)
  uint64_t* host_argmax_ = nullptr;

  // SEEKSERVE_CUDA_STEP_TIMING=1: mean host time before the launch, device time of the launched
  // work (events) and the whole call, printed at exit (where a step's time goes).
  bool timing_;
  bool use_graphs_;  // SEEKSERVE_CUDA_NO_GRAPHS=1: direct launches, to compare
  cudaEvent_t timing_start_ = nullptr, timing_stop_ = nullptr;
  double host_ms_ = 0, device_ms_ = 0, call_ms_ = 0;
  int64_t timed_steps_ = 0;

  // Captured decode graphs by step shape; any buffer reallocation invalidates them all.
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, bool>, cudaGraphExec_t> graphs_;
};

// A family's model built from its config, its weights bound (make_cuda_dense, make_cuda_deepseek).
template <typename Model, typename Config>
Result<std::unique_ptr<CausalLM>> make_bound_model(Config config, ConfigReader& reader, WeightBinder& binder) {
  auto model = std::make_unique<Model>(std::move(config));
  SS_RETURN_IF_ERROR(model->bind(reader, binder));
  return std::unique_ptr<CausalLM>(std::move(model));
}

}  // namespace seekserve::cuda
