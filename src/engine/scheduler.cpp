#include "engine/scheduler.h"

#include <algorithm>
#include <cmath>

namespace seekserve {

const char* request_class_name(RequestClass c) { return c == RequestClass::kBatch ? "batch" : "interactive"; }

namespace {

// Scheduling order within a class: higher priority first, then first come first served.
bool runs_before(const Sequence* a, const Sequence* b) {
  if (a->request.priority != b->request.priority) return a->request.priority > b->request.priority;
  return a->arrival < b->arrival;
}

// Preemption order: the lower priority, then the most recently started, goes first.
bool worse_victim(const Sequence* a, const Sequence* b) {
  if (a->request.priority != b->request.priority) return a->request.priority < b->request.priority;
  return a->started > b->started;
}

}  // namespace

Scheduler::Scheduler(SchedulerConfig config, BlockManager* blocks) : config_(config), blocks_(blocks) {
  SS_CHECK(config_.step_tokens > 0 && config_.max_running > 0, "scheduler budgets must be positive");
}

int64_t Scheduler::batch_block_quota() const {
  return static_cast<int64_t>(std::floor(config_.batch_kv_share * static_cast<double>(blocks_->n_blocks())));
}

int64_t Scheduler::n_running(RequestClass c) const {
  return std::count_if(running_.begin(), running_.end(), [&](const Sequence* s) { return s->request.request_class == c; });
}

int64_t Scheduler::batch_blocks() const {
  int64_t n = 0;
  for (const Sequence* s : running_)
    if (s->is_batch()) n += static_cast<int64_t>(s->block_table.size());
  return n;
}

Status Scheduler::admit(Sequence* seq) {
  const size_t cls = static_cast<size_t>(seq->request.request_class);
  const int64_t total = static_cast<int64_t>(seq->tokens.size()) + seq->request.max_tokens - seq->n_generated();
  if (config_.max_context > 0 && total > config_.max_context)
    return out_of_range("prompt (" + std::to_string(seq->n_prompt) + " tokens) plus max_tokens (" +
                        std::to_string(seq->request.max_tokens) + ") exceeds the context of " +
                        std::to_string(config_.max_context) + " tokens");
  const int64_t limit = seq->is_batch() ? batch_block_quota() : blocks_->n_blocks();
  if (blocks_->blocks_for(total) > limit)
    return out_of_range("the request needs " + std::to_string(blocks_->blocks_for(total)) + " KV blocks but " +
                        request_class_name(seq->request.request_class) + " requests may use at most " +
                        std::to_string(limit) + " of the pool (" + std::to_string(limit * blocks_->block_size()) + " tokens)");
  if (static_cast<int64_t>(waiting_[cls].size()) >= config_.max_waiting[cls])
    return Status(StatusCode::kResourceExhausted, std::string("the ") + request_class_name(seq->request.request_class) +
                                                      " waiting queue is full (" + std::to_string(config_.max_waiting[cls]) + ")");
  seq->arrival = next_arrival_++;
  seq->status = SequenceStatus::kWaiting;
  waiting_[cls].push_back(seq);
  return Status::Ok();
}

void Scheduler::start(Sequence* seq) {
  auto& queue = waiting_[static_cast<size_t>(seq->request.request_class)];
  queue.erase(std::find(queue.begin(), queue.end(), seq));
  seq->status = SequenceStatus::kRunning;
  seq->started = next_start_++;
  running_.push_back(seq);
}

void Scheduler::preempt(Sequence* victim, StepPlan* plan) {
  blocks_->release(&victim->block_table);
  victim->n_computed = 0;
  victim->n_cached_blocks = 0;
  victim->status = SequenceStatus::kWaiting;
  ++victim->preemptions;
  ++preemptions_;
  running_.erase(std::find(running_.begin(), running_.end(), victim));
  // Back to the front of its queue: it resumes (recomputing its tokens) before newer work.
  waiting_[static_cast<size_t>(victim->request.request_class)].push_front(victim);
  std::erase_if(plan->chunks, [&](const ScheduledChunk& c) { return c.sequence == victim; });
  plan->preempted.push_back(victim);
}

Sequence* Scheduler::pick_victim(const Sequence* for_seq, bool allow_interactive) const {
  Sequence* victim = nullptr;
  for (Sequence* s : running_) {
    if (s == for_seq || s->block_table.empty()) continue;
    if (s->is_batch() != true && !allow_interactive) continue;
    if (victim == nullptr || (victim->is_batch() == s->is_batch() ? worse_victim(s, victim) : s->is_batch()))
      victim = s;
  }
  return victim;
}

bool Scheduler::reserve_blocks(Sequence* seq, int64_t need, StepPlan* plan) {
  while (blocks_->available() < need) {
    const bool any_batch_holds = std::any_of(running_.begin(), running_.end(),
                                             [&](const Sequence* s) { return s != seq && s->is_batch() && !s->block_table.empty(); });
    // Batch work never displaces interactive work; interactive displaces interactive only when
    // no batch sequence holds blocks.
    Sequence* victim = pick_victim(seq, /*allow_interactive=*/!seq->is_batch() && !any_batch_holds);
    if (victim == nullptr) return false;
    // Never preempt work that should run before the requester.
    if (victim->is_batch() == seq->is_batch() && !worse_victim(victim, seq)) return false;
    preempt(victim, plan);
  }
  return true;
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  // Demand per class: tokens that could run this step.
  std::array<int64_t, 2> demand = {0, 0};
  for (const Sequence* s : running_) demand[static_cast<size_t>(s->request.request_class)] += s->pending();
  for (size_t c = 0; c < 2; ++c)
    for (const Sequence* s : waiting_[c]) demand[c] += s->pending();
  int64_t B = config_.step_tokens;
  const bool interactive_decoding = std::any_of(running_.begin(), running_.end(), [](const Sequence* s) {
    return !s->is_batch() && s->n_generated() > 0 && s->pending() == 1;
  });
  if (interactive_decoding && config_.step_tokens_while_interactive_decodes > 0)
    B = std::min(B, std::max(config_.step_tokens_while_interactive_decodes, n_running(RequestClass::kInteractive)));
  std::array<int64_t, 2> budget = {B, B};
  if (demand[0] > 0 && demand[1] > 0) {
    const int64_t guaranteed = static_cast<int64_t>(std::ceil(config_.interactive_share * static_cast<double>(B)));
    budget[0] = std::max(guaranteed, B - demand[1]);
    budget[1] = B - std::min(demand[0], budget[0]);
  }
  int64_t total_left = B;

  // Candidates: interactive before batch; running before waiting; then priority and arrival.
  std::vector<Sequence*> order;
  for (RequestClass cls : {RequestClass::kInteractive, RequestClass::kBatch}) {
    std::vector<Sequence*> run, wait(waiting_[static_cast<size_t>(cls)].begin(), waiting_[static_cast<size_t>(cls)].end());
    for (Sequence* s : running_)
      if (s->request.request_class == cls) run.push_back(s);
    std::stable_sort(run.begin(), run.end(), runs_before);
    std::stable_sort(wait.begin(), wait.end(), runs_before);
    order.insert(order.end(), run.begin(), run.end());
    order.insert(order.end(), wait.begin(), wait.end());
  }

  for (Sequence* seq : order) {
    if (seq->status == SequenceStatus::kFinished) continue;
    // A sequence preempted earlier in this loop is back in a queue; it waits for the next step.
    const bool running = seq->status == SequenceStatus::kRunning;
    if (!running && std::find(plan.preempted.begin(), plan.preempted.end(), seq) != plan.preempted.end()) continue;
    const size_t cls = static_cast<size_t>(seq->request.request_class);
    int64_t allowance = std::min(budget[cls], total_left);
    if (allowance <= 0 || seq->pending() <= 0) continue;
    if (!running && static_cast<int64_t>(running_.size()) >= config_.max_running) continue;

    std::vector<int32_t> matched;
    int64_t cached_tokens = 0;
    if (!running && seq->block_table.empty()) {
      // Reuse a cached prefix; the last known token is always computed (its logits sample).
      cached_tokens = blocks_->match_prefix(seq->tokens, static_cast<int64_t>(seq->tokens.size()) - 1, &matched);
    }
    const int64_t computed = running ? seq->n_computed : cached_tokens;
    int64_t n = std::min<int64_t>(static_cast<int64_t>(seq->tokens.size()) - computed, allowance);
    const int64_t have = running ? static_cast<int64_t>(seq->block_table.size()) : static_cast<int64_t>(matched.size());
    int64_t need = blocks_->blocks_for(computed + n) - have;
    if (seq->is_batch() && need > 0) {
      // Batch work stays within its share of the pool: shrink the chunk to what fits.
      const int64_t room = batch_block_quota() - batch_blocks() - (running ? 0 : have);
      if (need > room) {
        n = std::max<int64_t>(0, std::min(n, (have + std::max<int64_t>(room, 0)) * blocks_->block_size() - computed));
        need = blocks_->blocks_for(computed + n) - have;
      }
    }
    if (n > 0 && need > 0 && !reserve_blocks(seq, need, &plan)) n = 0;
    if (n <= 0) {
      if (!running) {
        blocks_->release(&matched);
        continue;
      }
      // A running sequence that cannot grow gives its blocks back and waits.
      if (seq->pending() > 0 && static_cast<int64_t>(seq->block_table.size()) * blocks_->block_size() < seq->n_computed + 1)
        preempt(seq, &plan);
      continue;
    }
    if (!running) {
      seq->block_table = std::move(matched);
      seq->n_computed = cached_tokens;
      seq->n_cached_blocks = cached_tokens / blocks_->block_size();
      start(seq);
    }
    SS_CHECK(blocks_->grow(&seq->block_table, seq->n_computed + n), "reserved blocks vanished");
    plan.chunks.push_back({seq, seq->n_computed, n, seq->n_computed + n == static_cast<int64_t>(seq->tokens.size())});
    budget[cls] -= n;
    total_left -= n;
  }
  return plan;
}

void Scheduler::on_step_done(const StepPlan& plan) {
  for (const ScheduledChunk& c : plan.chunks) {
    Sequence* s = c.sequence;
    s->n_computed += c.n;
    blocks_->cache_full_blocks(s->tokens, s->n_computed, s->block_table, &s->n_cached_blocks);
  }
}

void Scheduler::finish(Sequence* seq) {
  blocks_->release(&seq->block_table);
  seq->status = SequenceStatus::kFinished;
  std::erase(running_, seq);
  for (auto& q : waiting_) {
    auto it = std::find(q.begin(), q.end(), seq);
    if (it != q.end()) q.erase(it);
  }
}

}  // namespace seekserve
