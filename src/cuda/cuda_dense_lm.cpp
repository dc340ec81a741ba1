#include "cuda/cuda_dense_lm.h"

#include <cmath>
#include <vector>

#include "cuda/cuda_causal_lm.h"
#include "layers/swiglu_mlp.h"
#include "models/dense_decoder.h"
#include "models/model_loader.h"

namespace seekserve::cuda {

namespace {

class CudaDenseLM final : public CudaCausalLM {
 public:
  explicit CudaDenseLM(DenseDecoderConfig config)
      : config_(std::move(config)), rope_(make_rope_frequencies(config_.rope, config_.attention.head_dim)) {}

  Status bind(ConfigReader& reader, WeightBinder& binder);

  KvLayout kv_layout() const override {
    const int64_t width = config_.attention.n_kv_heads * config_.attention.head_dim;
    KvLayout layout{config_.n_layers, width, width};
    layout.element_bytes = 2;
    layout.on_device = true;
    return layout;
  }

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

  bool uses_prefill_tiles() const override { return attention_prefill_supported(config_.attention.head_dim); }
  Status prepare_step(const StepShape& shape) override;
  void enqueue_layers(const StepShape& shape, const StepInputs& in, const LayerObserver& observer) override;

  DenseDecoderConfig config_;
  RopeFrequencies rope_;
  std::vector<Layer> layers_;

  // Activations, grow-only.
  int64_t act_tokens_ = 0;
  DeviceBuffer<float> qkv_, gate_up_;
  DeviceBuffer<bf16> normed_, attn_out_, act_;
  DeviceBuffer<bf16> gate_up_bf16_;   // [n, 2I] gate|up of GEMM-sized steps (gate_up_: GEMV-sized, float)
  DeviceBuffer<float> partial_;       // split-KV attention slices (kernels.h)
  DeviceBuffer<int> split_counters_;  // split-KV slices finished per (token, KV head), kept zero between steps
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
  SS_RETURN_IF_ERROR(bind_embeddings(binder, c.tie_word_embeddings, c.rms_norm_eps));
  layers_.resize(static_cast<size_t>(c.n_layers));
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    Layer& layer = layers_[static_cast<size_t>(i)];
    const std::vector<float> in_norm = binder.vector(p + ".input_layernorm.weight", c.hidden_size, 1.0f);
    const std::vector<float> post_norm = binder.vector(p + ".post_attention_layernorm.weight", c.hidden_size, 1.0f);
    const GqaWeights attn = bind_gqa(binder, p + ".self_attn", a);
    const MlpWeights mlp = bind_mlp(binder, p + ".mlp", c.hidden_size, c.intermediate_size);
    SS_RETURN_IF_ERROR(binder.status());
    SS_RETURN_IF_ERROR(upload({&in_norm}, &layer.input_norm));
    SS_RETURN_IF_ERROR(upload({&post_norm}, &layer.post_attention_norm));
    SS_RETURN_IF_ERROR(upload({&attn.q_proj, &attn.k_proj, &attn.v_proj}, &layer.qkv));
    SS_RETURN_IF_ERROR(upload({&attn.q_bias, &attn.k_bias, &attn.v_bias}, &layer.qkv_bias));
    SS_RETURN_IF_ERROR(upload({&attn.o_proj}, &layer.o));
    SS_RETURN_IF_ERROR(upload({&attn.o_bias}, &layer.o_bias));
    SS_RETURN_IF_ERROR(upload({&mlp.gate, &mlp.up}, &layer.gate_up));
    SS_RETURN_IF_ERROR(upload({&mlp.down}, &layer.down));
  }
  info_.weight_bytes = uploaded_bytes_;  // as held on the device (bf16), whatever the checkpoint format
  info_.matmul_flops_per_token = 2 * (uploaded_elements_ - head_elements_);
  info_.attention_flops_per_pair = 4 * a.n_heads * a.head_dim * c.n_layers;  // 2 for q.k, 2 for p.v, per head dim
  SS_RETURN_IF_ERROR(upload_rope_tables(rope_));
  return Status::Ok();
}

Status CudaDenseLM::prepare_step(const StepShape& shape) {
  const DenseDecoderConfig& c = config_;
  const GqaConfig& a = c.attention;
  const int64_t n = shape.n;
  if (n > act_tokens_) {
    const auto N = static_cast<size_t>(n);
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
  if (shape.n_tiles == 0) {  // split-KV scratch of the decode attention
    const int64_t splits = attention_splits(shape.n, a.n_kv_heads, shape.table_stride * shape.block_size);
    const auto need = static_cast<size_t>(attention_partial_floats(shape.n, a.n_heads, splits, a.head_dim));
    if (need > partial_.size()) {
      SS_RETURN_IF_ERROR(partial_.reserve(need));
      drop_graphs();
    }
  }
  return Status::Ok();
}

void CudaDenseLM::enqueue_layers(const StepShape& shape, const StepInputs& in, const LayerObserver& observer) {
  const DenseDecoderConfig& c = config_;
  const GqaConfig& a = c.attention;
  const int64_t n = shape.n, D = a.head_dim;
  float* hidden = hidden_.data();
  const int64_t qkv_width = (a.n_heads + 2 * a.n_kv_heads) * D;
  const bool interleaved = false;  // Qwen2 and Llama rotate half-split pairs
  const MlpScratch scratch{normed_.data(), gate_up_.data(), gate_up_bf16_.data(), act_.data()};
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const Layer& layer = layers_[static_cast<size_t>(i)];
    bf16* k_cache = cache_a(i);  // [rows, Hkv * D]
    bf16* v_cache = cache_b(i);
    normed_linear(layer.qkv, hidden, nullptr, n, layer.input_norm.data(), c.rms_norm_eps,
                  layer.qkv_bias.size() ? layer.qkv_bias.data() : nullptr, normed_.data(), qkv_.data());
    // Decode steps rotate and cache inside the attention kernel; prefill does it for all rows first.
    const bool fused_rope = shape.n_tiles == 0 && shape.decode();
    if (!fused_rope)
      rope_and_cache(qkv_.data(), n, a.n_heads, a.n_kv_heads, D, rope_cos_.data(), rope_sin_.data(), in.positions, interleaved, in.slots,
                     k_cache, v_cache, stream_);
    AttentionParams p;
    p.q = qkv_.data();
    p.q_stride = qkv_width;
    p.k_pool = k_cache;
    p.v_pool = v_cache;
    p.block_tables = in.tables;
    p.table_stride = shape.table_stride;
    p.token_seq = in.token_seq;
    p.positions = in.positions;
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
      p.rope_cos = rope_cos_.data();
      p.rope_sin = rope_sin_.data();
      p.rope_interleaved = interleaved;
      p.slots = in.slots;
    }
    if (shape.n_tiles > 0) attention_prefill(p, in.tiles, shape.n_tiles, stream_);
    else attention(p, stream_);
    linear(layer.o, attn_out_.data(), n, layer.o_bias.size() ? layer.o_bias.data() : nullptr, true, hidden);
    mlp(layer.gate_up, layer.down, layer.post_attention_norm.data(), c.rms_norm_eps, hidden, n, scratch);
    if (observer) observe(observer, i + 1, hidden, n);
  }
}

}  // namespace

Result<std::unique_ptr<CausalLM>> make_cuda_dense(DenseDecoderConfig config, ConfigReader& reader, WeightBinder& binder) {
  return make_bound_model<CudaDenseLM>(std::move(config), reader, binder);
}

}  // namespace seekserve::cuda
