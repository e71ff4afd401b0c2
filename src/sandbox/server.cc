// The sandbox server: its routes, problem responses and pages. Authentication and throttling
// are in auth.cc, faults in faults.cc, the resources and export tokens in resources.cc, the
// admin calls in admin.cc.
#include "sandbox/server.h"
#include "sandbox/server_internal.h"

#include <httplib.h>
#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <zlib.h>

namespace stsync::sandbox {

const char* const kFaultNames[] = {"http500", "http502", "http503", "http504", "maintenance409",
                                   "throttle", "reset", "truncate", "slow", "html", "empty",
                                   "throttle_bare", "slow_body", "bad_json", "no_data", "no_id", "wrong_type", "bad_timestamp",
                                   "huge_number", "refused_values", "deep_json", "stuck_token", "cycle_token",
                                   "endless_body", "huge_page", "stale_record", "none"};
const int kFaultCount = static_cast<int>(std::size(kFaultNames));

std::int64_t steady_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

std::optional<std::int64_t> parse_int(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  std::int64_t v = 0;
  bool negative = s[0] == '-';
  size_t i = negative ? 1 : 0;
  if (i == s.size()) return std::nullopt;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
    if (v > (INT64_MAX - (s[i] - '0')) / 10) return std::nullopt;
    v = v * 10 + (s[i] - '0');
  }
  return negative ? -v : v;
}

std::string base64url(std::string_view in) {
  static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  unsigned v = 0;
  int bits = 0;
  for (unsigned char c : in) {
    v = (v << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(a[(v >> bits) & 63]);
    }
  }
  if (bits > 0) out.push_back(a[(v << (6 - bits)) & 63]);
  return out;
}

std::optional<std::string> unbase64url(std::string_view in) {
  std::string out;
  unsigned v = 0;
  int bits = 0;
  for (char c : in) {
    int d;
    if (c >= 'A' && c <= 'Z') d = c - 'A';
    else if (c >= 'a' && c <= 'z') d = c - 'a' + 26;
    else if (c >= '0' && c <= '9') d = c - '0' + 52;
    else if (c == '-') d = 62;
    else if (c == '_') d = 63;
    else return std::nullopt;
    v = (v << 6) | static_cast<unsigned>(d);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((v >> bits) & 0xFF));
    }
  }
  return out;
}

std::uint64_t checksum(std::string_view s) {
  std::uint64_t h = 1469598103934665603ULL;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  return h;
}

size_t window(std::deque<std::int64_t>& q, std::int64_t now_ms) {
  while (!q.empty() && q.front() <= now_ms - 1000) q.pop_front();
  return q.size();
}

Server::Server(ServerOptions options)
    : options_(std::move(options)), dataset_(options_.data), fault_rng_(options_.faults.seed) {
  if (!options_.tls_cert_file.empty() && !options_.tls_key_file.empty()) {
    auto ssl = std::make_unique<httplib::SSLServer>(options_.tls_cert_file.c_str(),
                                                    options_.tls_key_file.c_str());
    if (!ssl->is_valid()) throw std::runtime_error("cannot load the TLS certificate or key");
    http_ = std::move(ssl);
  } else {
    http_ = std::make_unique<httplib::Server>();
  }
  http_->set_keep_alive_max_count(10000);
  http_->set_keep_alive_timeout(30);
  // Enough threads for a fleet of clients on keep-alive connections (each holds one).
  http_->new_task_queue = [] { return new httplib::ThreadPool(48); };
  install_routes();
}

Server::~Server() { stop(); }

