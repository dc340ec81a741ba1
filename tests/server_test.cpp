// Black-box tests of `seekserve serve` on the bundled tiny model over real HTTP on 127.0.0.1:
// answers against the goldens, SSE framing, every error path, auth, overload, cancellation and
// SIGTERM draining.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace seekserve {
namespace {

using json = nlohmann::json;

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                             // de-chunked
};

int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

std::string build_request(const std::string& method, const std::string& path, const std::string& body, const std::string& extra_headers) {
  return method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n" + extra_headers + "\r\n" + body;
}

HttpResponse parse_response(const std::string& raw) {
  HttpResponse r;
  const size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos) return r;
  std::istringstream head(raw.substr(0, head_end));
  std::string line;
  std::getline(head, line);
  r.status = std::stoi(line.substr(9, 3));
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r.headers[name] = line.substr(colon + 2);
  }
  std::string body = raw.substr(head_end + 4);
  if (r.headers["transfer-encoding"] == "chunked") {
    std::string out;
    size_t i = 0;
    while (i < body.size()) {
      const size_t eol = body.find("\r\n", i);
      if (eol == std::string::npos) break;
      const size_t n = std::stoul(body.substr(i, eol - i), nullptr, 16);
      if (n == 0) break;
      out += body.substr(eol + 2, n);
      i = eol + 2 + n + 2;
    }
    body = out;
  }
  r.body = body;
  return r;
}

HttpResponse http(int port, const std::string& method, const std::string& path, const std::string& body = "",
                  const std::string& extra_headers = "") {
  const int fd = connect_to(port);
  if (fd < 0) return {};
  const std::string req = build_request(method, path, body, extra_headers);
  (void)!::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string raw;
  char buf[65536];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) raw.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return parse_response(raw);
}

