// An asynchronous HTTP/1.1 server on Boost.Beast: a few I/O threads hold any number of
// keep-alive connections; each request becomes an HttpExchange handed to one handler function.
// Responses are whole bodies or chunked streams (server-sent events); both may be produced from
// any thread (the exchange posts to its connection's strand).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace seekserve {

struct HttpLimits {
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 8 * 1024 * 1024;            // larger bodies get 413
  std::chrono::seconds idle_timeout{60};              // keep-alive connections with no request
  std::chrono::seconds write_timeout{120};            // a client that stops reading is dropped
  size_t max_pending_write_bytes = 32 * 1024 * 1024;  // per connection, for slow stream readers
};

using Headers = std::vector<std::pair<std::string, std::string>>;

class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual std::string_view method() const = 0;
  virtual std::string_view path() const = 0;   // target without the query string
  virtual std::string_view header(std::string_view name) const = 0;  // "" when absent
  virtual const std::string& body() const = 0;

  // A complete response. Call once (or use the stream calls instead).
  virtual void respond(int status, std::string content_type, std::string body, Headers headers = {}) = 0;
  // A chunked 200 response: begin, any number of sends, end.
  virtual void begin_stream(std::string content_type, Headers headers = {}) = 0;
  virtual void send(std::string data) = 0;
  virtual void end_stream() = 0;
  // Registers fn to run once if the client disconnects before the response ends.
  virtual void on_disconnect(std::function<void()> fn) = 0;
  // Runs fn on this connection's I/O strand (in order with earlier posts).
  virtual void post(std::function<void()> fn) = 0;
};

using HttpHandler = std::function<void(std::shared_ptr<HttpExchange>)>;

class HttpServer {
 public:
  HttpServer(HttpLimits limits, HttpHandler handler);
  ~HttpServer();
  // Binds and starts accepting on `threads` I/O threads. Returns the bound port (for port 0).
  Result<int> start(const std::string& host, int port, int threads);
  // Stops accepting new connections; open connections finish their current requests.
  void stop_accepting();
  // Stops everything and joins the I/O threads.
  void stop();
  int64_t open_connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace seekserve
