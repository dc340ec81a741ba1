#include "models/deepseek_v3.h"

#include "layers/swiglu_mlp.h"
#include "models/model_loader.h"

namespace seekserve {

namespace {

MoeScoring parse_scoring(ConfigReader& config, const std::string& value) {
  if (value == "softmax") return MoeScoring::kSoftmax;
  if (value != "sigmoid") config.fail("unsupported scoring_func '" + value + "' (supported: softmax, sigmoid)");
  return MoeScoring::kSigmoid;
}

MoeTopkMethod parse_topk_method(ConfigReader& config, const std::string& value) {
  if (value == "greedy") return MoeTopkMethod::kGreedy;
  if (value == "group_limited_greedy") return MoeTopkMethod::kGroupLimitedGreedy;
  if (value != "noaux_tc")
    config.fail("unsupported topk_method '" + value + "' (supported: greedy, group_limited_greedy, noaux_tc)");
  return MoeTopkMethod::kNoauxTc;
}

void check_consistency(ConfigReader& config, const DeepseekConfig& c) {
  const MlaConfig& m = c.mla;
  if (m.n_heads <= 0 || m.kv_lora_rank <= 0 || m.qk_nope_head_dim <= 0 || m.v_head_dim <= 0 ||
      m.qk_rope_head_dim <= 0 || m.qk_rope_head_dim % 2 != 0)
    config.fail("attention dimensions must be positive and qk_rope_head_dim even");
  if (c.intermediate_size <= 0) config.fail("intermediate_size must be positive");
  if (c.moe_layer_freq <= 0) config.fail("moe_layer_freq must be positive");
  const MoeConfig& e = c.moe;
  if (e.n_routed_experts == 0) return;
  if (e.n_group <= 0 || e.n_routed_experts % e.n_group != 0)
    config.fail("n_routed_experts must split into n_group equal groups");
  else if (e.topk_group <= 0 || e.topk_group > e.n_group)
    config.fail("topk_group must be in [1, n_group]");
  else if (e.top_k <= 0 || e.top_k > e.topk_group * (e.n_routed_experts / e.n_group))
    config.fail("num_experts_per_tok must be in [1, experts in the kept groups]");
  if (e.moe_intermediate_size <= 0) config.fail("moe_intermediate_size must be positive");
}

class DeepseekLM final : public DecoderLM {
 public:
  DeepseekLM(DeepseekConfig config, std::shared_ptr<Backend> backend)
      : DecoderLM(std::move(backend), make_rope_frequencies(config.rope, config.mla.qk_rope_head_dim)),
        config_(std::move(config)) {}

  Status bind(ConfigReader& reader, WeightBinder& binder) {
    const DeepseekConfig& c = config_;
    read_common_info(reader, &info_);
    SS_RETURN_IF_ERROR(reader.status());
    norm_eps = c.rms_norm_eps;
    embed_tokens = binder.table("model.embed_tokens.weight", c.vocab_size, c.hidden_size);
    layers_.resize(static_cast<size_t>(c.n_layers));
    for (int64_t i = 0; i < c.n_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i);
      Layer& layer = layers_[static_cast<size_t>(i)];
      layer.input_norm = binder.vector(p + ".input_layernorm.weight", c.hidden_size, 1.0f);
      layer.post_attention_norm = binder.vector(p + ".post_attention_layernorm.weight", c.hidden_size, 1.0f);
      layer.attention = bind_mla(binder, p + ".self_attn", c.mla);
      if (c.is_moe_layer(i)) layer.moe = bind_moe(binder, p + ".mlp", c.moe);
      else layer.mlp = bind_mlp(binder, p + ".mlp", c.hidden_size, c.intermediate_size);
      if (!binder.status().ok()) break;
    }
    final_norm = binder.vector("model.norm.weight", c.hidden_size, 1.0f);
    lm_head = c.tie_word_embeddings ? embed_tokens : binder.linear("lm_head", c.vocab_size, c.hidden_size);
    SS_RETURN_IF_ERROR(binder.status());
    info_.weight_bytes = binder.bytes_bound();
    info_.embedding_bytes = embed_tokens.bytes();
    info_.n_routed_experts = c.moe.n_routed_experts;
    for (int64_t i = 0; i < c.n_layers; ++i) {
      if (!c.is_moe_layer(i)) continue;
      ++info_.n_moe_layers;
      for (const MlpWeights& e : layers_[static_cast<size_t>(i)].moe.experts) info_.expert_bytes += e.gate.bytes() + e.up.bytes() + e.down.bytes();
    }
    return Status::Ok();
  }

  KvLayout kv_layout() const override { return {config_.n_layers, config_.mla.kv_lora_rank, config_.mla.qk_rope_head_dim}; }

