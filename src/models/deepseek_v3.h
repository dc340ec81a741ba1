// DeepSeek V3/R1 (DeepseekV3ForCausalLM) and V2/V2-Lite (DeepseekV2ForCausalLM): MLA attention,
// dense lead layers, then mixture-of-experts layers with shared experts.
#pragma once

#include <cstdint>

#include "layers/mla.h"
#include "layers/moe.h"
#include "model/hf_config.h"

namespace seekserve {

struct DeepseekConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;              // residual stream width
  int64_t n_layers = 0;                 // num_hidden_layers (MTP layers after them are ignored)
  int64_t intermediate_size = 0;        // width of the dense MLP in the lead layers
  int64_t first_k_dense_replace = 0;    // layers [0, k) are dense
  int64_t moe_layer_freq = 1;           // among the rest, layer i is MoE when i % freq == 0
  float rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = false;     // lm_head shares the embedding table
  RopeConfig rope;                      // rotary settings for the qk_rope_head_dim part
  MlaConfig mla;
  MoeConfig moe;                        // n_routed_experts == 0: every layer dense

  bool is_moe_layer(int64_t i) const {
    return moe.n_routed_experts > 0 && i >= first_k_dense_replace && i % moe_layer_freq == 0;
  }
};

// Reads a DeepSeek V2 or V3 config.json (hub or transformers 5 spelling); checks consistency.
DeepseekConfig read_deepseek_config(ConfigReader& config, bool v3);

}  // namespace seekserve
