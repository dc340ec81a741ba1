// The scheduler and block manager with a fake model: a step "computes" the planned tokens and
// appends a token to every sequence that samples. No tensors, only sequences and block ids.
#include <gtest/gtest.h>

#include <memory>

#include "engine/scheduler.h"

namespace seekserve {
namespace {

class FakeEngine {
 public:
  FakeEngine(int64_t n_blocks, SchedulerConfig config, int64_t block_size = 4)
      : blocks(n_blocks, block_size), scheduler(config, &blocks) {}

  Sequence* add(int64_t prompt_len, int64_t max_tokens, RequestClass cls = RequestClass::kInteractive,
                int64_t priority = 0, Status* status = nullptr, int32_t first_token = -1) {
    auto seq = std::make_unique<Sequence>();
    seq->id = static_cast<int64_t>(all.size());
    // Distinct prompts unless asked otherwise, so the prefix cache does not interfere.
    if (first_token < 0) first_token = 100000 * static_cast<int32_t>(seq->id + 1);
    for (int64_t i = 0; i < prompt_len; ++i) seq->tokens.push_back(first_token + static_cast<int32_t>(i));
    seq->n_prompt = prompt_len;
    seq->request.max_tokens = max_tokens;
    seq->request.request_class = cls;
    seq->request.priority = priority;
    const Status s = scheduler.admit(seq.get());
    if (status) *status = s;
    if (!s.ok()) return nullptr;
    all.push_back(std::move(seq));
    return all.back().get();
  }

  // One step; returns its plan. Sampling chunks get a token; finished sequences leave.
  StepPlan step() {
    StepPlan plan = scheduler.schedule();
    // Invariant: every chunk's block table covers what it computes.
    for (const auto& c : plan.chunks)
      EXPECT_GE(static_cast<int64_t>(c.sequence->block_table.size()) * blocks.block_size(), c.begin + c.n);
    scheduler.on_step_done(plan);
    for (const auto& c : plan.chunks) {
      if (!c.samples) continue;
      Sequence* s = c.sequence;
      s->tokens.push_back(1000 + static_cast<int32_t>(s->n_generated()));
      if (s->n_generated() >= s->request.max_tokens) scheduler.finish(s);
    }
    ++steps;
    return plan;
  }

  bool all_finished() const {
    for (const auto& s : all)
      if (s->status != SequenceStatus::kFinished) return false;
    return true;
  }

  void run_to_end(int max_steps = 10000) {
    for (int i = 0; i < max_steps && !all_finished(); ++i) step();
    ASSERT_TRUE(all_finished()) << "a request starved";
    EXPECT_EQ(blocks.used(), 0) << "block accounting must return to zero";
  }

