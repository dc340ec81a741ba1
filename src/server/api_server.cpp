#include "server/api_server.h"

#include <chrono>
#include <cstdio>
#include <random>

#include "tokenizer/streaming.h"
#include "tokenizer/utf8.h"

namespace seekserve {

using nlohmann::ordered_json;

namespace {

int64_t unix_time() { return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count(); }

// Compares without an early exit, so timing does not reveal how much of a key matched.
bool constant_time_equal(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

std::string short_hash(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string json_type() { return "application/json"; }

}  // namespace

// One API request: n engine requests (choices), their text streams, and the HTTP response.
// Engine callbacks arrive on the engine thread and are posted to the connection's strand, so
// all state below is touched by one thread at a time.
struct ApiServer::Job : public std::enable_shared_from_this<Job> {
  struct Choice : RequestSink, std::enable_shared_from_this<Choice> {
    // The job lives while any of its choices can still hear from the engine; release() breaks
    // the job <-> choice cycle once the job has answered.
    std::mutex job_mutex;
    std::shared_ptr<Job> job_ref;
    std::shared_ptr<Job> job() {
      std::lock_guard<std::mutex> lock(job_mutex);
      return job_ref;
    }
    void release() {
      std::lock_guard<std::mutex> lock(job_mutex);
      job_ref.reset();
    }
    size_t index = 0;
    int64_t request_id = -1;
    std::optional<StreamDecoder> decoder;
    std::optional<StopMatcher> stops;
    std::optional<ReasoningSplitter> reasoning;
    ChoiceResult result;
    ordered_json logprob_items = ordered_json::array();
    int64_t completion_tokens = 0;
    bool done = false;
    bool sent_role = false;
    std::chrono::steady_clock::time_point last_token;
    double queue_s = 0, ttft_s = 0, e2e_s = 0;

    void on_admitted(int64_t id) override {
      if (auto j = job()) j->exchange->post([j, c = shared_from_this(), id] { j->admitted(c.get(), id); });
    }
    void on_rejected(const Status& status) override {
      if (auto j = job()) j->exchange->post([j, c = shared_from_this(), status] { j->rejected(c.get(), status); });
    }
    void on_output(const TokenOutput& out) override {
      if (auto j = job()) j->exchange->post([j, c = shared_from_this(), out] { j->output(c.get(), out); });
    }
  };

  ApiServer* server = nullptr;
  std::shared_ptr<HttpExchange> exchange;
  CompletionParams params;
  std::string id, model, key_hash;
  int64_t created = 0;
  RequestClass cls = RequestClass::kInteractive;
  int64_t prompt_tokens = 0;
  bool starts_in_reasoning = false;  // the chat template opened a <think> block
  std::vector<std::shared_ptr<Choice>> choices;  // also handed to the engine as its sinks
  size_t admitted_count = 0;
  bool failed = false, streaming = false, finished = false, disconnected = false;
  std::chrono::steady_clock::time_point arrived = std::chrono::steady_clock::now();

  void admitted(Choice* c, int64_t request_id) {
    c->request_id = request_id;
    if (failed || disconnected) {
      server->engine_->cancel(request_id);
      return;
    }
    if (++admitted_count < choices.size()) return;
    // Every choice is in: from here on errors can only arrive as stream events.
    if (params.stream) {
      streaming = true;
      exchange->begin_stream("text/event-stream");
    }
  }

  void rejected(Choice*, const Status& status) {
    if (failed) return;
    failed = true;
    for (auto& c : choices)
      if (c->request_id >= 0) server->engine_->cancel(c->request_id);
    ApiError e = api_error(status, params.endpoint == Endpoint::kChatCompletions ? "messages" : "prompt");
    if (status.code() == StatusCode::kResourceExhausted || status.code() == StatusCode::kUnavailable) e.param.clear();
    server->respond_error(exchange, e);
    finished = true;
    release_all();
  }

  std::string token_text(int32_t token) const { return utf8_lossy(server->tokenizer_->token_bytes(token)); }

  ordered_json logprob_entry(const TokenOutput& out) const {
    auto bytes_of = [&](int32_t t) {
      std::vector<int> b;
      for (unsigned char ch : server->tokenizer_->token_bytes(t)) b.push_back(ch);
      return b;
    };
    ordered_json item;
    item["token"] = token_text(out.token);
    item["logprob"] = out.logprob;
    item["bytes"] = bytes_of(out.token);
    item["top_logprobs"] = ordered_json::array();
    for (size_t i = 0; i < static_cast<size_t>(params.top_logprobs) && i < out.top_logprobs.size(); ++i)
      item["top_logprobs"].push_back({{"token", token_text(out.top_logprobs[i].token)}, {"logprob", out.top_logprobs[i].logprob},
                                      {"bytes", bytes_of(out.top_logprobs[i].token)}});
    return item;
  }

  // Text released by the stop matcher, routed to reasoning or content.
  void emit(Choice* c, const std::string& text, const ordered_json& logprobs_delta) {
    std::string content = text, reasoning;
    if (c->reasoning) {
      auto d = c->reasoning->feed(text);
      content = d.content;
      reasoning = d.reasoning;
    }
    c->result.text += content;
    c->result.reasoning += reasoning;
    if (!streaming || (content.empty() && reasoning.empty() && logprobs_delta.is_null())) return;
    const std::string role = "assistant";
    const bool first = !c->sent_role;
    c->sent_role = true;
    exchange->send(sse_event(stream_chunk(params, id, created, model, static_cast<int64_t>(c->index), first ? &role : nullptr,
                                          content.empty() && !first && !reasoning.empty() ? nullptr : &content,
                                          reasoning.empty() ? nullptr : &reasoning, logprobs_delta, "")));
  }

  void finish_choice(Choice* c, const std::string& reason) {
    if (c->done) return;
    c->done = true;
    std::string rest = c->decoder->finish();
    rest = c->stops->feed(rest) + c->stops->finish();
    if (!rest.empty()) emit(c, rest, nullptr);
    if (c->reasoning) {
      auto d = c->reasoning->finish();
      c->result.text += d.content;
      c->result.reasoning += d.reasoning;
      if (streaming && !(d.content.empty() && d.reasoning.empty()))
        exchange->send(sse_event(stream_chunk(params, id, created, model, static_cast<int64_t>(c->index), nullptr, &d.content,
                                              d.reasoning.empty() ? nullptr : &d.reasoning, nullptr, "")));
    }
    c->result.finish_reason = reason;
    if (params.logprobs) {
      if (params.endpoint == Endpoint::kChatCompletions) c->result.logprobs = {{"content", c->logprob_items}};
      else c->result.logprobs = completion_logprobs(c->logprob_items);
    }
    if (streaming) {
      const std::string empty;
      exchange->send(sse_event(stream_chunk(params, id, created, model, static_cast<int64_t>(c->index), nullptr,
                                            params.endpoint == Endpoint::kChatCompletions ? nullptr : &empty, nullptr, nullptr, reason)));
    }
    server->metrics_.request_finished(reason, cls, prompt_tokens, c->completion_tokens, c->queue_s, c->ttft_s, c->e2e_s);
    for (auto& other : choices)
      if (!other->done) return;
    complete();
  }

  ordered_json completion_logprobs(const ordered_json& items) const {
    ordered_json lp;
    lp["tokens"] = ordered_json::array();
    lp["token_logprobs"] = ordered_json::array();
    lp["top_logprobs"] = ordered_json::array();
    lp["text_offset"] = ordered_json::array();
    int64_t offset = 0;
    for (const auto& item : items) {
      lp["tokens"].push_back(item["token"]);
      lp["token_logprobs"].push_back(item["logprob"]);
      ordered_json top = ordered_json::object();
      for (const auto& t : item["top_logprobs"]) top[t["token"].get<std::string>()] = t["logprob"];
      lp["top_logprobs"].push_back(top);
      lp["text_offset"].push_back(offset);
      offset += static_cast<int64_t>(item["token"].get<std::string>().size());
    }
    return lp;
  }

  void complete() {
    if (finished) return;
    finished = true;
    Usage usage{prompt_tokens, 0};
    std::vector<ChoiceResult> results;
    for (auto& c : choices) {
      usage.completion_tokens += c->completion_tokens;
      c->result.has_reasoning = c->reasoning.has_value() && (starts_in_reasoning || !c->result.reasoning.empty());
      results.push_back(c->result);
    }
    if (streaming) {
      if (params.include_usage) exchange->send(sse_event(usage_chunk(params, id, created, model, usage)));
      exchange->send("data: [DONE]\n\n");
      exchange->end_stream();
    } else {
      exchange->respond(200, json_type(), completion_response(params, id, created, model, results, usage).dump(-1, ' ', false, ordered_json::error_handler_t::replace));
    }
    log(200, choices.empty() ? "" : choices[0]->result.finish_reason, usage);
    release_all();
  }

  // After the response: choices stop referring to the job, which then frees with its last user.
  void release_all() {
    for (auto& c : choices) c->release();
  }

  void fail_midway(const std::string& message) {
    if (finished) return;
    finished = true;
    for (auto& c : choices)
      if (!c->done && c->request_id >= 0) server->engine_->cancel(c->request_id);
    if (streaming) {
      ordered_json e;
      e["error"] = {{"message", message}, {"type", "internal_error"}, {"param", nullptr}, {"code", nullptr}};
      exchange->send(sse_event(e));
      exchange->send("data: [DONE]\n\n");
      exchange->end_stream();
    } else {
      ApiError err;
      err.http_status = 500;
      err.type = "internal_error";
      err.message = message;
      server->respond_error(exchange, err);
    }
    release_all();
  }

  void output(Choice* c, const TokenOutput& out) {
    if (c->done || finished || disconnected) return;
    const auto now = std::chrono::steady_clock::now();
    if (out.token >= 0) {
      ++c->completion_tokens;
      if (c->completion_tokens > 1) server->metrics_.observe_inter_token(std::chrono::duration<double>(now - c->last_token).count());
      c->last_token = now;
      const auto& eos = server->engine_->model().info().eos_token_ids;
      const bool is_eos = !params.ignore_eos && std::find(eos.begin(), eos.end(), out.token) != eos.end();
      ordered_json lp = nullptr;
      if (params.logprobs && !is_eos) {
        ordered_json entry = logprob_entry(out);
        c->logprob_items.push_back(entry);
        if (params.endpoint == Endpoint::kChatCompletions) lp = {{"content", ordered_json::array({entry})}};
        else lp = completion_logprobs(ordered_json::array({entry}));
      }
      if (!is_eos) {
        const std::string text = c->stops->feed(c->decoder->add(out.token));
        if (!text.empty() || !lp.is_null()) emit(c, text, lp);
      }
      if (c->stops->stopped()) {
        server->engine_->cancel(c->request_id);  // the engine frees it at its next step
        finish_choice(c, "stop");
        return;
      }
    }
    if (out.finished) {
      c->queue_s = out.queue_seconds;
      c->ttft_s = out.first_token_seconds;
      c->e2e_s = out.total_seconds;
      if (out.finish_reason == "stop" || out.finish_reason == "length") finish_choice(c, out.finish_reason);
      else fail_midway("generation ended unexpectedly (" + out.finish_reason + ")");
    }
  }

  void on_disconnect() {
    disconnected = true;
    for (auto& c : choices)
      if (!c->done && c->request_id >= 0) server->engine_->cancel(c->request_id);
    if (!finished) {
      for (auto& c : choices)
        if (!c->done) server->metrics_.request_finished("abort", cls, prompt_tokens, c->completion_tokens, 0, 0, 0);
      log(499, "abort", Usage{prompt_tokens, 0});
    }
    finished = true;
    release_all();
  }

  void log(int status, const std::string& reason, const Usage& usage) {
    if (!server->config_.access_log) return;
    ordered_json j;
    j["time"] = unix_time();
    j["request_id"] = id;
    j["model"] = model;
    j["class"] = request_class_name(cls);
    j["status"] = status;
    j["prompt_tokens"] = usage.prompt_tokens;
    j["completion_tokens"] = usage.completion_tokens;
    j["time_to_first_token_s"] = choices.empty() ? 0.0 : choices[0]->ttft_s;
    j["total_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - arrived).count();
    j["finish_reason"] = reason;
    j["api_key_hash"] = key_hash;
    std::fprintf(stderr, "%s\n", j.dump().c_str());
  }
};

ApiServer::ApiServer(ApiConfig config, std::shared_ptr<const Tokenizer> tokenizer, std::optional<ChatTemplate> chat_template,
                     EngineService* engine)
    : config_(std::move(config)),
      tokenizer_(std::move(tokenizer)),
      chat_template_(std::move(chat_template)),
      engine_(engine),
      metrics_(config_.served_model_name) {
  reasoning_model_ = tokenizer_->token_to_id("<think>").has_value() && tokenizer_->token_to_id("</think>").has_value();
}

void ApiServer::respond_error(const std::shared_ptr<HttpExchange>& ex, const ApiError& error) {
  metrics_.request_failed(error.http_status);
  if (config_.access_log) {
    // Refused requests get their access-log line too (completed ones are logged by their job).
    ordered_json j;
    j["time"] = unix_time();
    j["request_id"] = nullptr;
    j["model"] = config_.served_model_name;
    j["path"] = std::string(ex->path());
    j["status"] = error.http_status;
    j["error_type"] = error.type;
    const std::string_view auth = ex->header("Authorization");
    j["api_key_hash"] = auth.size() > 7 ? short_hash(auth.substr(7)) : "";
    std::fprintf(stderr, "%s\n", j.dump(-1, ' ', false, ordered_json::error_handler_t::replace).c_str());
  }
  Headers headers;
  if (error.http_status == 503) headers.emplace_back("Retry-After", std::to_string(config_.retry_after_seconds));
  if (error.http_status == 401) headers.emplace_back("WWW-Authenticate", "Bearer");
  ex->respond(error.http_status, json_type(), error_body(error), headers);
}

bool ApiServer::authorized(const HttpExchange& ex, RequestClass* key_class, std::string* key_hash) const {
  *key_class = config_.default_class;
  if (config_.api_keys.empty()) return true;
  const std::string_view auth = ex.header("Authorization");
  const std::string_view prefix = "Bearer ";
  if (auth.size() <= prefix.size() || auth.substr(0, prefix.size()) != prefix) return false;
  const std::string_view key = auth.substr(prefix.size());
  bool ok = false;
  for (const std::string& k : config_.api_keys) ok |= constant_time_equal(key, k);  // no early exit across keys
  if (!ok) return false;
  *key_hash = short_hash(key);
  for (const auto& [k, cls] : config_.key_classes)
    if (constant_time_equal(key, k)) *key_class = cls;
  return true;
}

void ApiServer::handle(const std::shared_ptr<HttpExchange>& ex) {
  const std::string path(ex->path());
  const std::string method(ex->method());
  struct Route {
    const char* path;
    const char* method;
    bool open;  // reachable without a key unless protect_health_and_metrics
  };
  static const Route kRoutes[] = {{"/v1/chat/completions", "POST", false}, {"/v1/completions", "POST", false},
                                  {"/v1/models", "GET", false},            {"/tokenize", "POST", false},
                                  {"/detokenize", "POST", false},          {"/health", "GET", true},
                                  {"/ready", "GET", true},                 {"/metrics", "GET", true}};
  const Route* route = nullptr;
  for (const Route& r : kRoutes)
    if (path == r.path) route = &r;
  if (route == nullptr) {
    ApiError e;
    e.http_status = 404;
    e.type = "not_found_error";
    e.message = "no route for " + path;
    return respond_error(ex, e);
  }
  if (method != route->method) {
    ApiError e;
    e.http_status = 405;
    e.message = "method " + method + " is not allowed on " + path + " (use " + route->method + ")";
    metrics_.request_failed(405);
    return ex->respond(405, json_type(), error_body(e), {{"Allow", route->method}});
  }
  RequestClass key_class;
  std::string key_hash;
  if ((!route->open || config_.protect_health_and_metrics) && !authorized(*ex, &key_class, &key_hash)) {
    ApiError e;
    e.http_status = 401;
    e.type = "authentication_error";
    e.code = "invalid_api_key";
    e.message = "missing or invalid API key (send Authorization: Bearer <key>)";
    return respond_error(ex, e);
  }
  if (path == "/health") return ex->respond(200, json_type(), R"({"status":"ok"})");
  if (path == "/ready") {
    const bool ready = engine_->stepping() && !draining_;
    return ex->respond(ready ? 200 : 503, json_type(), ready ? R"({"status":"ready"})" : R"({"status":"unavailable"})");
  }
  if (path == "/metrics")
    return ex->respond(200, "text/plain; version=0.0.4; charset=utf-8",
                       metrics_.render(engine_->snapshot(), open_connections_ ? open_connections_() : 0));
  if (path == "/v1/models") {
    ordered_json model = {{"id", config_.served_model_name}, {"object", "model"}, {"created", unix_time()},
                          {"owned_by", "seekserve"}, {"max_model_len", engine_->model().info().max_positions}};
    return ex->respond(200, json_type(), ordered_json{{"object", "list"}, {"data", ordered_json::array({model})}}.dump());
  }
  if (path == "/tokenize" || path == "/detokenize") {
    const auto body = ordered_json::parse(ex->body(), nullptr, false);
    ApiError e;
    if (body.is_discarded() || !body.is_object()) {
      e.message = "the request body must be a JSON object";
      return respond_error(ex, e);
    }
    if (path == "/detokenize") {
      if (!body.contains("tokens") || !body["tokens"].is_array()) {
        e.param = "tokens";
        e.message = "'tokens' must be an array of token ids";
        return respond_error(ex, e);
      }
      std::vector<int32_t> ids;
      for (const auto& t : body["tokens"]) {
        if (!t.is_number_integer() || !tokenizer_->is_valid_id(t.get<int32_t>())) {
          e.param = "tokens";
          e.message = "'tokens' holds an id outside the vocabulary";
          return respond_error(ex, e);
        }
        ids.push_back(t.get<int32_t>());
      }
      return ex->respond(200, json_type(), ordered_json{{"prompt", tokenizer_->decode(ids, false)}}.dump());
    }
    std::vector<int32_t> ids;
    if (body.contains("prompt") && body["prompt"].is_string()) {
      ids = tokenizer_->encode(body["prompt"].get<std::string>(), body.value("add_special_tokens", true));
    } else if (body.contains("messages") && body["messages"].is_array() && chat_template_) {
      ChatTemplateInputs in;
      in.messages = body["messages"];
      in.add_generation_prompt = body.value("add_generation_prompt", true);
      in.bos_token = tokenizer_->settings().bos_token;
      in.eos_token = tokenizer_->settings().eos_token;
      auto text = chat_template_->render(in);
      if (!text.ok()) return respond_error(ex, api_error(text.status(), "messages"));
      ids = tokenizer_->encode(*text, false);
    } else {
      e.param = "prompt";
      e.message = "give 'prompt' (a string) or 'messages'";
      return respond_error(ex, e);
    }
    return ex->respond(200, json_type(), ordered_json{{"count", ids.size()}, {"max_model_len", engine_->model().info().max_positions}, {"tokens", ids}}.dump());
  }
  handle_completion(ex, path == "/v1/chat/completions" ? Endpoint::kChatCompletions : Endpoint::kCompletions, key_hash, key_class);
}

void ApiServer::handle_completion(const std::shared_ptr<HttpExchange>& ex, Endpoint endpoint, const std::string& key_hash,
                                  RequestClass key_class) {
  if (draining_) return respond_error(ex, api_error(Status(StatusCode::kUnavailable, "the server is shutting down")));
  ApiError error;
  auto parsed = parse_completion_request(ex->body(), endpoint, config_.default_sampling, &error);
  if (!parsed.ok()) return respond_error(ex, error);
  CompletionParams& p = *parsed;
  if (!p.model.empty() && p.model != config_.served_model_name) {
    ApiError e;
    e.http_status = 404;
    e.type = "not_found_error";
    e.param = "model";
    e.code = "model_not_found";
    e.message = "the model '" + p.model + "' does not exist (this server serves '" + config_.served_model_name + "')";
    return respond_error(ex, e);
  }

  // Prompt ids: chat template + tokenizer on this I/O thread.
  std::vector<int32_t> prompt;
  bool starts_in_reasoning = false;
  if (endpoint == Endpoint::kChatCompletions) {
    if (!chat_template_) {
      ApiError e;
      e.message = "this model has no chat template; use /v1/completions";
      return respond_error(ex, e);
    }
    ChatTemplateInputs in;
    in.messages = p.messages;
    in.tools = p.tools;
    in.extra = p.template_kwargs;
    in.add_generation_prompt = true;
    in.bos_token = tokenizer_->settings().bos_token;
    in.eos_token = tokenizer_->settings().eos_token;
    auto text = chat_template_->render(in);
    if (!text.ok()) return respond_error(ex, api_error(text.status(), "messages"));
    const std::string open = "<think>\n";
    starts_in_reasoning = reasoning_model_ && text->size() >= open.size() && text->compare(text->size() - open.size(), open.size(), open) == 0;
    prompt = tokenizer_->encode(*text, false);
  } else if (p.prompt_text) {
    prompt = tokenizer_->encode(*p.prompt_text, true);
  } else {
    for (int32_t id : p.prompt_ids)
      if (!tokenizer_->is_valid_id(id)) {
        ApiError e;
        e.param = "prompt";
        e.message = "token id " + std::to_string(id) + " is outside the vocabulary";
        return respond_error(ex, e);
      }
    prompt = p.prompt_ids;
  }
  const int64_t context = engine_->model().info().max_positions;
  const int64_t n_prompt = static_cast<int64_t>(prompt.size());
  const std::string prompt_param = endpoint == Endpoint::kChatCompletions ? "messages" : "prompt";
  if (n_prompt == 0) {
    ApiError e;
    e.param = prompt_param;
    e.message = "the prompt is empty";
    return respond_error(ex, e);
  }
  if (n_prompt >= context) {
    ApiError e;
    e.param = prompt_param;
    e.code = "context_length_exceeded";
    e.message = "this model's maximum context length is " + std::to_string(context) + " tokens, but the prompt has " +
                std::to_string(n_prompt) + " tokens";
    return respond_error(ex, e);
  }
  const int64_t max_tokens = p.max_tokens.value_or(context - n_prompt);
  if (n_prompt + max_tokens > context) {
    ApiError e;
    e.param = "max_tokens";
    e.code = "context_length_exceeded";
    e.message = "this model's maximum context length is " + std::to_string(context) + " tokens; the prompt has " +
                std::to_string(n_prompt) + " and max_tokens asks for " + std::to_string(max_tokens);
    return respond_error(ex, e);
  }

  auto job = std::make_shared<Job>();
  job->server = this;
  job->exchange = ex;
  job->params = p;
  job->model = config_.served_model_name;
  job->key_hash = key_hash;
  job->created = unix_time();
  job->id = std::string(endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-") + std::to_string(next_request_++) + "-" +
            std::to_string(job->created);
  job->cls = p.request_class.value_or(key_class);
  job->prompt_tokens = n_prompt;
  job->starts_in_reasoning = starts_in_reasoning;
  std::random_device random;
  for (int64_t i = 0; i < p.n; ++i) {
    auto c = std::make_shared<Job::Choice>();
    c->job_ref = job;
    c->index = static_cast<size_t>(i);
    c->decoder.emplace(*tokenizer_, /*skip_special_tokens=*/true);
    c->stops.emplace(p.stop);
    if (endpoint == Endpoint::kChatCompletions && reasoning_model_) c->reasoning.emplace(starts_in_reasoning);
    job->choices.push_back(c);
  }
  std::weak_ptr<Job> weak = job;
  ex->on_disconnect([weak] {
    if (auto j = weak.lock()) j->exchange->post([j] { j->on_disconnect(); });
  });
  for (size_t i = 0; i < job->choices.size(); ++i) {
    Request r;
    r.prompt = prompt;
    r.max_tokens = max_tokens;
    r.sampling = p.sampling;
    r.sampling.seed = p.seeded ? p.sampling.seed + i : (static_cast<uint64_t>(random()) << 32 | random());
    r.ignore_eos = p.ignore_eos;
    r.request_class = job->cls;
    r.priority = p.priority;
    r.top_logprobs = p.logprobs ? p.top_logprobs : -1;
    engine_->submit(std::move(r), job->choices[i]);
  }
}

}  // namespace seekserve