class ServerProcess {
 public:
  explicit ServerProcess(const std::vector<std::string>& extra = {},
                         const std::string& model = testing::source_dir() + "/models/tiny-deepseek-v3") {
    log_ = testing::make_temp_dir("serve") + "/stderr";
    std::vector<std::string> args = {SEEKSERVE_BINARY, "serve", "--model", model, "--port", "0", "--threads", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    for (int i = 0; i < 200 && port_ == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::ifstream in(log_);
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      const size_t at = text.find("on http://127.0.0.1:");
      if (at != std::string::npos) port_ = std::stoi(text.substr(at + 20));
    }
  }
  ~ServerProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  int port() const { return port_; }
  int terminate_and_wait() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    exited_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  std::string log() const {
    std::ifstream in(log_);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  bool exited_ = false;
  std::string log_;
};

// Data lines of an SSE body, checking the framing: "data: ...\n\n" and a final [DONE].
std::vector<std::string> sse_events(const std::string& body) {
  std::vector<std::string> events;
  size_t i = 0;
  while (i < body.size()) {
    const size_t end = body.find("\n\n", i);
    EXPECT_NE(end, std::string::npos) << "an event without its blank line";
    if (end == std::string::npos) break;
    const std::string event = body.substr(i, end - i);
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
    events.push_back(event.substr(6));
    i = end + 2;
  }
  EXPECT_FALSE(events.empty());
  if (!events.empty()) {
    EXPECT_EQ(events.back(), "[DONE]");
  }
  return events;
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess({"--max-body-bytes", "100000"});
    ASSERT_GT(server_->port(), 0) << server_->log();
  }
  static void TearDownTestSuite() { delete server_; }
  static ServerProcess* server_;
};
ServerProcess* ServerTest::server_ = nullptr;

TEST_F(ServerTest, CompletionOfGoldenPromptMatchesReference) {
  testing::Golden golden("tiny-deepseek-v3");
  auto tokenizer = Tokenizer::load(testing::source_dir() + "/models/tiny-deepseek-v3");
  ASSERT_TRUE(tokenizer.ok());
  const json req = {{"model", "tiny-deepseek-v3"}, {"prompt", golden.ints("p1.ids")}, {"max_tokens", 24}, {"temperature", 0}, {"ignore_eos", true}};
  const HttpResponse r = http(server_->port(), "POST", "/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], (*tokenizer)->decode(golden.ints("p1.greedy"), true));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 7);
  EXPECT_EQ(j["usage"]["completion_tokens"], 24);
  EXPECT_EQ(j["usage"]["total_tokens"], 31);
}

TEST_F(ServerTest, StreamingChatMatchesNonStreaming) {
  const json base = {{"messages", {{{"role", "user"}, {"content", "What did the jury say?"}}}}, {"max_tokens", 30}, {"temperature", 0}};
  const HttpResponse whole = http(server_->port(), "POST", "/v1/chat/completions", base.dump());
  ASSERT_EQ(whole.status, 200) << whole.body;
  const json w = json::parse(whole.body);
  EXPECT_EQ(w["object"], "chat.completion");
  EXPECT_EQ(w["choices"][0]["message"]["role"], "assistant");
  json streamed = base;
  streamed["stream"] = true;
  streamed["stream_options"] = {{"include_usage", true}};
  const HttpResponse s = http(server_->port(), "POST", "/v1/chat/completions", streamed.dump());
  ASSERT_EQ(s.status, 200);
  EXPECT_EQ(s.headers.at("content-type"), "text/event-stream");
  const auto events = sse_events(s.body);
  std::string text, finish;
  json usage;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json e = json::parse(events[i]);
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    if (e["choices"].empty()) {
      usage = e["usage"];
      continue;
    }
    const json& delta = e["choices"][0]["delta"];
    if (delta.contains("content")) text += delta["content"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, w["choices"][0]["message"]["content"]);
  EXPECT_EQ(finish, w["choices"][0]["finish_reason"]);
  EXPECT_EQ(usage, w["usage"]);
}

TEST_F(ServerTest, StopStringsSeedsChoicesAndLogprobs) {
  const json base = {{"prompt", "The jury said"}, {"max_tokens", 16}, {"temperature", 0.9}, {"seed", 7}, {"n", 2}, {"logprobs", 3}};
  const json a = json::parse(http(server_->port(), "POST", "/v1/completions", base.dump()).body);
  const json b = json::parse(http(server_->port(), "POST", "/v1/completions", base.dump()).body);
  ASSERT_EQ(a["choices"].size(), 2u);
  EXPECT_EQ(a["choices"], b["choices"]) << "same seed, same answers";
  EXPECT_EQ(a["choices"][0]["logprobs"]["top_logprobs"][0].size(), 3u);
  // A stop string cuts the text before it.
  const json greedy = {{"prompt", "The jury said"}, {"max_tokens", 20}, {"temperature", 0}, {"ignore_eos", true}};
  const std::string full = json::parse(http(server_->port(), "POST", "/v1/completions", greedy.dump()).body)["choices"][0]["text"];
  json with_stop = greedy;
  with_stop["stop"] = full.substr(10, 4);
  const json cut = json::parse(http(server_->port(), "POST", "/v1/completions", with_stop.dump()).body);
  EXPECT_EQ(cut["choices"][0]["text"], full.substr(0, full.find(full.substr(10, 4))));
  EXPECT_EQ(cut["choices"][0]["finish_reason"], "stop");
}

TEST_F(ServerTest, ErrorsUseOpenAIBodiesAndStatusCodes) {
  struct Case {
    std::string method, path, body;
    int status;
    std::string param;
  };
  const std::string big(150000, 'x');
  const std::vector<Case> cases = {
      {"POST", "/v1/chat/completions", "{not json", 400, ""},
      {"POST", "/v1/chat/completions", R"({"messages": [{"role": "user", "content": "hi"}], "temperature": 5})", 400, "temperature"},
      {"POST", "/v1/chat/completions", R"({"messages": "hi"})", 400, "messages"},
      {"POST", "/v1/completions", R"({"prompt": "hi", "max_tokens": 0})", 400, "max_tokens"},
      {"POST", "/v1/completions", R"({"prompt": "hi", "max_tokens": 5000})", 400, "max_tokens"},
      {"POST", "/v1/completions", R"({"prompt": [1, 999999]})", 400, "prompt"},
      {"POST", "/v1/completions", R"({"prompt": "hi", "stop": 7})", 400, "stop"},
      {"POST", "/v1/chat/completions", R"({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]})", 404, "model"},
      {"GET", "/v1/chat/completions", "", 405, ""},
      {"POST", "/v1/nothing", "{}", 404, ""},
      {"POST", "/v1/completions", big, 413, ""},
      {"POST", "/v1/completions", "{\"prompt\": \"\xff\xfe bad utf-8\"}", 400, ""},
      {"POST", "/v1/completions", R"({"prompt": "hi", "stream_options": {"include_usage": true}})", 400, "stream_options"},
      {"POST", "/v1/chat/completions", R"({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3})", 400, "top_logprobs"},
  };
  for (const Case& c : cases) {
    const HttpResponse r = http(server_->port(), c.method, c.path, c.body);
    EXPECT_EQ(r.status, c.status) << c.method << " " << c.path << " " << c.body.substr(0, 80) << " -> " << r.body;
    const json j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object() && j.contains("error")) << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_TRUE(j["error"]["type"].is_string());
    EXPECT_EQ(j["error"]["param"].is_null() ? "" : j["error"]["param"].get<std::string>(), c.param) << r.body;
    if (c.status == 405) {
      EXPECT_EQ(r.headers.at("allow"), "POST");
    }
  }
  // The server is still healthy after all of that.
  EXPECT_EQ(http(server_->port(), "GET", "/health").status, 200);
  EXPECT_EQ(http(server_->port(), "GET", "/ready").status, 200);
}

TEST_F(ServerTest, ModelsTokenizeAndMetrics) {
  const json models = json::parse(http(server_->port(), "GET", "/v1/models").body);
  EXPECT_EQ(models["data"][0]["id"], "tiny-deepseek-v3");
  const json tok = json::parse(http(server_->port(), "POST", "/tokenize", R"({"prompt": "The jury said"})").body);
  EXPECT_EQ(tok["tokens"], json::array({0, 476, 4715, 555}));
  const json detok = json::parse(http(server_->port(), "POST", "/detokenize", R"({"tokens": [476, 4715, 555]})").body);
  EXPECT_EQ(detok["prompt"], "The jury said");
  const HttpResponse m = http(server_->port(), "GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  for (const char* name : {"seekserve_num_requests_running", "seekserve_kv_cache_usage_perc", "seekserve_prefix_cache_hits_total",
                           "seekserve_time_to_first_token_seconds_bucket", "seekserve_request_success_total", "seekserve_generation_tokens_total"})
    EXPECT_NE(m.body.find(name), std::string::npos) << name;
}

