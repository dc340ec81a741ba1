// The engine on its own thread, behind a typed command queue. HTTP threads submit and cancel
// requests; the engine thread admits them between steps, runs steps while there is work and
// sleeps when there is none. Results go back through RequestSink callbacks, called on the engine
// thread: sinks must only hand the data over (post to their connection's executor), never block.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/engine.h"

namespace seekserve {

class RequestSink {
 public:
  virtual ~RequestSink() = default;
  // Admission result: the engine's request id, or why it was refused (decided before any output).
  virtual void on_admitted(int64_t request_id) = 0;
  virtual void on_rejected(const Status& status) = 0;
  // A token and/or the end of the request.
  virtual void on_output(const TokenOutput& output) = 0;
};

// Snapshot of the engine for /metrics and /ready, refreshed after every step.
struct EngineSnapshot {
  EngineStats stats;
  int64_t steps = 0;
  std::vector<int64_t> recent_batch_sizes;  // tokens per step since the last snapshot read
};

class EngineService {
 public:
  EngineService(std::unique_ptr<CausalLM> model, EngineConfig config, std::unique_ptr<Engine> engine);
  ~EngineService();

  static Result<std::unique_ptr<EngineService>> create(std::unique_ptr<CausalLM> model, EngineConfig config);

  // Queues a request; the sink hears on_admitted or on_rejected at the engine's next turn.
  void submit(Request request, std::shared_ptr<RequestSink> sink);
  // Ends a request (disconnected client, stop string reached on the HTTP side).
  void cancel(int64_t request_id);
  // Stops the thread after the current step; requests still running get "cancelled".
  void shutdown();

  bool stepping() const { return running_.load(); }
  int64_t in_flight() const { return in_flight_.load(); }
  EngineSnapshot snapshot();
  const CausalLM& model() const { return *model_; }
  std::string describe_pool() const { return engine_->describe_pool(); }

 private:
  struct Command {
    enum Kind { kSubmit, kCancel } kind;
    Request request;
    std::shared_ptr<RequestSink> sink;
    int64_t request_id = -1;
  };
  void loop();

  std::unique_ptr<CausalLM> model_;
  std::unique_ptr<Engine> engine_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Command> commands_;
  bool stopping_ = false;
  std::atomic<bool> running_{false};
  std::atomic<int64_t> in_flight_{0};
  std::map<int64_t, std::shared_ptr<RequestSink>> sinks_;  // engine thread only
  std::mutex snapshot_mutex_;
  EngineSnapshot snapshot_;
  std::thread thread_;
};

}  // namespace seekserve
