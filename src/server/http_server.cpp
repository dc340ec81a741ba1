#include "server/http_server.h"

#include <atomic>
#include <sys/socket.h>

#include <boost/asio.hpp>
#include <cerrno>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

namespace seekserve {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

const char* reason_phrase(int status) {
  return http::obsolete_reason(static_cast<http::status>(status)).data();
}

class Session;

// One request on a connection. Every public method may be called from any thread.
class Exchange final : public HttpExchange, public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(std::shared_ptr<Session> session, http::request<http::string_body> request)
      : session_(std::move(session)), request_(std::move(request)) {
    const auto target = request_.target();
    path_ = std::string(target.substr(0, target.find('?')));
  }
  std::string_view method() const override {
    const auto m = request_.method_string();
    return std::string_view(m.data(), m.size());
  }
  std::string_view path() const override { return path_; }
  std::string_view header(std::string_view name) const override {
    auto it = request_.find(beast::string_view(name.data(), name.size()));
    return it == request_.end() ? std::string_view() : std::string_view(it->value().data(), it->value().size());
  }
  const std::string& body() const override { return request_.body(); }
  void respond(int status, std::string content_type, std::string body, Headers headers) override;
  void begin_stream(std::string content_type, Headers headers) override;
  void send(std::string data) override;
  void end_stream() override;
  void on_disconnect(std::function<void()> fn) override;
  void post(std::function<void()> fn) override;

  bool keep_alive() const { return request_.keep_alive(); }
  void disconnected() {
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (finished_) return;
      finished_ = true;
      fn = std::move(on_disconnect_);
    }
    if (fn) fn();
  }

 private:
  std::shared_ptr<Session> session_;
  http::request<http::string_body> request_;
  std::string path_;
  std::mutex mutex_;
  bool finished_ = false;
  std::function<void()> on_disconnect_;
  friend class Session;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const HttpLimits& limits, const HttpHandler& handler, std::atomic<int64_t>* open)
      : stream_(std::move(socket)), strand_(net::make_strand(stream_.get_executor())), limits_(limits), handler_(handler), open_(open) {
    ++*open_;
  }
  ~Session() { --*open_; }

  void start() { net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_request(); }); }

  // --- called through the exchange, from any thread
  void post(std::function<void()> fn) { net::post(stream_.get_executor(), std::move(fn)); }

  void write_whole(std::shared_ptr<Exchange> ex, std::string bytes) {
    post([self = shared_from_this(), ex, bytes = std::move(bytes)]() mutable {
      self->enqueue(std::move(bytes));
      self->response_done_ = true;
      self->keep_alive_ = ex->keep_alive();
      self->current_.reset();
      self->flush();
    });
  }
  void write_part(std::string bytes, bool last, bool keep_alive) {
    post([self = shared_from_this(), bytes = std::move(bytes), last, keep_alive]() mutable {
      if (self->closed_) return;
      self->enqueue(std::move(bytes));
      if (last) {
        self->response_done_ = true;
        self->keep_alive_ = keep_alive;
        self->current_.reset();
      }
      self->flush();
    });
  }

 private:
  void read_request() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(limits_.max_header_bytes));
    parser_->body_limit(limits_.max_body_bytes);
    stream_.expires_after(limits_.idle_timeout);
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::body_limit || ec == http::error::header_limit) {
      const bool body = ec == http::error::body_limit;
      std::string msg = body ? "the request body exceeds " + std::to_string(limits_.max_body_bytes) + " bytes"
                             : "the request headers exceed " + std::to_string(limits_.max_header_bytes) + " bytes";
      const std::string json = "{\"error\":{\"message\":\"" + msg + "\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}";
      enqueue(serialize(body ? 413 : 431, "application/json", json, {}, /*keep_alive=*/false));
      response_done_ = true;
      keep_alive_ = false;
      flush();
      return;
    }
    if (ec) return close();  // closed, timed out or malformed: nothing to answer
    stream_.expires_never();
    auto ex = std::make_shared<Exchange>(shared_from_this(), parser_->release());
    current_ = ex;
    response_done_ = false;
    watch_for_disconnect();
    handler_(ex);
  }

  // While a response is pending, a read that returns EOF means the client left. The wait can
  // report readiness with nothing to read (the reactor remembers earlier readiness), so the peek
  // must not block: a blocking peek would stall this connection's strand until the client gave up.
  void watch_for_disconnect() {
    stream_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
      if (self->response_done_ || self->closed_) return;
      if (ec) return self->close();
      char probe;
      const ssize_t n = ::recv(self->stream_.socket().native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return self->close();
      if (n < 0) {
        // Nothing there yet: look again after a moment (readiness may be stale).
        auto timer = std::make_shared<net::steady_timer>(self->stream_.get_executor(), std::chrono::milliseconds(50));
        timer->async_wait([self, timer](beast::error_code) { self->watch_for_disconnect(); });
      }
      // n > 0: the client sent more (a pipelined request); it is read after this response.
    });
  }

  void enqueue(std::string bytes) {
    pending_bytes_ += bytes.size();
    queue_.push_back(std::move(bytes));
    if (pending_bytes_ > limits_.max_pending_write_bytes) close();  // a reader that fell hopelessly behind
  }

  void flush() {
    if (writing_ || closed_) return;
    if (queue_.empty()) {
      if (response_done_) {
        if (keep_alive_) {
          response_done_ = false;
          read_request();
        } else {
          close();
        }
      }
      return;
    }
    writing_ = true;
    stream_.expires_after(limits_.write_timeout);
    net::async_write(stream_, net::buffer(queue_.front()), [self = shared_from_this()](beast::error_code ec, size_t) {
      self->writing_ = false;
      if (ec) return self->close();
      self->pending_bytes_ -= self->queue_.front().size();
      self->queue_.pop_front();
      self->stream_.expires_never();
      self->flush();
    });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
    if (auto ex = current_) {
      current_.reset();
      ex->disconnected();
    }
  }

 public:
  static std::string serialize(int status, const std::string& content_type, const std::string& body, const Headers& headers, bool keep_alive) {
    std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
    out += "Server: seekserve\r\nContent-Type: " + content_type + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    for (const auto& [k, v] : headers) out += k + ": " + v + "\r\n";
    out += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
    return out + body;
  }

 private:
  beast::tcp_stream stream_;
  net::strand<net::any_io_executor> strand_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  const HttpLimits& limits_;
  const HttpHandler& handler_;
  std::atomic<int64_t>* open_;
  std::deque<std::string> queue_;
  size_t pending_bytes_ = 0;
  bool writing_ = false, closed_ = false, response_done_ = false, keep_alive_ = true;
  std::shared_ptr<Exchange> current_;
};