TEST_F(ServerTest, ClientDisconnectFreesItsSequence) {
  const int fd = connect_to(server_->port());
  ASSERT_GE(fd, 0);
  const std::string body = R"({"prompt": "The jury said", "max_tokens": 3000, "ignore_eos": true, "stream": true})";
  const std::string req = build_request("POST", "/v1/completions", body, "");
  ASSERT_GT(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), 0);
  char buf[4096];
  ASSERT_GT(::recv(fd, buf, sizeof buf, 0), 0);  // the stream started
  ::close(fd);
  // Running requests and KV usage return to zero at the next steps.
  bool freed = false;
  for (int i = 0; i < 100 && !freed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const std::string metrics = http(server_->port(), "GET", "/metrics").body;
    freed = metrics.find("seekserve_num_requests_running{model=\"tiny-deepseek-v3\",class=\"interactive\"} 0") != std::string::npos &&
            metrics.find("seekserve_kv_cache_usage_perc{model=\"tiny-deepseek-v3\"} 0\n") != std::string::npos;
  }
  EXPECT_TRUE(freed);
}

TEST_F(ServerTest, SixtyFourConcurrentStreamsAllCompleteWithTheRightText) {
  const json greedy = {{"prompt", "The jury said"}, {"max_tokens", 24}, {"temperature", 0}, {"ignore_eos", true}};
  const std::string expected = json::parse(http(server_->port(), "POST", "/v1/completions", greedy.dump()).body)["choices"][0]["text"];
  json streamed = greedy;
  streamed["stream"] = true;
  std::vector<std::string> texts(64);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < texts.size(); ++i)
    clients.emplace_back([&, i] {
      const HttpResponse r = http(server_->port(), "POST", "/v1/completions", streamed.dump());
      if (r.status != 200) return;
      for (const std::string& e : sse_events(r.body))
        if (e != "[DONE]") texts[i] += json::parse(e)["choices"][0]["text"].get<std::string>();
    });
  for (auto& t : clients) t.join();
  for (const std::string& t : texts) EXPECT_EQ(t, expected);
}

