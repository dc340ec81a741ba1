// One request's state inside the engine: its tokens, how many of them are in the KV cache,
// its blocks, its class and priority, and the timestamps the metrics need.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/sampler.h"

namespace seekserve {

enum class RequestClass { kInteractive = 0, kBatch = 1 };
const char* request_class_name(RequestClass c);

struct Request {
  std::vector<int32_t> prompt;
  int64_t max_tokens = 16;
  SamplingParams sampling;
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;
  RequestClass request_class = RequestClass::kInteractive;
  int64_t priority = 0;                  // higher runs first within its class
  int64_t top_logprobs = -1;             // -1: no logprobs; 0: the chosen token's; N: also the top N
};

enum class SequenceStatus { kWaiting, kRunning, kFinished };

struct Sequence {
  using Clock = std::chrono::steady_clock;

  int64_t id = 0;
  Request request;
  std::vector<int32_t> tokens;       // prompt, then generated tokens
  int64_t n_prompt = 0;
  int64_t n_computed = 0;            // tokens whose KV rows are in the cache
  int64_t n_cached_blocks = 0;       // leading blocks registered in the prefix cache
  std::vector<int32_t> block_table;
  SequenceStatus status = SequenceStatus::kWaiting;
  int64_t arrival = 0;               // admission order
  int64_t started = -1;              // order in which it last started running (preemption picks the latest)
  int64_t preemptions = 0;
  std::string finish_reason;         // "length", "stop", "cancelled", "error"
  std::optional<Sampler> sampler;

  // Timestamps for metrics.
  Clock::time_point arrived_at, scheduled_at, first_token_at, last_token_at;
  bool scheduled_once = false;

  int64_t n_generated() const { return static_cast<int64_t>(tokens.size()) - n_prompt; }
  // Tokens still to compute before the next token can be sampled.
  int64_t pending() const { return static_cast<int64_t>(tokens.size()) - n_computed; }
  bool is_batch() const { return request.request_class == RequestClass::kBatch; }
};

}  // namespace seekserve
