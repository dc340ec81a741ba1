// The SwiGLU MLP used by dense layers and shared experts: down(silu(gate(x)) * up(x)).
#pragma once

#include <string>

#include "backend/backend.h"
#include "model/weight_binder.h"

namespace seekserve {

// Binds <prefix>.{gate,up,down}_proj for an MLP of width `intermediate`.
MlpWeights bind_mlp(WeightBinder& binder, const std::string& prefix, int64_t hidden, int64_t intermediate);

// out[t] = mlp(x[t]) for x, out: [n_tokens, hidden]. out may not alias x.
void swiglu_forward(Backend& backend, const MlpWeights& w, const float* x, int64_t n_tokens, float* out);

}  // namespace seekserve
