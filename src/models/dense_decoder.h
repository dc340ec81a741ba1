// The pre-norm dense decoder shared by Qwen2 and Llama: x += attn(norm(x)); x += mlp(norm(x)),
// with grouped-query attention and half-split RoPE. The family files (qwen2.cpp, llama.cpp)
// read their config into DenseDecoderConfig; the forward pass is identical.
#pragma once

#include <memory>
#include <string>

#include "layers/gqa_attention.h"
#include "model/hf_config.h"
#include "model/weight_binder.h"

namespace seekserve {

struct DenseDecoderConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t n_layers = 0;
  int64_t intermediate_size = 0;  // SwiGLU width
  float rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = false;
  RopeConfig rope;                // rotates the whole head_dim
  GqaConfig attention;
};

// Binds weights (hub tensor names) and returns the model; errors name the tensor.
Result<std::unique_ptr<CausalLM>> make_dense_decoder(DenseDecoderConfig config, ConfigReader& reader,
                                                     WeightBinder& binder, std::shared_ptr<Backend> backend);

// Fields Qwen2 and Llama spell the same way; the family files add their own.
DenseDecoderConfig read_dense_decoder_config(ConfigReader& config);
// The whole config of each dense family (qwen2.cpp, llama.cpp).
DenseDecoderConfig read_qwen2_config(ConfigReader& config);
DenseDecoderConfig read_llama_config(ConfigReader& config);

}  // namespace seekserve
