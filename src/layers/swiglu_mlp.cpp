#include "layers/swiglu_mlp.h"

#include <vector>

namespace seekserve {

MlpWeights bind_mlp(WeightBinder& binder, const std::string& prefix, int64_t hidden, int64_t intermediate) {
  MlpWeights w;
  w.gate = binder.linear(prefix + ".gate_proj", intermediate, hidden);
  w.up = binder.linear(prefix + ".up_proj", intermediate, hidden);
  w.down = binder.linear(prefix + ".down_proj", hidden, intermediate);
  return w;
}

void swiglu_forward(Backend& backend, const MlpWeights& w, const float* x, int64_t n_tokens, float* out) {
  const int64_t hidden = w.gate.cols, inter = w.gate.rows;
  std::vector<float> gate(static_cast<size_t>(n_tokens * inter)), up(static_cast<size_t>(n_tokens * inter));
  backend.matmul(w.gate, x, hidden, n_tokens, gate.data(), inter);
  backend.matmul(w.up, x, hidden, n_tokens, up.data(), inter);
  backend.silu_mul(gate.data(), up.data(), n_tokens * inter, gate.data());
  backend.matmul(w.down, gate.data(), inter, n_tokens, out, hidden);
}

}  // namespace seekserve
