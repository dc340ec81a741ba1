// Llama (LlamaForCausalLM; the R1-Distill-Llama models): the dense decoder, optional attention
// biases, Llama 3 RoPE scaling through the shared rope config.
#include "models/dense_decoder.h"
#include "models/model_loader.h"

namespace seekserve {

DenseDecoderConfig read_llama_config(ConfigReader& config) {
  DenseDecoderConfig c = read_dense_decoder_config(config);
  c.attention.qkv_bias = config.bool_or("attention_bias", false);
  c.attention.o_bias = c.attention.qkv_bias;  // transformers' Llama puts the bias on all four
  if (config.bool_or("mlp_bias", false)) config.fail("mlp_bias: true is not supported");
  return c;
}

Result<std::unique_ptr<CausalLM>> make_llama(ConfigReader& config, WeightBinder& binder, std::shared_ptr<Backend> backend) {
  return make_dense_decoder(read_llama_config(config), config, binder, std::move(backend));
}

}  // namespace seekserve
