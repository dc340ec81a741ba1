// Iteration-level scheduling: which sequences run in the next step and with how many tokens.
// Sees sequences, token counts and block ids only (no tensors): unit-testable with a fake model.
//
// Each step has a token budget. Running sequences decode one token each; sequences still
// prefilling get chunks of their prompt (chunked prefill), so a long prompt never stalls the
// decoders. Interactive work goes first and keeps at least `interactive_share` of the budget
// when batch work also waits; batch work fills the rest and any idle capacity. Batch sequences
// together hold at most `batch_kv_share` of the KV blocks. When blocks run out, the scheduler
// preempts (frees, to recompute later) the lowest-priority, most recently started batch
// sequence, and an interactive one only when no batch sequence holds blocks.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <vector>

#include "engine/block_manager.h"
#include "engine/sequence.h"

namespace seekserve {

struct SchedulerConfig {
  int64_t step_tokens = 512;          // tokens computed per step, all sequences together
  int64_t max_running = 64;           // sequences in the running set
  double interactive_share = 2.0 / 3.0;
  double batch_kv_share = 0.5;        // of the pool's blocks
  std::array<int64_t, 2> max_waiting = {256, 4096};  // per class: beyond this, admission refuses
  // Latency guard for compute-bound backends (CPUs): while interactive sequences decode, a step
  // holds at most this many tokens in all, so batch work cannot stretch their inter-token
  // latency. 0 = off (the share rule alone; right for bandwidth-bound GPUs).
  int64_t step_tokens_while_interactive_decodes = 0;
  int64_t max_context = 0;            // the model's positions; 0 = unlimited
};

// One sequence's share of a step.
struct ScheduledChunk {
  Sequence* sequence = nullptr;
  int64_t begin = 0;   // first token index to compute (== sequence->n_computed)
  int64_t n = 0;       // tokens to compute
  bool samples = false;  // the chunk reaches the end of the known tokens: sample the next one
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;
  std::vector<Sequence*> preempted;  // sequences that lost their blocks this step
  int64_t n_tokens() const {
    int64_t n = 0;
    for (const auto& c : chunks) n += c.n;
    return n;
  }
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, BlockManager* blocks);

  // Queues a sequence. kResourceExhausted when its class's waiting queue is full; kOutOfRange
  // when it could never run (context or the blocks its class may use).
  Status admit(Sequence* sequence);
  StepPlan schedule();
  // Releases a finished (or cancelled) sequence's blocks and forgets it.
  void finish(Sequence* sequence);
  // After a step ran: the chunks' tokens are in the cache; full blocks become cacheable.
  void on_step_done(const StepPlan& plan);

  int64_t n_waiting(RequestClass c) const { return static_cast<int64_t>(waiting_[static_cast<size_t>(c)].size()); }
  int64_t n_running(RequestClass c) const;
  int64_t batch_blocks() const;
  int64_t preemptions() const { return preemptions_; }
  const SchedulerConfig& config() const { return config_; }

 private:
  int64_t batch_block_quota() const;
  // Makes room for `need` more blocks for `for_seq`; preempts victims. False if impossible.
  bool reserve_blocks(Sequence* for_seq, int64_t need, StepPlan* plan);
  Sequence* pick_victim(const Sequence* for_seq, bool allow_interactive) const;
  void preempt(Sequence* victim, StepPlan* plan);
  void start(Sequence* seq);

  SchedulerConfig config_;
  BlockManager* blocks_;
  std::array<std::deque<Sequence*>, 2> waiting_;  // per class, admission order (preempted at front)
  std::vector<Sequence*> running_;
  int64_t next_arrival_ = 0, next_start_ = 0, preemptions_ = 0;
};

}  // namespace seekserve
