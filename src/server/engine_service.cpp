#include "server/engine_service.h"

namespace seekserve {

Result<std::unique_ptr<EngineService>> EngineService::create(std::unique_ptr<CausalLM> model, EngineConfig config) {
  SS_ASSIGN_OR_RETURN(auto engine, Engine::create(model.get(), config));
  return std::make_unique<EngineService>(std::move(model), config, std::move(engine));
}

EngineService::EngineService(std::unique_ptr<CausalLM> model, EngineConfig /*config*/, std::unique_ptr<Engine> engine)
    : model_(std::move(model)), engine_(std::move(engine)) {
  running_ = true;
  thread_ = std::thread([this] { loop(); });
}

EngineService::~EngineService() { shutdown(); }

void EngineService::submit(Request request, std::shared_ptr<RequestSink> sink) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) {
      sink->on_rejected(Status(StatusCode::kUnavailable, "the server is shutting down"));
      return;
    }
    commands_.push_back({Command::kSubmit, std::move(request), std::move(sink), -1});
  }
  wake_.notify_one();
}

void EngineService::cancel(int64_t request_id) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    commands_.push_back({Command::kCancel, {}, nullptr, request_id});
  }
  wake_.notify_one();
}

void EngineService::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
  running_ = false;
}

EngineSnapshot EngineService::snapshot() {
  std::lock_guard<std::mutex> lock(snapshot_mutex_);
  EngineSnapshot s = snapshot_;
  snapshot_.recent_batch_sizes.clear();
  return s;
}

void EngineService::loop() {
  while (true) {
    std::deque<Command> commands;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      // Sleep while idle; with work in flight only pick up what arrived during the last step.
      wake_.wait(lock, [&] { return stopping_ || !commands_.empty() || engine_->has_work(); });
      if (stopping_) break;
      commands.swap(commands_);
    }
    for (Command& c : commands) {
      if (c.kind == Command::kCancel) {
        engine_->cancel(c.request_id);
        continue;
      }
      auto id = engine_->add_request(std::move(c.request));
      if (!id.ok()) {
        c.sink->on_rejected(id.status());
        continue;
      }
      sinks_[*id] = c.sink;
      ++in_flight_;
      c.sink->on_admitted(*id);
    }
    int64_t step_tokens = 0;
    for (const TokenOutput& out : engine_->step()) {
      auto it = sinks_.find(out.request_id);
      if (it == sinks_.end()) continue;
      if (out.token >= 0) ++step_tokens;
      it->second->on_output(out);
      if (out.finished) {
        sinks_.erase(it);
        --in_flight_;
      }
    }
    std::lock_guard<std::mutex> lock(snapshot_mutex_);
    snapshot_.stats = engine_->stats();
    snapshot_.steps = snapshot_.stats.steps;
    if (step_tokens > 0 && snapshot_.recent_batch_sizes.size() < 100000) snapshot_.recent_batch_sizes.push_back(step_tokens);
  }
  // Shutting down: whoever still waits hears that its request ended.
  for (auto& [id, sink] : sinks_) {
    TokenOutput out;
    out.request_id = id;
    out.finished = true;
    out.finish_reason = "cancelled";
    sink->on_output(out);
  }
  sinks_.clear();
  std::lock_guard<std::mutex> lock(mutex_);
  for (Command& c : commands_)
    if (c.kind == Command::kSubmit) c.sink->on_rejected(Status(StatusCode::kUnavailable, "the server is shutting down"));
  commands_.clear();
}

}  // namespace seekserve