  BlockManager blocks;
  Scheduler scheduler;
  std::vector<std::unique_ptr<Sequence>> all;
  int steps = 0;
};

int64_t tokens_of(const StepPlan& plan, RequestClass cls) {
  int64_t n = 0;
  for (const auto& c : plan.chunks)
    if (c.sequence->request.request_class == cls) n += c.n;
  return n;
}

TEST(SchedulerTest, InteractiveKeepsTwoThirdsOfTheBudgetAndBatchIsNotStarved) {
  SchedulerConfig config;
  config.step_tokens = 30;
  FakeEngine e(1000, config);
  for (int i = 0; i < 4; ++i) e.add(100, 4);
  for (int i = 0; i < 4; ++i) e.add(100, 4, RequestClass::kBatch);
  const StepPlan plan = e.step();
  EXPECT_EQ(tokens_of(plan, RequestClass::kInteractive), 20);
  EXPECT_EQ(tokens_of(plan, RequestClass::kBatch), 10);
  e.run_to_end();
}

TEST(SchedulerTest, IdleCapacityGoesToBatch) {
  SchedulerConfig config;
  config.step_tokens = 30;
  FakeEngine e(1000, config);
  e.add(3, 4);  // interactive needs 3 tokens
  e.add(100, 4, RequestClass::kBatch);
  const StepPlan plan = e.step();
  EXPECT_EQ(tokens_of(plan, RequestClass::kInteractive), 3);
  EXPECT_EQ(tokens_of(plan, RequestClass::kBatch), 27);
  e.run_to_end();
}

TEST(SchedulerTest, ChunkedPrefillKeepsDecodersRunning) {
  SchedulerConfig config;
  config.step_tokens = 16;
  FakeEngine e(1000, config);
  Sequence* decoder = e.add(4, 50);
  e.step();  // decoder prefilled, sampled its first token
  Sequence* long_prompt = e.add(200, 2);
  for (int i = 0; i < 10; ++i) {
    const StepPlan plan = e.step();
    bool decoder_ran = false;
    for (const auto& c : plan.chunks) {
      if (c.sequence == decoder) decoder_ran = c.n == 1 && c.samples;
      if (c.sequence == long_prompt) {
        EXPECT_LE(c.n, 15);
      }
    }
    EXPECT_TRUE(decoder_ran) << "step " << i;
  }
  e.run_to_end();
}

TEST(SchedulerTest, BatchStaysWithinItsShareOfThePool) {
  SchedulerConfig config;
  config.step_tokens = 1000;
  config.batch_kv_share = 0.5;
  FakeEngine e(40, config);  // 40 blocks of 4 tokens; batch may hold 20
  for (int i = 0; i < 6; ++i) e.add(20, 8, RequestClass::kBatch);  // 7 blocks each at the end
  for (int i = 0; i < 50 && !e.all_finished(); ++i) {
    e.step();
    EXPECT_LE(e.scheduler.batch_blocks(), 20);
  }
  e.run_to_end();
}

TEST(SchedulerTest, PreemptsLowestPriorityMostRecentBatchFirstAndNeverInteractive) {
  SchedulerConfig config;
  config.step_tokens = 1000;
  config.batch_kv_share = 1.0;
  FakeEngine e(20, config);
  Sequence* b_high = e.add(16, 40, RequestClass::kBatch, /*priority=*/5);
  Sequence* b_low_old = e.add(16, 40, RequestClass::kBatch, 1);
  Sequence* b_low_new = e.add(16, 40, RequestClass::kBatch, 1);
  e.step();  // all three run: 15 blocks
  ASSERT_EQ(b_low_new->status, SequenceStatus::kRunning);
  // An interactive request needing 8 blocks: the low-priority, most recently started batch
  // sequence goes first, then the older low-priority one; the high-priority one stays.
  Sequence* inter = e.add(30, 2);
  const StepPlan plan = e.step();
  ASSERT_FALSE(plan.preempted.empty());
  EXPECT_EQ(plan.preempted[0], b_low_new);
  EXPECT_EQ(inter->status, SequenceStatus::kRunning);
  EXPECT_EQ(b_high->status, SequenceStatus::kRunning);
  if (plan.preempted.size() > 1) {
    EXPECT_EQ(plan.preempted[1], b_low_old);
  }
  e.run_to_end();
  EXPECT_GE(e.scheduler.preemptions(), 1);
  EXPECT_EQ(inter->preemptions, 0);
}

TEST(SchedulerTest, BatchNeverDisplacesInteractive) {
  SchedulerConfig config;
  config.step_tokens = 1000;
  config.batch_kv_share = 1.0;
  FakeEngine e(10, config);
  Sequence* inter = e.add(30, 8);  // 8 blocks, then 10 when done
  e.step();
  Sequence* batch = e.add(12, 4, RequestClass::kBatch);
  for (int i = 0; i < 5; ++i) e.step();
  EXPECT_EQ(inter->preemptions, 0);
  EXPECT_NE(batch->status, SequenceStatus::kFinished);
  e.run_to_end();
}

TEST(SchedulerTest, QueueLimitsAndImpossibleRequests) {
  SchedulerConfig config;
  config.max_waiting = {2, 1};
  config.max_context = 64;
  FakeEngine e(10, config);
  Status s;
  EXPECT_NE(e.add(4, 4, RequestClass::kInteractive, 0, &s), nullptr);
  EXPECT_NE(e.add(4, 4, RequestClass::kInteractive, 0, &s), nullptr);
  EXPECT_EQ(e.add(4, 4, RequestClass::kInteractive, 0, &s), nullptr);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(e.add(4, 4, RequestClass::kBatch, 0, &s), nullptr);
  EXPECT_EQ(e.add(4, 4, RequestClass::kBatch, 0, &s), nullptr);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  // Never fits: past the context, or more blocks than the class may use.
  e.add(60, 10, RequestClass::kInteractive, 0, &s);
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  e.add(20, 10, RequestClass::kBatch, 0, &s);  // 8 blocks > 5 (half of 10)
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  e.run_to_end();
}

TEST(SchedulerTest, NoRequestStarvesUnderContinuousArrivals) {
  SchedulerConfig config;
  config.step_tokens = 12;
  config.max_running = 4;
  FakeEngine e(30, config);
  for (int wave = 0; wave < 20; ++wave) {
    e.add(5 + wave % 7, 3 + wave % 5);
    if (wave % 3 == 0) e.add(9, 6, RequestClass::kBatch, wave % 2);
    e.step();
    e.step();
  }
  e.run_to_end();
}

TEST(SchedulerTest, PrefixCacheReusesBlocksAndEvictsLeastRecentlyUsed) {
  SchedulerConfig config;
  FakeEngine e(8, config);  // 32 tokens
  Sequence* first = e.add(13, 1, RequestClass::kInteractive, 0, nullptr, 1);  // [1..4] [5..8] [9..12] + partial
  e.run_to_end();
  EXPECT_EQ(first->status, SequenceStatus::kFinished);
  Sequence* again = e.add(14, 1, RequestClass::kInteractive, 0, nullptr, 1);  // same first 13 tokens: 3 full blocks cached
  e.step();
  EXPECT_EQ(e.blocks.prefix_hits(), 3);
  EXPECT_EQ(again->n_computed, 14);
  e.run_to_end();
  // A different prompt that needs the whole pool evicts the cached blocks instead of failing.
  e.add(30, 2, RequestClass::kInteractive, 0, nullptr, /*first_token=*/500);
  e.run_to_end();
}

}  // namespace
}  // namespace seekserve
