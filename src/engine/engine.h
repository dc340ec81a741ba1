// The batched engine: requests in, tokens out, many sequences per model call.
//
//   step():  plan = scheduler.schedule()        which sequences, how many tokens each
//            logits = runner.run(plan)          one batched forward pass
//            scheduler.on_step_done(plan)       tokens are cached; full blocks become reusable
//            sample, append, check stops        per sequence, each with its own RNG
//
// One thread owns an Engine (it is not thread-safe); the server puts queues in front of it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/block_manager.h"
#include "engine/scheduler.h"
#include "models/causal_lm.h"

namespace seekserve {

struct EngineConfig {
  int64_t kv_budget_bytes = int64_t{256} << 20;  // KV pool size; blocks = budget / bytes per block
  int64_t block_size = 16;                       // tokens per KV block
  SchedulerConfig scheduler;
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

// What one step produced for one request.
struct TokenOutput {
  int64_t request_id = 0;
  int32_t token = -1;                  // -1 when the request ended without a new token
  float logprob = 0.0f;                // when the request asked for logprobs
  std::vector<TokenLogprob> top_logprobs;
  bool finished = false;
  std::string finish_reason;           // "length", "stop", "cancelled", "error"
  // Set when finished: seconds from admission to first schedule / first token / end, and the
  // mean time between consecutive generated tokens.
  double queue_seconds = 0.0, first_token_seconds = 0.0, total_seconds = 0.0, mean_inter_token_seconds = 0.0;
};

struct EngineStats {
  std::array<int64_t, 2> running{}, waiting{};  // per class
  int64_t kv_blocks_total = 0, kv_blocks_used = 0;
  int64_t prefix_queries = 0, prefix_hits = 0;  // in blocks
  int64_t preemptions = 0;
  int64_t steps = 0;
  int64_t prompt_tokens_computed = 0, generated_tokens = 0;
  double kv_usage() const { return kv_blocks_total ? static_cast<double>(kv_blocks_used) / static_cast<double>(kv_blocks_total) : 0.0; }
};

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> create(CausalLM* model, EngineConfig config);

  // Validates and queues a request; returns its id. kResourceExhausted when the class's queue is
  // full, kOutOfRange / kInvalidArgument when the request could never run.
  Result<int64_t> add_request(Request request);
  // Runs one step; returns the tokens produced and the requests that ended.
  std::vector<TokenOutput> step();
  // Ends a request at the next step (its blocks are freed; a final output says "cancelled").
  void cancel(int64_t request_id);
  bool has_work() const { return !sequences_.empty(); }
  EngineStats stats() const;
  // "N blocks of B tokens (T tokens, X MiB)".
  std::string describe_pool() const;
  const CausalLM& model() const { return *model_; }

 private:
  Engine(CausalLM* model, EngineConfig config, int64_t n_blocks);
  void sample_into(Sequence* seq, const float* logits, TokenOutput* out);
  bool check_stop(Sequence* seq, int32_t token);
  TokenOutput finish(Sequence* seq, const std::string& reason);

  CausalLM* model_;
  EngineConfig config_;
  KvPool pool_;
  BlockManager blocks_;
  Scheduler scheduler_;
  std::map<int64_t, std::unique_ptr<Sequence>> sequences_;  // live requests by id
  std::vector<int64_t> cancelled_;
  int64_t next_id_ = 0;
  EngineStats counters_;
  std::vector<float> logits_;
  std::vector<int32_t> greedy_tokens_;  // argmax per sampling row, when the model returned those
};

// Applies presence/frequency/repetition penalties for `seq` to logits [vocab] in place.
void apply_penalties(const Sequence& seq, float* logits, int64_t vocab);

}  // namespace seekserve
