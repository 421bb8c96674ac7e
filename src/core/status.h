#pragma once
// Status is how every module reports an error: a small fixed set of codes that the API maps
// onto HTTP codes, a stable machine-readable slug for clients, and a message for humans.
// No exception crosses a module boundary. Value type; thread-compatible.

#include <optional>
#include <string>
#include <utility>

namespace ts {

enum class Code {
  kOk,
  kMalformed,         // 400: the request cannot be parsed
  kUnauthorized,      // 401
  kNotFound,          // 404
  kConflict,          // 409: wrong state for the operation
  kTooLarge,          // 413
  kUnsupportedMedia,  // 415
  kInvalid,           // 422: parsed, but a field is out of bounds or of the wrong type
  kBacklogFull,       // 429
  kInternal,          // 500
  kUnavailable,       // 503: shutting down, store not writable
};

class Status {
 public:
  Status() = default;
  Status(Code code, std::string slug, std::string message, std::string field = {})
      : code_(code),
        slug_(std::move(slug)),
        message_(std::move(message)),
        field_(std::move(field)) {}

  static Status Ok() { return Status(); }
  static Status Malformed(std::string message) {
    return Status(Code::kMalformed, "malformed_request", std::move(message));
  }
  static Status NotFound(std::string message) {
    return Status(Code::kNotFound, "not_found", std::move(message));
  }
  static Status Conflict(std::string slug, std::string message) {
    return Status(Code::kConflict, std::move(slug), std::move(message));
  }
  static Status Invalid(std::string field, std::string message) {
    return Status(Code::kInvalid, "invalid_field", std::move(message), std::move(field));
  }
  static Status Internal(std::string message) {
    return Status(Code::kInternal, "internal", std::move(message));
  }
  static Status Unavailable(std::string slug, std::string message) {
    return Status(Code::kUnavailable, std::move(slug), std::move(message));
  }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& slug() const { return slug_; }
  const std::string& message() const { return message_; }
  const std::string& field() const { return field_; }
  // Seconds a client should wait before retrying (429, 503); 0 when not set.
  int retry_after_s() const { return retry_after_s_; }
  Status& with_retry_after(int seconds) {
    retry_after_s_ = seconds;
    return *this;
  }

 private:
  Code code_ = Code::kOk;
  std::string slug_;
  std::string message_;
  std::string field_;
  int retry_after_s_ = 0;
};

// StatusOr<T> holds either a value or a non-OK Status.
template <typename T>
class StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}          // NOLINT: implicit by design
  StatusOr(Status status) : status_(std::move(status)) {}  // NOLINT
  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() { return *value_; }
  const T& value() const { return *value_; }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

// HTTP status code for a Status code.
int http_status(Code code);

}  // namespace ts
