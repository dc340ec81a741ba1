// seekserve loadgen: drives any OpenAI-compatible server (seekserve, llama-server, vLLM) with
// completions at a fixed concurrency or arrival rate and reports throughput, errors by status,
// and p50/p90/p99 of time to first token, inter-token latency and end-to-end latency.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "cli/commands.h"

namespace seekserve {

namespace {

using Clock = std::chrono::steady_clock;

struct LoadgenFlags {
  std::string url = "http://127.0.0.1:8000";
  std::string model;
  int concurrency = 8;
  double rate = 0.0;  // requests per second (open loop); 0 = closed loop at `concurrency`
  int64_t requests = 64;
  int64_t prompt_tokens = 64;
  int64_t max_tokens = 64;
  bool stream = false;
  std::string api_key;
  bool json = false;
  std::string write_batch_file;  // also write the same requests as a --batch-file (token ids from /tokenize)
};

struct Sample {
  int status = 0;
  double ttft = 0, e2e = 0;
  std::vector<double> itl;
  int64_t tokens = 0;
};

struct Target {
  std::string host;
  int port = 80;
};

Result<Target> parse_url(const std::string& url) {
  const std::string prefix = "http://";
  if (url.rfind(prefix, 0) != 0) return invalid_argument("--url must start with http:// (TLS is not supported)");
  std::string rest = url.substr(prefix.size());
  rest = rest.substr(0, rest.find('/'));
  Target t;
  const size_t colon = rest.rfind(':');
  t.host = colon == std::string::npos ? rest : rest.substr(0, colon);
  if (colon != std::string::npos) t.port = std::atoi(rest.substr(colon + 1).c_str());
  if (t.host.empty() || t.port <= 0) return invalid_argument("--url '" + url + "' has no host or port");
  return t;
}

int connect_to(const Target& t) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(t.host.c_str(), std::to_string(t.port).c_str(), &hints, &res) != 0) return -1;
  int fd = -1;
  for (addrinfo* p = res; p; p = p->ai_next) {
    fd = ::socket(p->ai_family, p->ai_socktype, p->ai_protocol);
    if (fd >= 0 && ::connect(fd, p->ai_addr, p->ai_addrlen) == 0) break;
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd >= 0) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{600, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  return fd;
}

// One request; token arrival times come from the SSE events (streaming) or the end (not).
Sample run_one(const Target& target, const LoadgenFlags& f, const std::string& body) {
  Sample s;
  const auto t0 = Clock::now();
  const int fd = connect_to(target);
  if (fd < 0) {
    s.status = -1;
    return s;
  }
  std::string req = "POST /v1/completions HTTP/1.1\r\nHost: " + target.host + "\r\nConnection: close\r\nContent-Type: application/json\r\n";
  if (!f.api_key.empty()) req += "Authorization: Bearer " + f.api_key + "\r\n";
  req += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) < 0) {
    ::close(fd);
    s.status = -1;
    return s;
  }
  std::string raw;
  char buf[16384];
  size_t scanned = 0;
  bool headers_done = false;
  Clock::time_point last;
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) {
    raw.append(buf, static_cast<size_t>(n));
    const auto now = Clock::now();
    if (!headers_done) {
      const size_t end = raw.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      headers_done = true;
      s.status = raw.size() > 12 ? std::atoi(raw.c_str() + 9) : 0;
      scanned = end + 4;
    }
    if (!f.stream || s.status != 200) continue;
    // Count "data: {" events with text as tokens (one token per event, as servers stream them).
    size_t pos;
    while ((pos = raw.find("data: {", scanned)) != std::string::npos) {
      const size_t event_end = raw.find("\n\n", pos);
      if (event_end == std::string::npos) break;
      const std::string_view event(raw.data() + pos, event_end - pos);
      if (event.find("\"text\":\"\"") == std::string_view::npos && event.find("\"choices\":[]") == std::string_view::npos) {
        if (s.tokens == 0) s.ttft = std::chrono::duration<double>(now - t0).count();
        else s.itl.push_back(std::chrono::duration<double>(now - last).count());
        last = now;
        ++s.tokens;
      }
      scanned = event_end + 2;
    }
  }
  ::close(fd);
  s.e2e = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!f.stream && s.status == 200) {
    const size_t body_at = raw.find("\r\n\r\n");
    const auto j = nlohmann::json::parse(raw.substr(body_at == std::string::npos ? raw.size() : body_at + 4), nullptr, false);
    if (j.is_object() && j.contains("usage")) s.tokens = j["usage"].value("completion_tokens", 0);
    s.ttft = s.e2e;
  }
  return s;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5))];
}

