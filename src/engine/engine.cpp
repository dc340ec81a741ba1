#include "engine/engine.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace seekserve {

namespace {

double seconds_between(Sequence::Clock::time_point a, Sequence::Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

Result<std::unique_ptr<Engine>> Engine::create(CausalLM* model, EngineConfig config) {
  const KvLayout layout = model->kv_layout();
  const int64_t block_bytes = layout.bytes_per_token() * config.block_size;
  if (config.block_size <= 0) return invalid_argument("block size must be positive");
  const int64_t n_blocks = config.kv_budget_bytes / block_bytes;
  if (n_blocks < 1)
    return invalid_argument("KV budget of " + std::to_string(config.kv_budget_bytes) + " bytes holds no block (one block of " +
                            std::to_string(config.block_size) + " tokens takes " + std::to_string(block_bytes) + " bytes)");
  if (config.scheduler.max_context == 0) config.scheduler.max_context = model->info().max_positions;
  return std::unique_ptr<Engine>(new Engine(model, config, n_blocks));
}

Engine::Engine(CausalLM* model, EngineConfig config, int64_t n_blocks)
    : model_(model),
      config_(config),
      pool_(model->kv_layout(), n_blocks, config.block_size),
      blocks_(n_blocks, config.block_size),
      scheduler_(config.scheduler, &blocks_) {}

std::string Engine::describe_pool() const {
  const double mib = static_cast<double>(pool_.bytes()) / (1024.0 * 1024.0);
  char buf[160];
  std::snprintf(buf, sizeof buf, "%lld blocks of %lld tokens (%lld tokens, %.1f MiB)", static_cast<long long>(pool_.n_blocks()),
                static_cast<long long>(pool_.block_size()), static_cast<long long>(pool_.n_blocks() * pool_.block_size()), mib);
  return buf;
}

Result<int64_t> Engine::add_request(Request request) {
  SS_RETURN_IF_ERROR(request.sampling.validate());
  if (request.prompt.empty()) return invalid_argument("the prompt is empty");
  if (request.max_tokens < 1) return invalid_argument("max_tokens must be at least 1");
  const int64_t vocab = model_->info().vocab_size;
  for (size_t i = 0; i < request.prompt.size(); ++i)
    if (request.prompt[i] < 0 || request.prompt[i] >= vocab)
      return out_of_range("token id " + std::to_string(request.prompt[i]) + " at index " + std::to_string(i) +
                          " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  if (request.top_logprobs > 20) return invalid_argument("top_logprobs must be at most 20");
  auto seq = std::make_unique<Sequence>();
  seq->id = next_id_++;
  seq->tokens = request.prompt;
  seq->n_prompt = static_cast<int64_t>(request.prompt.size());
  seq->sampler.emplace(request.sampling);
  seq->request = std::move(request);
  seq->arrived_at = Sequence::Clock::now();
  SS_RETURN_IF_ERROR(scheduler_.admit(seq.get()));
  const int64_t id = seq->id;
  sequences_.emplace(id, std::move(seq));
  return id;
}

void Engine::cancel(int64_t request_id) {
  if (sequences_.count(request_id)) cancelled_.push_back(request_id);
}

TokenOutput Engine::finish(Sequence* seq, const std::string& reason) {
  TokenOutput out;
  out.request_id = seq->id;
  out.finished = true;
  out.finish_reason = reason;
  const auto now = Sequence::Clock::now();
  if (seq->scheduled_once) out.queue_seconds = seconds_between(seq->arrived_at, seq->scheduled_at);
  if (seq->n_generated() > 0) out.first_token_seconds = seconds_between(seq->arrived_at, seq->first_token_at);
  if (seq->n_generated() > 1)
    out.mean_inter_token_seconds = seconds_between(seq->first_token_at, seq->last_token_at) / static_cast<double>(seq->n_generated() - 1);
  out.total_seconds = seconds_between(seq->arrived_at, now);
  seq->finish_reason = reason;
  scheduler_.finish(seq);
  return out;
}

void apply_penalties(const Sequence& seq, float* logits, int64_t vocab) {
  const SamplingParams& p = seq.request.sampling;
  if (p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f && p.repetition_penalty == 1.0f) return;
  std::unordered_map<int32_t, int32_t> counts;  // generated tokens
  for (int64_t i = seq.n_prompt; i < static_cast<int64_t>(seq.tokens.size()); ++i) ++counts[seq.tokens[static_cast<size_t>(i)]];
  if (p.repetition_penalty != 1.0f) {
    // Prompt and output tokens alike (as transformers and vLLM): shrink toward "less likely".
    std::vector<bool> seen(static_cast<size_t>(vocab), false);
    for (int32_t t : seq.tokens) {
      if (t < 0 || t >= vocab || seen[static_cast<size_t>(t)]) continue;
      seen[static_cast<size_t>(t)] = true;
      float& l = logits[t];
      l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
    }
  }
  for (const auto& [t, n] : counts) {
    if (t < 0 || t >= vocab) continue;
    logits[t] -= p.presence_penalty + p.frequency_penalty * static_cast<float>(n);
  }
}

void Engine::sample_into(Sequence* seq, const float* raw, TokenOutput* out) {
  const int64_t vocab = model_->info().vocab_size;
  std::vector<float> logits(raw, raw + vocab);
  apply_penalties(*seq, logits.data(), vocab);
  const int32_t token = seq->sampler->sample(logits.data(), vocab);
  out->token = token;
  if (seq->request.top_logprobs >= 0) {
    // Log-probabilities of the model's distribution (before penalties and sampling filters).
    float max_logit = -INFINITY;
    for (int64_t i = 0; i < vocab; ++i) max_logit = std::max(max_logit, raw[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(raw[i] - max_logit));
    const float log_z = max_logit + static_cast<float>(std::log(sum));
    out->logprob = raw[token] - log_z;
    std::vector<int32_t> idx(static_cast<size_t>(vocab));
    for (int64_t i = 0; i < vocab; ++i) idx[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    const int64_t k = std::min<int64_t>(seq->request.top_logprobs, vocab);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) { return raw[a] > raw[b] || (raw[a] == raw[b] && a < b); });
    for (int64_t i = 0; i < k; ++i) out->top_logprobs.push_back({idx[static_cast<size_t>(i)], raw[idx[static_cast<size_t>(i)]] - log_z});
  }
}

bool Engine::check_stop(Sequence* seq, int32_t token) {
  const auto& eos = model_->info().eos_token_ids;
  if (!seq->request.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) return true;
  const auto& stops = seq->request.stop_token_ids;
  return std::find(stops.begin(), stops.end(), token) != stops.end();
}

std::vector<TokenOutput> Engine::step() {
  std::vector<TokenOutput> outputs;
  for (int64_t id : cancelled_) {
    auto it = sequences_.find(id);
    if (it == sequences_.end()) continue;
    outputs.push_back(finish(it->second.get(), "cancelled"));
    sequences_.erase(it);
  }
  cancelled_.clear();

  const StepPlan plan = scheduler_.schedule();
  if (plan.chunks.empty()) return outputs;
  ++counters_.steps;

  ForwardBatch batch;
  const auto now = Sequence::Clock::now();
  for (const ScheduledChunk& c : plan.chunks) {
    Sequence* s = c.sequence;
    if (!s->scheduled_once) {
      s->scheduled_once = true;
      s->scheduled_at = now;
    }
    batch.chunks.push_back({std::span<const int32_t>(s->tokens).subspan(static_cast<size_t>(c.begin), static_cast<size_t>(c.n)),
                            c.begin, s->block_table, c.samples ? 1 : 0});
    counters_.prompt_tokens_computed += c.n - (c.samples && s->n_generated() > 0 ? 1 : 0);
  }
  // Steps where every sampling request takes the plain argmax may get ids instead of logits.
  bool argmax_only = true;
  for (const ScheduledChunk& c : plan.chunks)
    if (c.samples && (!c.sequence->request.sampling.plain_argmax() || c.sequence->request.top_logprobs >= 0)) argmax_only = false;
  greedy_tokens_.clear();
  batch.greedy_tokens = argmax_only ? &greedy_tokens_ : nullptr;
  const Status status = model_->forward_batch(batch, pool_, &logits_);
  if (!status.ok()) {
    // A model failure ends the step's requests with an error instead of wedging the engine.
    for (const ScheduledChunk& c : plan.chunks) {
      outputs.push_back(finish(c.sequence, "error"));
      sequences_.erase(c.sequence->id);
    }
    return outputs;
  }
  scheduler_.on_step_done(plan);

  const int64_t vocab = model_->info().vocab_size;
  int64_t row = 0;
  const auto sampled_at = Sequence::Clock::now();
  for (const ScheduledChunk& c : plan.chunks) {
    if (!c.samples) continue;
    Sequence* s = c.sequence;
    TokenOutput out;
    out.request_id = s->id;
    if (logits_.empty()) out.token = greedy_tokens_[static_cast<size_t>(row)];  // the model took the argmax
    else sample_into(s, logits_.data() + row * vocab, &out);
    ++row;
    s->tokens.push_back(out.token);
    ++counters_.generated_tokens;
    if (s->n_generated() == 1) s->first_token_at = sampled_at;
    s->last_token_at = sampled_at;
    std::string reason;
    if (check_stop(s, out.token)) reason = "stop";
    else if (s->n_generated() >= s->request.max_tokens) reason = "length";
    else if (static_cast<int64_t>(s->tokens.size()) >= model_->info().max_positions) reason = "length";
    if (!reason.empty()) {
      TokenOutput done = finish(s, reason);
      out.finished = true;
      out.finish_reason = reason;
      out.queue_seconds = done.queue_seconds;
      out.first_token_seconds = done.first_token_seconds;
      out.total_seconds = done.total_seconds;
      out.mean_inter_token_seconds = done.mean_inter_token_seconds;
      sequences_.erase(s->id);
    }
    outputs.push_back(std::move(out));
  }
  return outputs;
}

EngineStats Engine::stats() const {
  EngineStats s = counters_;
  for (RequestClass c : {RequestClass::kInteractive, RequestClass::kBatch}) {
    s.running[static_cast<size_t>(c)] = scheduler_.n_running(c);
    s.waiting[static_cast<size_t>(c)] = scheduler_.n_waiting(c);
  }
  s.kv_blocks_total = blocks_.n_blocks();
  s.kv_blocks_used = blocks_.used();
  s.prefix_queries = blocks_.prefix_queries();
  s.prefix_hits = blocks_.prefix_hits();
  s.preemptions = scheduler_.preemptions();
  return s;
}

}  // namespace seekserve