TEST_F(ServerTest, TruncatedBodiesAndKeepAlive) {
  // A body shorter than its Content-Length, then the client gives up: no answer, no harm.
  int fd = connect_to(server_->port());
  ASSERT_GE(fd, 0);
  const std::string partial = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"prompt\": \"hi";
  ASSERT_GT(::send(fd, partial.data(), partial.size(), MSG_NOSIGNAL), 0);
  ::shutdown(fd, SHUT_WR);
  char buf[4096];
  EXPECT_LE(::recv(fd, buf, sizeof buf, 0), 0);
  ::close(fd);
  // Two requests on one keep-alive connection.
  fd = connect_to(server_->port());
  ASSERT_GE(fd, 0);
  const std::string body = R"({"prompt": "The jury said", "max_tokens": 3})";
  const std::string one = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  std::string raw;
  for (int round = 0; round < 2; ++round) {
    ASSERT_GT(::send(fd, one.data(), one.size(), MSG_NOSIGNAL), 0);
    // Read one whole response: headers, then Content-Length bytes.
    std::string response;
    while (true) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      ASSERT_GT(n, 0) << "connection closed after " << round << " responses";
      response.append(buf, static_cast<size_t>(n));
      const size_t end = response.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      const size_t cl = response.find("Content-Length: ");
      const size_t length = std::stoul(response.substr(cl + 16));
      if (response.size() >= end + 4 + length) break;
    }
    EXPECT_EQ(parse_response(response).status, 200) << response;
  }
  ::close(fd);
  EXPECT_EQ(http(server_->port(), "GET", "/health").status, 200);
}

