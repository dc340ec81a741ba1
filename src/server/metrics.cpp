#include "server/metrics.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>

namespace seekserve {

namespace {

std::string format_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

const std::vector<double> kLatencyBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                             0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};

int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return pages_resident * sysconf(_SC_PAGESIZE);
}

}  // namespace

void Histogram::observe(double v) {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::render(const std::string& name, const std::string& labels, std::string* out) const {
  std::lock_guard<std::mutex> lock(mutex_);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    *out += name + "_bucket{" + labels + ",le=\"" + format_double(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  cumulative += counts_.back();
  *out += name + "_bucket{" + labels + ",le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
  *out += name + "_sum{" + labels + "} " + format_double(sum_) + "\n";
  *out += name + "_count{" + labels + "} " + std::to_string(count_) + "\n";
}

ServerMetrics::ServerMetrics(std::string model_name)
    : model_(std::move(model_name)),
      ttft_(kLatencyBuckets),
      inter_token_(kLatencyBuckets),
      e2e_({0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300, 600}),
      queue_(kLatencyBuckets),
      batch_size_({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192}) {}

void ServerMetrics::request_finished(const std::string& reason, RequestClass cls, int64_t prompt_tokens, int64_t completion_tokens,
                                     double queue_s, double ttft_s, double e2e_s) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++finished_by_reason_[reason];
  }
  ++requests_by_class_[static_cast<size_t>(cls)];
  prompt_tokens_ += static_cast<uint64_t>(prompt_tokens);
  generation_tokens_ += static_cast<uint64_t>(completion_tokens);
  queue_.observe(queue_s);
  if (completion_tokens > 0) ttft_.observe(ttft_s);
  e2e_.observe(e2e_s);
}

void ServerMetrics::request_failed(int http_status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++failed_by_code_[http_status];
}

std::string ServerMetrics::render(const EngineSnapshot& s, int64_t open_connections) {
  for (int64_t n : s.recent_batch_sizes) batch_size_.observe(static_cast<double>(n));
  const std::string m = "model=\"" + model_ + "\"";
  std::string out;
  auto gauge = [&](const std::string& name, const std::string& help, const std::vector<std::pair<std::string, double>>& series) {
    out += "# HELP " + name + " " + help + "\n# TYPE " + name + " gauge\n";
    for (const auto& [labels, v] : series) out += name + "{" + m + labels + "} " + format_double(v) + "\n";
  };
  auto counter = [&](const std::string& name, const std::string& help, const std::vector<std::pair<std::string, double>>& series) {
    out += "# HELP " + name + " " + help + "\n# TYPE " + name + " counter\n";
    for (const auto& [labels, v] : series) out += name + "{" + m + labels + "} " + format_double(v) + "\n";
  };
  auto histogram = [&](const std::string& name, const std::string& help, const Histogram& h) {
    out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
    h.render(name, m, &out);
  };
  gauge("seekserve_build_info", "Build information.", {{",version=\"0.1.0\"", 1.0}});
  gauge("seekserve_num_requests_running", "Requests in the running batch, by class.",
        {{",class=\"interactive\"", static_cast<double>(s.stats.running[0])}, {",class=\"batch\"", static_cast<double>(s.stats.running[1])}});
  gauge("seekserve_num_requests_waiting", "Requests waiting to be scheduled, by class.",
        {{",class=\"interactive\"", static_cast<double>(s.stats.waiting[0])}, {",class=\"batch\"", static_cast<double>(s.stats.waiting[1])}});
  gauge("seekserve_kv_cache_usage_perc", "Fraction of KV-cache blocks in use (1 = full).", {{"", s.stats.kv_usage()}});
  gauge("seekserve_kv_cache_blocks", "KV-cache blocks in the pool.", {{"", static_cast<double>(s.stats.kv_blocks_total)}});
  gauge("seekserve_open_connections", "Open HTTP connections.", {{"", static_cast<double>(open_connections)}});
  gauge("seekserve_process_resident_memory_bytes", "Resident memory of the server process.", {{"", static_cast<double>(resident_bytes())}});
  counter("seekserve_prefix_cache_queries_total", "KV blocks looked up in the prefix cache.", {{"", static_cast<double>(s.stats.prefix_queries)}});
  counter("seekserve_prefix_cache_hits_total", "KV blocks found in the prefix cache.", {{"", static_cast<double>(s.stats.prefix_hits)}});
  counter("seekserve_num_preemptions_total", "Sequences preempted (to be recomputed) for lack of KV blocks.", {{"", static_cast<double>(s.stats.preemptions)}});
  counter("seekserve_prompt_tokens_total", "Prompt tokens of finished requests.", {{"", static_cast<double>(prompt_tokens_.load())}});
  counter("seekserve_generation_tokens_total", "Generated tokens of finished requests.", {{"", static_cast<double>(generation_tokens_.load())}});
  counter("seekserve_engine_steps_total", "Engine iterations run.", {{"", static_cast<double>(s.steps)}});
  {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::pair<std::string, double>> finished;
    for (const char* reason : {"stop", "length", "abort"}) finished.push_back({std::string(",finished_reason=\"") + reason + "\"", static_cast<double>(finished_by_reason_[reason])});
    counter("seekserve_request_success_total", "Requests finished, by finish reason.", finished);
    std::vector<std::pair<std::string, double>> failed;
    for (const auto& [code, n] : failed_by_code_) failed.push_back({",code=\"" + std::to_string(code) + "\"", static_cast<double>(n)});
    if (failed.empty()) failed.push_back({",code=\"503\"", 0.0});
    counter("seekserve_request_failure_total", "Requests refused or failed, by HTTP status.", failed);
  }
  histogram("seekserve_time_to_first_token_seconds", "Time from arrival to the first generated token.", ttft_);
  histogram("seekserve_inter_token_latency_seconds", "Time between consecutive generated tokens of a request.", inter_token_);
  histogram("seekserve_e2e_request_latency_seconds", "Time from arrival to the end of a request.", e2e_);
  histogram("seekserve_request_queue_time_seconds", "Time from arrival to the first scheduled step.", queue_);
  histogram("seekserve_iteration_tokens", "Tokens sampled per engine step (the decode batch size).", batch_size_);
  return out;
}

}  // namespace seekserve