int Server::start(const std::string& host, int port) {
  int bound = port;
  if (port == 0) {
    bound = http_->bind_to_any_port(host);
  } else if (!http_->bind_to_port(host, port)) {
    bound = -1;
  }
  if (bound < 0) throw std::runtime_error(fmt::format("cannot listen on {}:{}", host, port));
  thread_ = std::thread([this] { http_->listen_after_bind(); });
  // stop() only reaches a server that is already listening: wait until it is.
  for (int i = 0; i < 5000 && !http_->is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return bound;
}

void Server::wait() {
  if (thread_.joinable()) thread_.join();
}

void Server::stop() {
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
}

std::string Server::next_trace_id() {
  std::lock_guard lock(mutex_);
  ++trace_counter_;
  return fmt::format("00-{:016x}{:016x}-{:016x}-00", checksum(std::to_string(trace_counter_)),
                     trace_counter_, trace_counter_ * 7919);
}

void Server::send_problem(httplib::Response& res, int status, std::string_view title,
                          std::string_view field, std::string_view message) {
  std::string body = "{\"type\":";
  append_json_string(body, fmt::format("https://tools.ietf.org/html/rfc7231#section-{}",
                                       status >= 500 ? "6.6.1" : "6.5.1"));
  body += ",\"title\":";
  append_json_string(body, title);
  body += fmt::format(",\"status\":{},\"traceId\":", status);
  append_json_string(body, next_trace_id());
  if (!field.empty()) {
    body += ",\"errors\":{";
    append_json_string(body, field);
    body += ":[";
    append_json_string(body, message);
    body += "]}";
  }
  body += "}";
  res.status = status;
  res.set_content(body, "application/problem+json; charset=utf-8");
}

void Server::install_routes() {
  // Every response carries the sandbox clock in Date, as a real server carries its own clock:
  // a client that bounds its list windows by server time must read it from here.
  http_->set_post_routing_handler([this](const httplib::Request&, httplib::Response& res) {
    res.set_header("Date", format_http_date(dataset_.now()));
  });
  http_->Post("/connect/token",
              [this](const httplib::Request& q, httplib::Response& r) { handle_token(q, r); });
  http_->Get(R"(/_sandbox/.*)",
             [this](const httplib::Request& q, httplib::Response& r) { handle_admin(q, r); });
  http_->Post(R"(/_sandbox/.*)",
              [this](const httplib::Request& q, httplib::Response& r) { handle_admin(q, r); });
  http_->Get(R"(/reporting/v2/tenant/[^/]+/.*)",
             [this](const httplib::Request& q, httplib::Response& r) { handle_report(q, r); });
  http_->Post(R"(/reporting/v2/tenant/[^/]+/.*)",
              [this](const httplib::Request& q, httplib::Response& r) { handle_report(q, r); });
  http_->Get(R"(/[a-z-]+/v[0-9]+/tenant/[^/]+/.*)",
             [this](const httplib::Request& q, httplib::Response& r) { handle_resource(q, r); });
  http_->set_error_handler([this](const httplib::Request&, httplib::Response& res) {
    if (res.status == 404 && res.body.empty()) send_problem(res, 404, "Not Found");
  });
}

void Server::send_page(const httplib::Request& req, httplib::Response& res, std::string body) {
  // Pages are gzip-compressed here, at zlib's fastest level, when the client accepts gzip: the
  // HTTP library's own compression (level 6) made the sandbox, not the client or PostgreSQL,
  // the busiest process of a benchmark on a small machine. The bytes a client decodes are the
  // same; only the compression ratio differs a little. (The type carries a charset, so the
  // library leaves the body alone.)
  if (req.get_header_value("Accept-Encoding").find("gzip") == std::string::npos || body.size() < 1024) {
    res.set_content(std::move(body), kJson);
    return;
  }
  z_stream z{};
  if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    res.set_content(std::move(body), kJson);
    return;
  }
  std::string out(deflateBound(&z, body.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(body.data());
  z.avail_in = static_cast<uInt>(body.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) {
    res.set_content(std::move(body), kJson);
    return;
  }
  res.set_header("Content-Encoding", "gzip");
  res.set_content(std::move(out), "application/json; charset=utf-8");
}

}  // namespace stsync::sandbox