void Exchange::respond(int status, std::string content_type, std::string body, Headers headers) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    finished_ = true;
    on_disconnect_ = nullptr;  // drops what the callback holds (it may hold this exchange)
  }
  session_->write_whole(shared_from_this(), Session::serialize(status, content_type, body, headers, keep_alive()));
}

void Exchange::begin_stream(std::string content_type, Headers headers) {
  std::string out = "HTTP/1.1 200 OK\r\nServer: seekserve\r\nContent-Type: " + content_type +
                    "\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n";
  for (const auto& [k, v] : headers) out += k + ": " + v + "\r\n";
  out += keep_alive() ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  session_->write_part(std::move(out), false, keep_alive());
}

void Exchange::send(std::string data) {
  if (data.empty()) return;
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  session_->write_part(size + data + "\r\n", false, keep_alive());
}

void Exchange::end_stream() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    finished_ = true;
    on_disconnect_ = nullptr;
  }
  session_->write_part("0\r\n\r\n", true, keep_alive());
}

void Exchange::on_disconnect(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!finished_) on_disconnect_ = std::move(fn);
}

void Exchange::post(std::function<void()> fn) { session_->post(std::move(fn)); }

}  // namespace

struct HttpServer::Impl {
  HttpLimits limits;
  HttpHandler handler;
  net::io_context io;
  std::optional<tcp::acceptor> acceptor;
  std::vector<std::thread> threads;
  std::atomic<int64_t> open{0};
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;

  void accept() {
    acceptor->async_accept(net::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor->is_open()) return;
      if (!ec) {
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        std::make_shared<Session>(std::move(socket), limits, handler, &open)->start();
      }
      accept();
    });
  }
};

HttpServer::HttpServer(HttpLimits limits, HttpHandler handler) : impl_(std::make_unique<Impl>()) {
  impl_->limits = limits;
  impl_->handler = std::move(handler);
}

HttpServer::~HttpServer() { stop(); }

Result<int> HttpServer::start(const std::string& host, int port, int threads) {
  beast::error_code ec;
  const auto address = net::ip::make_address(host, ec);
  if (ec) return invalid_argument("--host '" + host + "' is not an IP address");
  tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  impl_->acceptor.emplace(impl_->io);
  impl_->acceptor->open(endpoint.protocol(), ec);
  if (!ec) impl_->acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor->bind(endpoint, ec);
  if (!ec) impl_->acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec) return Status(StatusCode::kUnavailable, "cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
  const int bound = impl_->acceptor->local_endpoint().port();
  impl_->work.emplace(net::make_work_guard(impl_->io));
  impl_->accept();
  for (int i = 0; i < std::max(1, threads); ++i) impl_->threads.emplace_back([this] { impl_->io.run(); });
  return bound;
}

void HttpServer::stop_accepting() {
  net::post(impl_->io, [this] {
    beast::error_code ec;
    if (impl_->acceptor && impl_->acceptor->is_open()) impl_->acceptor->close(ec);
  });
}

void HttpServer::stop() {
  if (impl_->threads.empty()) return;
  stop_accepting();
  impl_->work.reset();
  impl_->io.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
}

int64_t HttpServer::open_connections() const { return impl_->open.load(); }

}  // namespace seekserve