int run_loadgen(const LoadgenFlags& f) {
  auto target = parse_url(f.url);
  if (!target.ok()) return report_error(target.status());
  if (f.concurrency < 1 || f.requests < 1 || f.max_tokens < 1 || f.prompt_tokens < 1 || f.rate < 0)
    return report_error(invalid_argument("--concurrency, --requests, --prompt-tokens and --max-tokens must be positive"));
  // Prompts of about --prompt-tokens tokens: distinct words so prefix caching does not flatter.
  std::mt19937 rng(1);
  static const char* kWords[] = {"the", "jury", "said", "report", "city", "election", "money", "state", "court", "time"};
  std::vector<std::string> bodies;
  for (int64_t i = 0; i < f.requests; ++i) {
    std::string prompt = "Request " + std::to_string(i) + ":";
    for (int64_t w = 0; w < f.prompt_tokens - 3; ++w) prompt += std::string(" ") + kWords[rng() % 10];
    nlohmann::json body = {{"prompt", prompt}, {"max_tokens", f.max_tokens}, {"temperature", 0}, {"ignore_eos", true}, {"stream", f.stream}};
    if (!f.model.empty()) body["model"] = f.model;
    bodies.push_back(body.dump());
  }
  if (!f.write_batch_file.empty()) {
    // The same requests for `seekserve generate --batch-file`, to measure what HTTP costs.
    std::FILE* out = std::fopen(f.write_batch_file.c_str(), "w");
    if (!out) return report_error(not_found(f.write_batch_file + ": cannot write"));
    for (const std::string& b : bodies) {
      const auto body = nlohmann::json::parse(b);
      const std::string req_body = nlohmann::json{{"prompt", body["prompt"]}}.dump();
      const int fd = connect_to(*target);
      if (fd < 0) return report_error(Status(StatusCode::kUnavailable, "cannot connect to " + f.url));
      const std::string req = "POST /tokenize HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(req_body.size()) + "\r\n\r\n" + req_body;
      (void)!::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
      std::string raw;
      char buf[65536];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) raw.append(buf, static_cast<size_t>(n));
      ::close(fd);
      const auto tok = nlohmann::json::parse(raw.substr(raw.find("\r\n\r\n") + 4), nullptr, false);
      if (!tok.is_object() || !tok.contains("tokens")) return report_error(internal_error("/tokenize did not answer with tokens"));
      std::fprintf(out, "%s\n", nlohmann::json{{"prompt_ids", tok["tokens"]}, {"max_tokens", f.max_tokens}, {"temperature", 0}, {"ignore_eos", true}}.dump().c_str());
    }
    std::fclose(out);
  }
  std::vector<Sample> samples(static_cast<size_t>(f.requests));
  std::atomic<int64_t> next{0};
  const auto t0 = Clock::now();
  auto worker = [&]() {
    while (true) {
      const int64_t i = next.fetch_add(1);
      if (i >= f.requests) return;
      if (f.rate > 0) std::this_thread::sleep_until(t0 + std::chrono::duration<double>(static_cast<double>(i) / f.rate));
      samples[static_cast<size_t>(i)] = run_one(*target, f, bodies[static_cast<size_t>(i)]);
    }
  };
  const int threads = f.rate > 0 ? static_cast<int>(std::min<int64_t>(f.requests, 4096)) : f.concurrency;
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();

  std::map<int, int64_t> by_status;
  std::vector<double> ttft, itl, e2e;
  int64_t tokens = 0;
  for (const Sample& s : samples) {
    ++by_status[s.status];
    if (s.status != 200) continue;
    tokens += s.tokens;
    ttft.push_back(s.ttft);
    e2e.push_back(s.e2e);
    itl.insert(itl.end(), s.itl.begin(), s.itl.end());
  }
  nlohmann::ordered_json out;
  out["requests"] = f.requests;
  out["seconds"] = seconds;
  out["completed"] = by_status[200];
  out["output_tokens_per_s"] = static_cast<double>(tokens) / seconds;
  out["requests_per_s"] = static_cast<double>(by_status[200]) / seconds;
  nlohmann::ordered_json errors = nlohmann::ordered_json::object();
  for (const auto& [status, n] : by_status)
    if (status != 200) errors[status < 0 ? "connect" : std::to_string(status)] = n;
  out["errors"] = errors;
  for (const auto& [name, v] : std::vector<std::pair<std::string, std::vector<double>>>{{"ttft_s", ttft}, {"itl_s", itl}, {"e2e_s", e2e}})
    out[name] = {{"p50", percentile(v, 0.5)}, {"p90", percentile(v, 0.9)}, {"p99", percentile(v, 0.99)}};
  if (f.json) {
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("%lld requests in %.2f s: %lld completed, %.1f output tok/s, %.2f req/s, errors %s\n", static_cast<long long>(f.requests),
                seconds, static_cast<long long>(by_status[200]), out["output_tokens_per_s"].get<double>(), out["requests_per_s"].get<double>(),
                errors.dump().c_str());
    for (const char* name : {"ttft_s", "itl_s", "e2e_s"})
      std::printf("  %-7s p50 %.4f  p90 %.4f  p99 %.4f\n", name, out[name]["p50"].get<double>(), out[name]["p90"].get<double>(),
                  out[name]["p99"].get<double>());
  }
  return by_status[200] > 0 ? 0 : 1;
}

}  // namespace

CommandMain add_loadgen_command(CLI::App& app) {
  auto f = std::make_shared<LoadgenFlags>();
  CLI::App* cmd = app.add_subcommand("loadgen", "drive an OpenAI-compatible server and report throughput and latency percentiles");
  cmd->add_option("--url", f->url, "server base URL (http://host:port)");
  cmd->add_option("--model", f->model, "model name to send");
  cmd->add_option("--concurrency", f->concurrency, "requests in flight (closed loop)");
  cmd->add_option("--rate", f->rate, "arrival rate in requests/s (open loop; overrides --concurrency)");
  cmd->add_option("--requests", f->requests, "requests to send");
  cmd->add_option("--prompt-tokens", f->prompt_tokens, "approximate prompt length");
  cmd->add_option("--max-tokens", f->max_tokens, "tokens to generate per request");
  cmd->add_flag("--stream", f->stream, "stream responses (measures time to first token and inter-token latency)");
  cmd->add_option("--api-key", f->api_key, "Bearer key");
  cmd->add_flag("--json", f->json, "print one JSON object");
  cmd->add_option("--write-batch-file", f->write_batch_file,
                  "also write the requests as a generate --batch-file (token ids from the server's /tokenize)");
  return [cmd, f]() -> int { return cmd->parsed() ? run_loadgen(*f) : -1; };
}

}  // namespace seekserve
