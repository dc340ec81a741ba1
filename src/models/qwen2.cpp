// Qwen2 (Qwen2ForCausalLM; the R1-Distill-Qwen models): the dense decoder with q/k/v biases.
#include "models/dense_decoder.h"
#include "models/model_loader.h"

namespace seekserve {

DenseDecoderConfig read_qwen2_config(ConfigReader& config) {
  DenseDecoderConfig c = read_dense_decoder_config(config);
  c.attention.qkv_bias = true;  // Qwen2 always carries q/k/v biases, and never an o_proj bias
  if (config.bool_or("use_sliding_window", false))
    config.fail("use_sliding_window: true is not supported (sliding-window attention)");
  return c;
}

Result<std::unique_ptr<CausalLM>> make_qwen2(ConfigReader& config, WeightBinder& binder, std::shared_ptr<Backend> backend) {
  return make_dense_decoder(read_qwen2_config(config), config, binder, std::move(backend));
}

}  // namespace seekserve