TEST_F(ServerTest, ASlowStreamReaderDoesNotHoldUpOthers) {
  const int slow = connect_to(server_->port());
  ASSERT_GE(slow, 0);
  int small = 4096;
  setsockopt(slow, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  const std::string long_request = R"({"prompt": "The jury said", "max_tokens": 300, "ignore_eos": true, "temperature": 0)";
  const std::string req = build_request("POST", "/v1/completions", long_request + R"(, "stream": true})", "");
  ASSERT_GT(::send(slow, req.data(), req.size(), MSG_NOSIGNAL), 0);
  // While the slow client reads nothing, another request completes.
  const auto t0 = std::chrono::steady_clock::now();
  const HttpResponse quick = http(server_->port(), "POST", "/v1/completions", R"({"prompt": "Hello", "max_tokens": 4})");
  EXPECT_EQ(quick.status, 200);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  // The slow client then reads its whole stream, intact.
  std::string raw;
  char buf[8192];
  ssize_t n;
  while ((n = ::recv(slow, buf, sizeof buf, 0)) > 0) raw.append(buf, static_cast<size_t>(n));
  ::close(slow);
  const HttpResponse r = parse_response(raw);
  ASSERT_EQ(r.status, 200);
  std::string text;
  for (const std::string& e : sse_events(r.body))
    if (e != "[DONE]") text += json::parse(e)["choices"][0]["text"].get<std::string>();
  const json whole = json::parse(http(server_->port(), "POST", "/v1/completions", long_request + "}").body);
  EXPECT_EQ(text, whole["choices"][0]["text"]);
  EXPECT_EQ(whole["usage"]["completion_tokens"], 300);
}

TEST(ServerAuthTest, ApiKeysAreRequiredWhereConfigured) {
  ServerProcess server({"--api-key", "k1", "--api-key", "k2"});
  ASSERT_GT(server.port(), 0) << server.log();
  const std::string body = R"({"prompt": "x", "max_tokens": 2})";
  EXPECT_EQ(http(server.port(), "POST", "/v1/completions", body).status, 401);
  EXPECT_EQ(http(server.port(), "POST", "/v1/completions", body, "Authorization: Bearer wrong\r\n").status, 401);
  EXPECT_EQ(http(server.port(), "POST", "/v1/completions", body, "Authorization: Bearer k2\r\n").status, 200);
  EXPECT_EQ(http(server.port(), "GET", "/health").status, 200);  // open unless --protect-health
  EXPECT_EQ(server.log().find("k2"), std::string::npos) << "keys are never logged";
}

TEST(ServerOverloadTest, BurstBeyondTheQueueGets503WithRetryAfter) {
  ServerProcess server({"--max-waiting", "2", "--max-batch", "2"});
  ASSERT_GT(server.port(), 0) << server.log();
  std::vector<HttpResponse> responses(20);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < responses.size(); ++i)
    clients.emplace_back([&, i] {
      responses[i] = http(server.port(), "POST", "/v1/completions", R"({"prompt": "The jury said", "max_tokens": 200, "ignore_eos": true})");
    });
  for (auto& t : clients) t.join();
  int ok = 0, overloaded = 0;
  for (const HttpResponse& r : responses) {
    if (r.status == 200) {
      ++ok;
      EXPECT_EQ(json::parse(r.body)["usage"]["completion_tokens"], 200);
    } else {
      EXPECT_EQ(r.status, 503) << r.body;
      EXPECT_EQ(r.headers.at("retry-after"), "1");
      ++overloaded;
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_GT(overloaded, 0);
}

TEST(ServerReasoningTest, ThinkingOutputGoesToReasoningContent) {
  // The tiny model with an R1-style template that opens the assistant turn with "<think>\n":
  // everything up to </think> (which this model never writes) is reasoning, streamed as its own deltas.
  namespace fs = std::filesystem;
  const std::string source = testing::source_dir() + "/models/tiny-deepseek-v3";
  const std::string dir = testing::make_temp_dir("r1");
  for (const auto& entry : fs::directory_iterator(source)) fs::copy(entry.path(), dir + "/" + entry.path().filename().string());
  std::ifstream in(dir + "/tokenizer_config.json");
  json config = json::parse(in);
  in.close();
  std::string tmpl = config["chat_template"];
  const std::string gen = "{{'<｜Assistant｜>'}}{% endif %}";
  ASSERT_NE(tmpl.rfind(gen), std::string::npos);
  tmpl.replace(tmpl.rfind(gen), gen.size(), "{{'<｜Assistant｜><think>\n'}}{% endif %}");
  config["chat_template"] = tmpl;
  fs::remove(dir + "/tokenizer_config.json");
  std::ofstream(dir + "/tokenizer_config.json") << config.dump();
  ServerProcess server({}, dir);
  ASSERT_GT(server.port(), 0) << server.log();
  const json req = {{"messages", {{{"role", "user"}, {"content", "Why?"}}}}, {"max_tokens", 16}, {"temperature", 0}, {"ignore_eos", true}};
  const json whole = json::parse(http(server.port(), "POST", "/v1/chat/completions", req.dump()).body);
  const json& message = whole["choices"][0]["message"];
  EXPECT_EQ(message["content"], "");
  EXPECT_FALSE(message["reasoning_content"].get<std::string>().empty());
  json streamed = req;
  streamed["stream"] = true;
  std::string reasoning, content;
  for (const std::string& e : sse_events(http(server.port(), "POST", "/v1/chat/completions", streamed.dump()).body)) {
    if (e == "[DONE]") continue;
    const json delta = json::parse(e)["choices"][0]["delta"];
    if (delta.contains("reasoning_content")) reasoning += delta["reasoning_content"].get<std::string>();
    if (delta.contains("content")) content += delta["content"].get<std::string>();
  }
  EXPECT_EQ(reasoning, message["reasoning_content"]);
  EXPECT_EQ(content, "");
  fs::remove_all(dir);
}

TEST(ServerShutdownTest, SigtermDrainsInFlightRequests) {
  ServerProcess server({"--grace-seconds", "30"});
  ASSERT_GT(server.port(), 0) << server.log();
  HttpResponse in_flight;
  std::thread client([&] {
    in_flight = http(server.port(), "POST", "/v1/completions", R"({"prompt": "The jury said", "max_tokens": 400, "ignore_eos": true})");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_EQ(server.terminate_and_wait(), 0);
  client.join();
  EXPECT_EQ(in_flight.status, 200) << in_flight.body;
  EXPECT_EQ(json::parse(in_flight.body)["usage"]["completion_tokens"], 400);
}

}  // namespace
}  // namespace seekserve