 protected:
  // x = x + attn(norm(x)); x = x + mlp_or_moe(norm(x))
  void run_layer(int64_t i, float* hidden, const ForwardContext& ctx, KvPool& /*pool*/) override {
    const Layer& layer = layers_[static_cast<size_t>(i)];
    const int64_t n = ctx.n_tokens, D = config_.hidden_size;
    std::vector<float> normed(static_cast<size_t>(n * D)), delta(static_cast<size_t>(n * D));
    backend_->rms_norm(hidden, D, layer.input_norm.data(), n, D, norm_eps, normed.data(), D);
    mla_forward(*backend_, config_.mla, layer.attention, normed.data(), ctx, i, delta.data());
    backend_->add(delta.data(), n * D, hidden);
    backend_->rms_norm(hidden, D, layer.post_attention_norm.data(), n, D, norm_eps, normed.data(), D);
    if (config_.is_moe_layer(i)) moe_forward(*backend_, config_.moe, layer.moe, normed.data(), ctx, i, delta.data());
    else swiglu_forward(*backend_, layer.mlp, normed.data(), n, delta.data());
    backend_->add(delta.data(), n * D, hidden);
  }

 private:
  struct Layer {
    std::vector<float> input_norm;           // [hidden]
    std::vector<float> post_attention_norm;  // [hidden]
    MlaWeights attention;
    MlpWeights mlp;                          // dense layers
    MoeWeights moe;                          // MoE layers
  };
  DeepseekConfig config_;
  std::vector<Layer> layers_;
};

}  // namespace

DeepseekConfig read_deepseek_config(ConfigReader& config, bool v3) {
  DeepseekConfig c;
  c.vocab_size = config.require_int("vocab_size");
  c.hidden_size = config.require_int("hidden_size");
  c.n_layers = config.require_int("num_hidden_layers");
  c.intermediate_size = config.require_int("intermediate_size");
  c.first_k_dense_replace = config.int_or("first_k_dense_replace", 0);
  c.moe_layer_freq = config.int_or("moe_layer_freq", 1);
  c.rms_norm_eps = static_cast<float>(config.double_or("rms_norm_eps", 1e-6));
  c.tie_word_embeddings = config.bool_or("tie_word_embeddings", false);
  c.rope = read_rope_config(config);

  MlaConfig& m = c.mla;
  m.hidden_size = c.hidden_size;
  m.n_heads = config.require_int("num_attention_heads");
  m.q_lora_rank = config.int_or("q_lora_rank", 0);
  m.kv_lora_rank = config.require_int("kv_lora_rank");
  m.qk_nope_head_dim = config.require_int("qk_nope_head_dim");
  m.qk_rope_head_dim = config.require_int("qk_rope_head_dim");
  m.v_head_dim = config.require_int("v_head_dim");
  m.norm_eps = c.rms_norm_eps;
  double scale = 1.0 / std::sqrt(static_cast<double>(m.q_head_dim()));
  if (c.rope.scaling == RopeScaling::kYarn && c.rope.mscale_all_dim != 0.0) {
    const double mscale = yarn_mscale(c.rope.factor, c.rope.mscale_all_dim);
    scale *= mscale * mscale;
  }
  m.softmax_scale = static_cast<float>(scale);

  MoeConfig& e = c.moe;
  e.hidden_size = c.hidden_size;
  e.n_routed_experts = config.int_or("n_routed_experts", 0);
  e.top_k = config.int_or("num_experts_per_tok", 0);
  e.n_group = config.int_or("n_group", 1);
  e.topk_group = config.int_or("topk_group", 1);
  e.scoring = parse_scoring(config, config.string_or("scoring_func", v3 ? "sigmoid" : "softmax"));
  e.topk_method = parse_topk_method(config, config.string_or("topk_method", v3 ? "noaux_tc" : "greedy"));
  e.norm_topk_prob = config.bool_or("norm_topk_prob", false);
  e.routed_scaling_factor = static_cast<float>(config.double_or("routed_scaling_factor", 1.0));
  e.moe_intermediate_size = config.int_or("moe_intermediate_size", 0);
  e.n_shared_experts = config.int_or("n_shared_experts", 0);
  if (config.status().ok()) check_consistency(config, c);
  return c;
}

Result<std::unique_ptr<CausalLM>> make_deepseek(ConfigReader& config, WeightBinder& binder, std::shared_ptr<Backend> backend) {
  const bool v3 = config_architecture(config).value() == "DeepseekV3ForCausalLM";
  DeepseekConfig c = read_deepseek_config(config, v3);
  SS_RETURN_IF_ERROR(config.status());
  auto model = std::make_unique<DeepseekLM>(std::move(c), std::move(backend));
  SS_RETURN_IF_ERROR(model->bind(config, binder));
  return std::unique_ptr<CausalLM>(std::move(model));
}

}  // namespace seekserve
