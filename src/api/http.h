// The HTTP seam: a transport that performs one request. CurlTransport is the real one; one per
// worker thread, reused for every request so connections and TLS sessions stay open.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace stsync {

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;                  // sent when method is POST
};

struct HttpResponse {
  long status = 0;
  std::string body;  // capacity includes simdjson's padding (see CurlTransport)
  std::string content_type;
  std::optional<std::string> retry_after;  // raw Retry-After header
  std::optional<std::string> date;         // raw Date header
};

class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  /// Performs the request. Any status is a response; throws Error(network) only when no
  /// complete response arrived (refused, reset, timeout, body cut off), Error(bad_data) when the
  /// decompressed body exceeds its cap, Error(interrupted) when a stop was requested. The message
  /// never holds request headers or body.
  virtual HttpResponse perform(const HttpRequest& request) = 0;
};

struct CurlOptions {
  int timeout_seconds = 120;
  int connect_timeout_seconds = 10;
  bool tls_verify = true;
  std::string ca_file;
  bool compressed = true;  // ask for gzip
  long long max_body_bytes = 128LL << 20;  // decompressed; more is an error (a gzip bomb, an endless body)
};

class CurlTransport final : public HttpTransport {
 public:
  explicit CurlTransport(CurlOptions options);
  ~CurlTransport() override;
  CurlTransport(const CurlTransport&) = delete;
  CurlTransport& operator=(const CurlTransport&) = delete;
  HttpResponse perform(const HttpRequest& request) override;
  /// How many connections this handle has opened so far (keep-alive keeps it at one per host).
  long connections_opened() const { return connections_opened_; }

 private:
  long connections_opened_ = 0;
  struct Impl;
  std::unique_ptr<Impl> impl_;  // libcurl points into it: it never moves
};

/// Percent-encodes a query value.
std::string url_encode(std::string_view value);

}  // namespace stsync
