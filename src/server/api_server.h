// The OpenAI-compatible HTTP API of one served model: routing, auth, request validation, chat
// templates and tokenization on the I/O threads; generation through the EngineService; text
// streaming (detokenization, stop strings, reasoning split) back on the I/O threads.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "server/engine_service.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/openai_protocol.h"
#include "tokenizer/tokenizer.h"

namespace seekserve {

struct ApiConfig {
  std::string served_model_name;
  std::vector<std::string> api_keys;        // empty: no auth
  bool protect_health_and_metrics = false;  // require the key on /health, /ready, /metrics too
  RequestClass default_class = RequestClass::kInteractive;
  std::vector<std::pair<std::string, RequestClass>> key_classes;  // per-key default class
  SamplingParams default_sampling;          // from generation_config.json
  int retry_after_seconds = 1;              // on 503 overload
  bool access_log = true;                   // one JSON line per request on stderr
};

class ApiServer {
 public:
  ApiServer(ApiConfig config, std::shared_ptr<const Tokenizer> tokenizer, std::optional<ChatTemplate> chat_template,
            EngineService* engine);
  void handle(const std::shared_ptr<HttpExchange>& exchange);
  // /ready turns 503; new generation requests are refused with 503.
  void start_draining() { draining_ = true; }
  void set_connection_counter(std::function<int64_t()> fn) { open_connections_ = std::move(fn); }
  ServerMetrics& metrics() { return metrics_; }

 private:
  struct Job;
  void handle_completion(const std::shared_ptr<HttpExchange>& ex, Endpoint endpoint, const std::string& key_hash,
                         RequestClass key_class);
  void respond_error(const std::shared_ptr<HttpExchange>& ex, const ApiError& error);
  bool authorized(const HttpExchange& ex, RequestClass* key_class, std::string* key_hash) const;

  ApiConfig config_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  std::optional<ChatTemplate> chat_template_;
  EngineService* engine_;
  ServerMetrics metrics_;
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> next_request_{0};
  std::function<int64_t()> open_connections_;
  bool reasoning_model_ = false;
};

}  // namespace seekserve
