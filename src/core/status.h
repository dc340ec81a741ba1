// Recoverable errors as values: Status and Result<T>.
//
// Broken invariants abort (SS_CHECK); everything a user or a file can cause is a Status that
// travels up to the edge (CLI or HTTP), where one table maps codes to exit codes / HTTP errors.
// No exceptions cross module boundaries.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace seekserve {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,    // the caller passed something malformed (bad flag, bad request value)
  kNotFound,           // a file, tensor or model that should exist does not
  kDataLoss,           // a file exists but its bytes are corrupt or inconsistent
  kUnimplemented,      // a valid input this build does not support (unknown architecture, dtype)
  kOutOfRange,         // a value outside what the model allows (context length, token id)
  kResourceExhausted,  // out of memory, queue full
  kUnavailable,        // temporarily unable to serve (loading, draining)
  kInternal,           // a bug surfaced as an error instead of a crash
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return {}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status not_found(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status data_loss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status unimplemented(std::string m) { return {StatusCode::kUnimplemented, std::move(m)}; }
inline Status out_of_range(std::string m) { return {StatusCode::kOutOfRange, std::move(m)}; }
inline Status internal_error(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status resource_exhausted(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design, like absl::StatusOr
  Result(Status status) : v_(std::move(status)) {
    if (std::get<Status>(v_).ok()) v_ = Status(StatusCode::kInternal, "Result built from an OK status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

 private:
  std::variant<T, Status> v_;
};

[[noreturn]] void check_failed(const char* file, int line, const char* expr, const std::string& msg);

}  // namespace seekserve

#define SS_CONCAT_INNER(a, b) a##b
#define SS_CONCAT(a, b) SS_CONCAT_INNER(a, b)

#define SS_RETURN_IF_ERROR(expr)                 \
  do {                                           \
    ::seekserve::Status ss_status_ = (expr);     \
    if (!ss_status_.ok()) return ss_status_;     \
  } while (0)

#define SS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()

#define SS_ASSIGN_OR_RETURN(lhs, expr) \
  SS_ASSIGN_OR_RETURN_IMPL(SS_CONCAT(ss_result_, __LINE__), lhs, expr)

// Invariant checks: a failure is a bug in seekserve, never a user's mistake.
#define SS_CHECK(cond, msg)                                                      \
  do {                                                                           \
    if (!(cond)) ::seekserve::check_failed(__FILE__, __LINE__, #cond, (msg));    \
  } while (0)
