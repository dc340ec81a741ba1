// `generate --batch-file`: a JSONL file of requests through the batched engine.
#pragma once

#include <string>

#include "engine/engine.h"

namespace seekserve {

struct BatchFileOptions {
  std::string path;           // one JSON object a line: prompt_ids, max_tokens, temperature, seed, ...
  EngineConfig engine;
  SamplingParams defaults;    // for fields a line leaves out
};

// Prints {"index", "tokens", "finish_reason"} (or {"index", "error"}) per request, in input order.
int run_batch_file(CausalLM& model, const BatchFileOptions& options);

}  // namespace seekserve
