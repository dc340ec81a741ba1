#include "models/dense_decoder.h"

#include "layers/swiglu_mlp.h"
#include "models/model_loader.h"

namespace seekserve {

namespace {

class DenseDecoderLM final : public DecoderLM {
 public:
  DenseDecoderLM(DenseDecoderConfig config, std::shared_ptr<Backend> backend)
      : DecoderLM(std::move(backend), make_rope_frequencies(config.rope, config.attention.head_dim)),
        config_(std::move(config)) {}

  Status bind(ConfigReader& reader, WeightBinder& binder) {
    const DenseDecoderConfig& c = config_;
    read_common_info(reader, &info_);
    SS_RETURN_IF_ERROR(reader.status());
    norm_eps = c.rms_norm_eps;
    embed_tokens = binder.table("model.embed_tokens.weight", c.vocab_size, c.hidden_size);
    layers_.resize(static_cast<size_t>(c.n_layers));
    for (int64_t i = 0; i < c.n_layers && binder.status().ok(); ++i) {
      const std::string p = "model.layers." + std::to_string(i);
      Layer& layer = layers_[static_cast<size_t>(i)];
      layer.input_norm = binder.vector(p + ".input_layernorm.weight", c.hidden_size, 1.0f);
      layer.post_attention_norm = binder.vector(p + ".post_attention_layernorm.weight", c.hidden_size, 1.0f);
      layer.attention = bind_gqa(binder, p + ".self_attn", c.attention);
      layer.mlp = bind_mlp(binder, p + ".mlp", c.hidden_size, c.intermediate_size);
    }
    final_norm = binder.vector("model.norm.weight", c.hidden_size, 1.0f);
    lm_head = c.tie_word_embeddings ? embed_tokens : binder.linear("lm_head", c.vocab_size, c.hidden_size);
    SS_RETURN_IF_ERROR(binder.status());
    info_.weight_bytes = binder.bytes_bound();
    info_.embedding_bytes = embed_tokens.bytes();
    return Status::Ok();
  }

  KvLayout kv_layout() const override {
    const int64_t kv_width = config_.attention.n_kv_heads * config_.attention.head_dim;
    return {config_.n_layers, kv_width, kv_width};
  }

 protected:
  void run_layer(int64_t i, float* hidden, const ForwardContext& ctx, KvPool& /*pool*/) override {
    const Layer& layer = layers_[static_cast<size_t>(i)];
    const int64_t n = ctx.n_tokens, D = config_.hidden_size;
    std::vector<float> normed(static_cast<size_t>(n * D)), delta(static_cast<size_t>(n * D));
    backend_->rms_norm(hidden, D, layer.input_norm.data(), n, D, norm_eps, normed.data(), D);
    gqa_forward(*backend_, config_.attention, layer.attention, normed.data(), ctx, i, delta.data());
    backend_->add(delta.data(), n * D, hidden);
    backend_->rms_norm(hidden, D, layer.post_attention_norm.data(), n, D, norm_eps, normed.data(), D);
    swiglu_forward(*backend_, layer.mlp, normed.data(), n, delta.data());
    backend_->add(delta.data(), n * D, hidden);
  }

 private:
  struct Layer {
    std::vector<float> input_norm;           // [hidden]
    std::vector<float> post_attention_norm;  // [hidden]
    GqaWeights attention;
    MlpWeights mlp;
  };
  DenseDecoderConfig config_;
  std::vector<Layer> layers_;
};

}  // namespace

DenseDecoderConfig read_dense_decoder_config(ConfigReader& config) {
  DenseDecoderConfig c;
  c.vocab_size = config.require_int("vocab_size");
  c.hidden_size = config.require_int("hidden_size");
  c.n_layers = config.require_int("num_hidden_layers");
  c.intermediate_size = config.require_int("intermediate_size");
  c.rms_norm_eps = static_cast<float>(config.double_or("rms_norm_eps", 1e-6));
  c.tie_word_embeddings = config.bool_or("tie_word_embeddings", false);
  c.rope = read_rope_config(config);
  GqaConfig& a = c.attention;
  a.hidden_size = c.hidden_size;
  a.n_heads = config.require_int("num_attention_heads");
  a.n_kv_heads = config.int_or("num_key_value_heads", a.n_heads);
  if (a.n_heads > 0) a.head_dim = config.int_or("head_dim", c.hidden_size / a.n_heads);
  if (config.status().ok() &&
      (a.n_heads <= 0 || a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0 || a.head_dim <= 0 || a.head_dim % 2 != 0))
    config.fail("num_attention_heads must be a positive multiple of num_key_value_heads, head_dim positive and even");
  if (config.status().ok() && c.intermediate_size <= 0) config.fail("intermediate_size must be positive");
  return c;
}

Result<std::unique_ptr<CausalLM>> make_dense_decoder(DenseDecoderConfig config, ConfigReader& reader,
                                                     WeightBinder& binder, std::shared_ptr<Backend> backend) {
  SS_RETURN_IF_ERROR(reader.status());
  auto model = std::make_unique<DenseDecoderLM>(std::move(config), std::move(backend));
  SS_RETURN_IF_ERROR(model->bind(reader, binder));
  return std::unique_ptr<CausalLM>(std::move(model));
}

}  // namespace seekserve
