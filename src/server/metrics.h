// Prometheus metrics in the text exposition format. Names follow vLLM's (vllm:x -> seekserve_x)
// so an operator who knows those dashboards finds each one; every series has a `model` label.
#pragma once

#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "server/engine_service.h"

namespace seekserve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double v);
  // Appends the _bucket, _sum and _count lines.
  void render(const std::string& name, const std::string& labels, std::string* out) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<uint64_t> counts_;
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

class ServerMetrics {
 public:
  explicit ServerMetrics(std::string model_name);

  // A request finished (reason: stop, length, abort) or failed with an HTTP status.
  void request_finished(const std::string& reason, RequestClass cls, int64_t prompt_tokens, int64_t completion_tokens,
                        double queue_s, double ttft_s, double e2e_s);
  void request_failed(int http_status);
  void observe_inter_token(double seconds) { inter_token_.observe(seconds); }

  // The whole /metrics page; `snapshot` comes from the engine thread.
  std::string render(const EngineSnapshot& snapshot, int64_t open_connections);

 private:
  std::string model_;
  std::mutex mutex_;
  std::map<std::string, uint64_t> finished_by_reason_;
  std::map<int, uint64_t> failed_by_code_;
  std::atomic<uint64_t> prompt_tokens_{0}, generation_tokens_{0};
  Histogram ttft_, inter_token_, e2e_, queue_, batch_size_;
  std::array<std::atomic<uint64_t>, 2> requests_by_class_{};
};

}  // namespace seekserve
