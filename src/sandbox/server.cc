#include "sandbox/server.h"

#include <httplib.h>

#include <chrono>
#include <fmt/format.h>
#include <regex>
#include <stdexcept>

#include <zlib.h>
#include <cstring>

namespace stsync::sandbox {
namespace {

const char* const kFaultNames[] = {"http500", "http502", "http503", "http504", "maintenance409",
                                   "throttle", "reset", "truncate", "slow", "html", "empty",
                                   "throttle_bare", "slow_body", "bad_json", "no_data", "no_id", "wrong_type", "bad_timestamp",
                                   "huge_number", "refused_values", "deep_json", "stuck_token", "cycle_token",
                                   "endless_body", "huge_page", "stale_record", "none"};
constexpr int kFaultCount = static_cast<int>(std::size(kFaultNames));
// Random faults (a rate with no kinds given) are drawn from the transient ones only: the data
// faults would fail every run that meets them, which is what a test asks for by name.
constexpr int kTransientFaultCount = 13;
// Exactly "application/json": cpp-httplib only compresses content types it knows by full name.
constexpr char kJson[] = "application/json";

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

// Trims the sliding one-second window and returns its size.
size_t window(std::deque<std::int64_t>& q, std::int64_t now_ms) {
  while (!q.empty() && q.front() <= now_ms - 1000) q.pop_front();
  return q.size();
}

}  // namespace

std::string_view fault_name(FaultKind kind) { return kFaultNames[static_cast<int>(kind)]; }

std::optional<FaultKind> parse_fault(std::string_view name) {
  for (int i = 0; i < kFaultCount; ++i)
    if (name == kFaultNames[i]) return static_cast<FaultKind>(i);
  return std::nullopt;
}

std::string sandbox_client_id(std::int64_t tenant) { return fmt::format("sandbox-client-{}", tenant); }
std::string sandbox_client_secret(std::int64_t tenant) {
  return fmt::format("sandbox-secret-{}", tenant);
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
  http_->Get(R"(/[a-z-]+/v[0-9]+/tenant/[^/]+/.*)",
             [this](const httplib::Request& q, httplib::Response& r) { handle_resource(q, r); });
  http_->set_error_handler([this](const httplib::Request&, httplib::Response& res) {
    if (res.status == 404 && res.body.empty()) send_problem(res, 404, "Not Found");
  });
}

void Server::handle_token(const httplib::Request& req, httplib::Response& res) {
  const std::string content_type = req.get_header_value("Content-Type");
  if (content_type.rfind("application/x-www-form-urlencoded", 0) != 0) {
    res.status = 400;
    res.set_content(R"({"error":"invalid_request"})", kJson);
    return;
  }
  httplib::Params form;
  httplib::detail::parse_query_text(req.body, form);
  auto field = [&](const char* name) {
    auto it = form.find(name);
    return it == form.end() ? std::string() : it->second;
  };
  if (field("grant_type") != "client_credentials") {
    res.status = 400;
    res.set_content(R"({"error":"unsupported_grant_type"})", kJson);
    return;
  }
  const std::string client_id = field("client_id");
  std::optional<std::int64_t> tenant;
  for (std::int64_t t : dataset_.tenants())
    if (client_id == sandbox_client_id(t) && field("client_secret") == sandbox_client_secret(t))
      tenant = t;
  if (!tenant) {
    res.status = 400;
    res.set_content(R"({"error":"invalid_client"})", kJson);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    auto& stats = stats_[*tenant];
    const std::int64_t now_ms = steady_ms();
    if (window(stats.token_ms, now_ms) >= static_cast<size_t>(options_.token_rate_limit_per_second)) {
      res.status = 429;
      res.set_header("Retry-After", "1");
      res.set_content(R"({"error":"too_many_requests"})", kJson);
      return;
    }
    stats.token_ms.push_back(now_ms);
    ++stats.token_requests;
  }
  const Ticks now = dataset_.now();
  const Ticks expires = now + options_.token_ttl_seconds * kTicksPerSecond;
  std::string token;
  {
    std::lock_guard lock(mutex_);
    ++token_counter_;
    // A JWT's shape (header.claims.signature) with the tenant claim; the signature is a checksum.
    const std::string header = base64url(R"({"alg":"RS256","typ":"at+jwt"})");
    const std::string claims = base64url(fmt::format(
        R"({{"tenant":"{}","client_id":"{}","exp":{},"jti":"{}"}})", *tenant, client_id,
        expires / kTicksPerSecond, token_counter_));
    token = header + "." + claims + "." +
            base64url(fmt::format("{:016x}", checksum(header + claims + std::to_string(token_counter_))));
    tokens_[token] = TokenInfo{*tenant, expires};
  }
  res.set_content(fmt::format(R"({{"access_token":"{}","expires_in":{},"token_type":"Bearer","scope":"tn.acc.invoices:r tn.set.employees:r"}})",
                              token, options_.token_ttl_seconds),
                  kJson);
}

bool Server::authorize(const httplib::Request& req, httplib::Response& res, std::int64_t tenant) {
  std::string auth = req.get_header_value("Authorization");
  if (auth.size() > 7 && iequals(auth.substr(0, 7), "Bearer ")) auth = auth.substr(7);
  {
    std::lock_guard lock(mutex_);
    auto it = tokens_.find(auth);
    if (auth.empty() || it == tokens_.end() || it->second.expires <= dataset_.now() ||
        it->second.tenant != tenant) {
      res.status = 401;
      res.set_header("WWW-Authenticate", "Bearer error=\"invalid_token\"");
      res.set_content("", kJson);
      return false;
    }
  }
  if (req.get_header_value("ST-App-Key") != options_.app_key) {
    send_problem(res, 403, "Forbidden: the ST-App-Key header is missing or unknown");
    return false;
  }
  return true;
}

bool Server::throttle(httplib::Response& res, std::int64_t tenant) {
  std::lock_guard lock(mutex_);
  TenantStats& s = stats_[tenant];
  const std::int64_t now_ms = steady_ms();
  s.arrivals_ms.push_back(now_ms);
  s.max_per_second = std::max<std::int64_t>(s.max_per_second,
                                            static_cast<std::int64_t>(window(s.arrivals_ms, now_ms)));
  ++s.requests;
  if (window(s.accepted_ms, now_ms) >= static_cast<size_t>(options_.rate_limit_per_second)) {
    ++s.throttled;
    res.set_header("Retry-After", "1");
    res.status = 429;
    return true;
  }
  s.accepted_ms.push_back(now_ms);
  return false;
}

bool Server::inject_fault(httplib::Response& res, std::optional<FaultKind>& data_fault) {
  std::optional<FaultKind> kind;
  int slow_ms;
  {
    std::lock_guard lock(mutex_);
    slow_ms = options_.faults.slow_ms;
    if (!queued_faults_.empty()) {
      kind = queued_faults_.front();
      queued_faults_.pop_front();
    } else if (options_.faults.rate > 0 && fault_rng_.chance(options_.faults.rate)) {
      const auto& kinds = options_.faults.kinds;
      kind = kinds.empty() ? static_cast<FaultKind>(fault_rng_.below(kTransientFaultCount))
                           : kinds[fault_rng_.below(kinds.size())];
    }
    if (kind == FaultKind::none) kind.reset();
    if (kind) ++faults_injected_;
  }
  if (!kind) return false;
  if (*kind == FaultKind::slow_body || static_cast<int>(*kind) >= kTransientFaultCount) {
    data_fault = kind;  // applied to the real page
    return false;
  }
  switch (*kind) {
    case FaultKind::http500: send_problem(res, 500, "Internal Server Error"); return true;
    case FaultKind::http502: send_problem(res, 502, "Bad Gateway"); return true;
    case FaultKind::http503: send_problem(res, 503, "Service Unavailable"); return true;
    case FaultKind::http504: send_problem(res, 504, "Gateway Timeout"); return true;
    case FaultKind::maintenance409:
      send_problem(res, 409, "Service suspended for maintenance");
      return true;
    case FaultKind::throttle:
      // The HTTP-date form of Retry-After, one second after this response's Date.
      res.set_header("Retry-After", format_http_date(dataset_.now() + kTicksPerSecond));
      send_problem(res, 429, "Too Many Requests");
      return true;
    case FaultKind::throttle_bare:  // a 429 that does not say how long to wait
      send_problem(res, 429, "Too Many Requests");
      return true;
    case FaultKind::html:
      res.status = 502;
      res.set_content("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 "
                      "Bad Gateway</h1></center></body></html>",
                      "text/html");
      return true;
    case FaultKind::empty:
      res.status = 500;
      res.set_content("", "text/plain");
      return true;
    case FaultKind::slow:
      std::this_thread::sleep_for(std::chrono::milliseconds(slow_ms));
      return false;  // then the real answer
    case FaultKind::reset:
    case FaultKind::truncate: {
      // The headers promise a full page; the connection then closes after none or half of it.
      const bool half = *kind == FaultKind::truncate;
      const size_t length = 4096;
      res.status = 200;
      res.set_content_provider(
          length, kJson, [half](size_t offset, size_t, httplib::DataSink& sink) {
            if (half && offset == 0) {
              const std::string part = R"({"hasMore":true,"continueFrom":"x","data":[{"id":1,)";
              sink.write(part.data(), part.size());
              return true;
            }
            return false;
          });
      return true;
    }
    default: return false;
  }
}

void Server::corrupt_page(FaultKind kind, const std::string& resource, std::string& body) {
  auto replace_first = [&](const std::string& from, const std::string& to) {
    const size_t pos = body.find(from);
    if (pos != std::string::npos) body.replace(pos, from.size(), to);
  };
  switch (kind) {
    case FaultKind::bad_json: body.resize(body.size() / 2); body += "<<<garbage>>>}"; break;
    case FaultKind::no_data: body = R"({"hasMore":false,"continueFrom":"x","items":[]})"; break;
    case FaultKind::no_id: replace_first("\"data\":[{\"id\":", "\"data\":[{\"identifier\":"); break;
    case FaultKind::wrong_type: replace_first("\"active\":", "\"active\":\"yes\",\"was_active\":"); break;
    case FaultKind::bad_timestamp: replace_first(",\"modifiedOn\":\"", ",\"modifiedOn\":\"last tuesday\",\"was\":\""); break;
    case FaultKind::refused_values: {
      // Values PostgreSQL refuses though the JSON is well-formed enough for a client that does
      // not look at them: a lone surrogate, a raw control character and a number beyond numeric,
      // in a field stsync does not type (records 2, 3, 4 of the page), and year 0000 in an
      // invoice item's date (the first item after record 5).
      const std::string marker = resource == "employees" ? "\"userId\":" : "\"syncStatus\":";
      const char* const bad[] = {"\"note\":\"lone \\ud800 surrogate\",", "\"note\":\"bell \x07 inside\",",
                                 "\"note\":1e999999,"};
      size_t pos = 0;
      for (int record = 1; record <= 5; ++record) {
        pos = body.find(marker, pos);
        if (pos == std::string::npos) return;
        if (record >= 2 && record <= 4) {
          body.insert(pos, bad[record - 2]);
          pos += std::strlen(bad[record - 2]);
        }
        pos += marker.size();
      }
      const std::string date_key = "\"serviceDate\":\"";
      const size_t date = body.find(date_key, pos);
      if (date != std::string::npos)
        body.replace(date, date_key.size(), "\"serviceDate\":\"0000-01-01T00:00:00\",\"was\":\"");
      break;
    }
    case FaultKind::deep_json: {
      // A field nested 200 levels deep in the first record.
      const size_t pos = body.find("\"data\":[{");
      if (pos != std::string::npos)
        body.insert(pos + 9, "\"deep\":" + std::string(200, '[') + std::string(200, ']') + ",");
      break;
    }
    case FaultKind::stale_record: {
      // An older version of a record re-served (a replica behind, a cache): its modifiedOn in 2000
      // and its content different; a client must keep the newer row. The page's first record with
      // a modifiedOn of its own (a key at depth 2: inside the data array, inside the record, not in
      // a nested object; some invoices have none).
      const std::string key = "\"modifiedOn\":\"";
      size_t i = body.find("\"data\":[");
      if (i == std::string::npos) break;
      i += 8;
      int depth = 1;
      bool in_string = false;
      for (; i < body.size() && depth > 0; ++i) {
        const char c = body[i];
        if (in_string) {
          if (c == '\\') ++i;
          else if (c == '"') in_string = false;
          continue;
        }
        if (depth == 2 && body.compare(i, key.size(), key) == 0) {
          const size_t end = body.find('"', i + key.size());
          body.replace(i, end - i + 1, key + "2000-01-01T00:00:00Z\",\"staleCopy\":true");
          break;
        }
        if (c == '"') in_string = true;
        else if (c == '{' || c == '[') ++depth;
        else if (c == '}' || c == ']') --depth;
      }
      break;
    }
    case FaultKind::huge_number:
      if (resource == "employees") replace_first("\"agentId\":", "\"agentId\":99999999999,\"was\":");
      else replace_first("\"customer\":{\"id\":", "\"customer\":{\"id\":99999999999999999999,\"was\":");
      break;
    default: break;
  }
}

std::string module_of(const CatalogueResource& resource) {
  const std::string& path = resource.list_path.empty() ? resource.export_path : resource.list_path;
  return path.substr(0, path.find('/'));
}

void Server::handle_resource(const httplib::Request& req, httplib::Response& res) {
  // The path names a catalogued resource (its list or export endpoint), the tenant and, for a
  // per-parent resource, the parent's key.
  const std::optional<RouteMatch> match = route(req.path);
  if (!match) {
    send_problem(res, 404, "Not Found");
    return;
  }
  const CatalogueResource& cat = *match->resource;
  const std::string resource = cat.name;
  const bool is_export = match->is_export;
  const std::optional<std::int64_t> tenant = parse_int(match->tenant);
  if (!tenant) {
    send_problem(res, 400, "One or more validation errors occurred.", "tenant",
                 "The value is not a valid tenant id.");
    return;
  }
  if (!authorize(req, res, *tenant)) return;
  if (throttle(res, *tenant)) {
    send_problem(res, 429, "Too Many Requests");
    return;
  }
  bool denied = false;
  {
    // The tenant's app was not granted this API's scope (POST /_sandbox/scopes).
    std::lock_guard lock(mutex_);
    const auto it = denied_.find(*tenant);
    denied = it != denied_.end() && (it->second.count(resource) || it->second.count(module_of(cat)));
  }
  if (denied) {
    send_problem(res, 403, "Forbidden", "", "The application is not authorized to access this resource.");
    return;
  }
  std::optional<FaultKind> data_fault;
  if (inject_fault(res, data_fault)) return;
  auto param = [&](const char* name) -> std::optional<std::string> {
    if (!req.has_param(name)) return std::nullopt;
    return req.get_param_value(name);
  };
  auto bad = [&](std::string_view field, std::string_view message) {
    send_problem(res, 400, "One or more validation errors occurred.", field, message);
  };
  if (options_.churn_per_request > 0)
    dataset_.apply_changes(*tenant, resource, options_.churn_per_request);
  int latency_ms;
  {
    std::lock_guard lock(mutex_);
    latency_ms = options_.latency_ms;
  }
  // The time a real API takes to answer (network and server), for fleet and scheduling tests.
  if (latency_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(latency_ms));

  std::string body;
  int served = 0;
  if (is_export) {
    ExportQuery q;
    q.batch_size = options_.export_batch;
    q.visibility_delay = static_cast<Ticks>(options_.visibility_delay_seconds) * kTicksPerSecond;
    if (auto v = param("includeRecentChanges")) {
      if (!iequals(*v, "true") && !iequals(*v, "false")) return bad("includeRecentChanges", "The value is not valid.");
      q.include_recent = iequals(*v, "true");
    }
    if (cat.export_active) {
      // Exports that take `active` hide inactive rows unless asked (True is the default).
      const std::string v = param("active").value_or("True");
      if (iequals(v, "True")) q.hide_inactive = true;
      else if (!iequals(v, "Any") && !iequals(v, "False")) return bad("active", fmt::format("The value '{}' is not valid.", v));
    }
    if (auto from = param("from"); from && !from->empty()) {
      if (auto date = parse_timestamp(*from)) {
        q.from_date = date;
      } else if (auto seq = decode_export_token(*from, *tenant, resource)) {
        q.after_seq = seq;
      } else {
        return bad("from", "The continueFrom token is invalid or has expired.");
      }
    }
    auto page = dataset_.export_page(*tenant, resource, q);
    if (!page) return send_problem(res, 404, "Tenant not found");
    served = page->rows.count;
    body.reserve(page->rows.data.size() + 200);
    // stuck_token: a broken feed that hands back the token it was given, with hasMore=true.
    // cycle_token: one that goes back to the token the client sent before this one (a cycle of
    // two pages), with hasMore=true.
    const std::string from_now = param("from").value_or("");
    std::string from_before;
    {
      std::lock_guard lock(mutex_);
      std::string& last = last_export_from_[{*tenant, resource}];
      from_before = last;
      last = from_now;
    }
    const bool stuck = data_fault == FaultKind::stuck_token && q.after_seq;
    const bool cycle = data_fault == FaultKind::cycle_token && q.after_seq && !from_before.empty();
    body = fmt::format(R"({{"hasMore":{},"continueFrom":"{}","data":[)",
                       page->has_more || stuck || cycle ? "true" : "false",
                       stuck ? from_now : cycle ? from_before : encode_export_token(*tenant, resource, page->continue_seq));
    body += page->rows.data;
    body += "]}";
  } else {
    ListQuery q;
    if (!cat.parent.empty()) {
      auto parent = dataset_.row_by_key(*tenant, cat.parent, match->parent);
      if (!parent) return send_problem(res, 404, "Not Found", "", "The parent record does not exist.");
      q.parent = *parent;
    }
    if (auto v = param("page")) {
      auto n = parse_int(*v);
      if (!n || *n < 1 || *n > 1000000) return bad("page", "The value must be a positive integer.");
      q.page = static_cast<int>(*n);
    }
    if (auto v = param("pageSize")) {
      auto n = parse_int(*v);
      if (!n || *n < 1 || *n > 5000) return bad("pageSize", "The field pageSize must be between 1 and 5000.");
      q.page_size = static_cast<int>(*n);
    }
    bool include_total = false;
    if (auto v = param("includeTotal")) include_total = iequals(*v, "true");
    // Only the date filters this endpoint declares work; others are ignored, as ASP.NET does.
    for (const WindowParam& w : cat.windows) {
      const bool modified = w.field == "modifiedOn";
      for (auto [name, slot] : {std::pair{w.after, modified ? &q.modified_on_or_after : &q.created_on_or_after},
                                std::pair{w.before, modified ? &q.modified_before : &q.created_before}}) {
        if (name.empty()) continue;
        if (auto v = param(name.c_str()); v && !v->empty()) {
          *slot = parse_timestamp(*v);
          if (!*slot) return bad(name, fmt::format("The value '{}' is not valid.", *v));
        }
      }
    }
    if (auto v = param("ids"); v && !v->empty() && cat.ids) {
      size_t start = 0;
      const FieldDef* id_field = cat.field("id");
      while (start <= v->size()) {
        size_t comma = v->find(',', start);
        if (comma == std::string::npos) comma = v->size();
        const std::string id = v->substr(start, comma - start);
        if (id_field != nullptr && id_field->type == "integer" && !parse_int(id))
          return bad("ids", "The ids must be comma-separated integers.");
        q.ids.push_back(id);
        start = comma + 1;
      }
      if (q.ids.size() > 50) return bad("ids", "At most 50 ids may be given.");
    }
    // Inactive rows: each endpoint's own parameter and default (most hide them unless asked).
    using A = ListQuery::Active;
    q.active = A::any;
    if (!cat.active_param.empty()) {
      const std::string v = param(cat.active_param.c_str()).value_or(cat.active_default);
      const std::string& p = cat.active_param;
      if (p == "activeState") {
        if (iequals(v, "ActiveOnly")) q.active = A::only;
        else if (iequals(v, "InactiveOnly")) q.active = A::inactive_only;
        else if (iequals(v, "All")) q.active = A::any;
        else return bad(p, fmt::format("The value '{}' is not valid.", v));
      } else if (p == "active") {
        if (iequals(v, "True")) q.active = A::only;
        else if (iequals(v, "False")) q.active = A::inactive_only;
        else if (iequals(v, "Any")) q.active = A::any;
        else return bad(p, fmt::format("The value '{}' is not valid.", v));
      } else if (p == "includeInactive" || p == "activeOnly") {
        if (!iequals(v, "true") && !iequals(v, "false")) return bad(p, fmt::format("The value '{}' is not valid.", v));
        q.active = iequals(v, p == "includeInactive" ? "true" : "false") ? A::any : A::only;
      }
    }
    // invoices and employees ignore sort (the API notes; the catalogue lists a sort parameter
    // for invoices without fields: see the README's notes on the catalogue).
    const ResourceDef* def = find_resource(resource);
    if (auto v = param("sort"); v && def != nullptr && def->sortable && !v->empty()) {
      using S = ListQuery::Sort;
      const bool desc = (*v)[0] == '-';
      const std::string field = ((*v)[0] == '-' || (*v)[0] == '+' || (*v)[0] == ' ') ? v->substr(1) : *v;
      if (iequals(field, "Id")) q.sort = desc ? S::id_desc : S::id_asc;
      else if (iequals(field, "ModifiedOn")) q.sort = desc ? S::modified_desc : S::modified_asc;
      else if (iequals(field, "CreatedOn")) q.sort = desc ? S::created_desc : S::created_asc;
      else return bad("sort", "The sort field is not supported.");
    }
    if (cat.response == "data_only" || cat.response == "object") {
      q.page = 1;
      q.page_size = cat.response == "object" ? 1 : 1000000;
    }
    auto page = dataset_.list(*tenant, resource, q);
    if (!page) return send_problem(res, 404, "Tenant not found");
    served = page->rows.count;
    body.reserve(page->rows.data.size() + 200);
    if (cat.response == "object") {
      // The record itself; none (a job never booked): 404.
      if (page->rows.count == 0) return send_problem(res, 404, "Not Found");
      body = page->rows.data;
    } else if (cat.response == "data_only") {
      body = "{\"data\":[" + page->rows.data + "]}";
    } else {
      body = fmt::format(R"({{"page":{},"pageSize":{},"hasMore":{},"totalCount":{},"data":[)", q.page,
                         q.page_size, page->has_more ? "true" : "false",
                         include_total ? std::to_string(page->total) : "null");
      body += page->rows.data;
      body += "]}";
    }
  }
  {
    std::lock_guard lock(mutex_);
    stats_[*tenant].records_served += served;
  }
  if (data_fault == FaultKind::slow_body) {
    // The real page, trickled out in ten chunks over slow_ms.
    int slow_ms;
    {
      std::lock_guard lock(mutex_);
      slow_ms = options_.faults.slow_ms;
    }
    auto shared = std::make_shared<std::string>(std::move(body));
    const std::int64_t who = *tenant;
    res.set_chunked_content_provider(kJson, [this, who, shared, slow_ms](size_t offset, httplib::DataSink& sink) {
      if (offset == 0) {
        std::lock_guard lock(mutex_);
        ++stats_[who].slow_bodies_started;
      }
      if (offset >= shared->size()) {
        {
          std::lock_guard lock(mutex_);
          ++stats_[who].slow_bodies_finished;
        }
        sink.done();
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(slow_ms / 10));
      const size_t n = std::min(shared->size() - offset, shared->size() / 10 + 1);
      sink.write(shared->data() + offset, n);
      return true;
    });
    return;
  }
  if (data_fault == FaultKind::endless_body) {
    // A 200 whose body never ends (a broken proxy, a server bug): valid JSON records, chunk after
    // chunk, until the client hangs up (or 64 GB).
    auto chunk = std::make_shared<std::string>();
    while (chunk->size() < (1 << 20))
      *chunk += R"({"id":1,"name":"endless","modifiedOn":"2025-01-01T00:00:00Z","active":true},)";
    res.set_chunked_content_provider(kJson, [chunk](size_t offset, httplib::DataSink& sink) {
      if (offset == 0) {
        const std::string head = R"({"hasMore":false,"continueFrom":"x","data":[)";
        return sink.write(head.data(), head.size());
      }
      if (offset > (64ULL << 30)) {
        sink.done();
        return true;
      }
      return sink.write(chunk->data(), chunk->size());
    });
    return;
  }
  if (data_fault == FaultKind::huge_page) {
    // A valid page of about huge_page_bytes: the first record carries a long string.
    std::int64_t bytes;
    {
      std::lock_guard lock(mutex_);
      bytes = options_.faults.huge_page_bytes;
    }
    const size_t pos = body.find("\"data\":[{");
    if (pos != std::string::npos && bytes > static_cast<std::int64_t>(body.size()))
      body.insert(pos + 9, "\"padding\":\"" + std::string(static_cast<size_t>(bytes) - body.size(), 'p') + "\",");
  }
  if (data_fault) corrupt_page(*data_fault, resource, body);
  send_page(req, res, std::move(body));
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

std::string Server::encode_export_token(std::int64_t tenant, const std::string& resource,
                                        std::uint64_t seq) const {
  // The issue time (sandbox clock, ms) rides along so that tokens can expire
  // (Quirks::export_token_ttl_seconds).
  const std::string plain =
      fmt::format("{}|{}|{}|{}|{}", tenant, resource, export_token_epoch_.load(), seq,
                  dataset_.now() / (kTicksPerSecond / 1000));
  return base64url(fmt::format("{}|{:x}", plain, checksum(plain)));
}

std::optional<std::uint64_t> Server::decode_export_token(std::string_view token, std::int64_t tenant,
                                                         const std::string& resource) const {
  auto plain = unbase64url(token);
  if (!plain) return std::nullopt;
  const size_t bar = plain->rfind('|');
  if (bar == std::string::npos) return std::nullopt;
  const std::string body = plain->substr(0, bar);
  if (fmt::format("{:x}", checksum(body)) != plain->substr(bar + 1)) return std::nullopt;
  const std::string prefix = fmt::format("{}|{}|{}|", tenant, resource, export_token_epoch_.load());
  if (body.rfind(prefix, 0) != 0) return std::nullopt;
  const std::string_view rest = std::string_view(body).substr(prefix.size());
  const size_t sep = rest.find('|');
  if (sep == std::string_view::npos) return std::nullopt;
  auto seq = parse_int(rest.substr(0, sep));
  auto issued_ms = parse_int(rest.substr(sep + 1));
  if (!seq || *seq < 0 || !issued_ms) return std::nullopt;
  const int ttl = dataset_.quirks().export_token_ttl_seconds;
  // Expiry by the sandbox's clock, which tests move instead of sleeping.
  if (ttl > 0 && dataset_.now() / (kTicksPerSecond / 1000) - *issued_ms > ttl * 1000LL) return std::nullopt;
  return static_cast<std::uint64_t>(*seq);
}

void Server::handle_admin(const httplib::Request& req, httplib::Response& res) {
  const std::string what = req.path.substr(std::string("/_sandbox/").size());
  auto param = [&](const char* name) { return req.get_param_value(name); };
  auto tenant = parse_int(param("tenant"));
  const std::string resource = param("resource");
  if (what == "health") {
    res.set_content(R"({"status":"ok"})", kJson);
  } else if (what == "truth" && tenant) {
    auto truth = dataset_.truth(*tenant, resource);
    if (!truth) return send_problem(res, 404, "Unknown tenant or resource");
    res.set_content(std::move(*truth), kJson);
  } else if (what == "changes" && tenant && req.method == "POST") {
    auto n = parse_int(param("n"));
    const int applied = dataset_.apply_changes(*tenant, resource, n ? static_cast<int>(*n) : 1);
    if (applied < 0) return send_problem(res, 404, "Unknown tenant or resource");
    res.set_content(fmt::format(R"({{"applied":{}}})", applied), kJson);
  } else if (what == "deletes" && tenant && req.method == "POST") {
    // Hard deletes (or, with restore=1, their undoing) in a list-only resource.
    auto n = parse_int(param("n"));
    auto keys = dataset_.delete_rows(*tenant, resource, n ? static_cast<int>(*n) : 1, param("restore") == "1");
    std::string out = "{\"keys\":[";
    for (size_t i = 0; i < keys.size(); ++i) {
      if (i) out += ',';
      append_json_string(out, keys[i]);
    }
    res.set_content(out + "]}", kJson);
  } else if (what == "scopes" && tenant && req.method == "POST") {
    // deny=a,b: resources (or API modules, e.g. "payroll") answering 403 for this tenant.
    std::lock_guard lock(mutex_);
    std::set<std::string>& denied = denied_[*tenant];
    denied.clear();
    const std::string list = param("deny");
    for (size_t start = 0; start < list.size();) {
      size_t comma = list.find(',', start);
      if (comma == std::string::npos) comma = list.size();
      if (comma > start) denied.insert(list.substr(start, comma - start));
      start = comma + 1;
    }
    res.set_content(fmt::format(R"({{"denied":{}}})", denied.size()), kJson);
  } else if (what == "clock") {
    if (auto s = parse_int(param("advance_seconds")); s && req.method == "POST")
      dataset_.advance_clock(*s * kTicksPerSecond);
    res.set_content(fmt::format(R"({{"now":"{}"}})", format_timestamp(dataset_.now())), kJson);
  } else if (what == "faults" && req.method == "POST") {
    std::lock_guard lock(mutex_);
    if (req.has_param("clear")) {
      options_.faults.rate = 0;
      queued_faults_.clear();
    }
    if (req.has_param("rate")) options_.faults.rate = std::atof(param("rate").c_str());
    if (auto s = parse_int(param("seed"))) fault_rng_ = Rng(static_cast<std::uint64_t>(*s));
    if (auto s = parse_int(param("slow_ms"))) options_.faults.slow_ms = static_cast<int>(*s);
    if (auto s = parse_int(param("huge_page_bytes"))) options_.faults.huge_page_bytes = *s;
    auto parse_list = [&](const std::string& list, std::vector<FaultKind>& out) {
      size_t start = 0;
      while (start < list.size()) {
        size_t comma = list.find(',', start);
        if (comma == std::string::npos) comma = list.size();
        auto kind = parse_fault(list.substr(start, comma - start));
        if (!kind) return false;
        out.push_back(*kind);
        start = comma + 1;
      }
      return true;
    };
    std::vector<FaultKind> kinds, next;
    if (!parse_list(param("kinds"), kinds) || !parse_list(param("next"), next)) {
      res.status = 400;
      res.set_content(R"({"error":"unknown fault kind"})", kJson);
      return;
    }
    if (req.has_param("kinds")) options_.faults.kinds = kinds;
    for (FaultKind k : next) queued_faults_.push_back(k);
    res.set_content(fmt::format(R"({{"rate":{},"queued":{}}})", options_.faults.rate,
                                queued_faults_.size()),
                    kJson);
  } else if (what == "settings" && req.method == "POST") {
    std::lock_guard lock(mutex_);
    auto set = [&](const char* name, int& slot) {
      if (auto v = parse_int(param(name))) slot = static_cast<int>(*v);
    };
    set("churn_per_request", options_.churn_per_request);
    set("export_batch", options_.export_batch);
    set("rate_limit", options_.rate_limit_per_second);
    set("token_ttl", options_.token_ttl_seconds);
    set("visibility_delay", options_.visibility_delay_seconds);
    set("latency_ms", options_.latency_ms);
    res.set_content(R"({"status":"ok"})", kJson);
  } else if (what == "quirks" && req.method == "POST") {
    Quirks q = dataset_.quirks();
    auto flag = [&](const char* name, bool& slot) {
      if (req.has_param(name)) slot = param(name) == "1" || param(name) == "true";
    };
    auto number = [&](const char* name, int& slot) {
      if (auto v = parse_int(param(name))) slot = static_cast<int>(*v);
    };
    flag("export_disorder", q.export_disorder);
    number("export_repeat_rows", q.export_repeat_rows);
    number("export_token_ttl_seconds", q.export_token_ttl_seconds);
    flag("unstable_list_order", q.unstable_list_order);
    number("filter_rounding_seconds", q.filter_rounding_seconds);
    flag("timestamp_styles", q.timestamp_styles);
    flag("future_record", q.future_record);
    dataset_.set_quirks(q);
    res.set_content(R"({"status":"ok","note":"export_disorder, timestamp_styles and future_record apply at reset"})",
                    kJson);
  } else if (what == "reset" && req.method == "POST") {
    dataset_.reset();
    std::lock_guard lock(mutex_);
    tokens_.clear();
    stats_.clear();
    queued_faults_.clear();
    options_.faults.rate = 0;
    faults_injected_ = 0;
    res.set_content(R"({"status":"ok"})", kJson);
  } else if (what == "revoke-tokens" && req.method == "POST") {
    std::lock_guard lock(mutex_);
    tokens_.clear();
    res.set_content(R"({"status":"ok"})", kJson);
  } else if (what == "invalidate-export-tokens" && req.method == "POST") {
    std::lock_guard lock(mutex_);
    ++export_token_epoch_;
    res.set_content(R"({"status":"ok"})", kJson);
  } else if (what == "stats") {
    std::lock_guard lock(mutex_);
    std::string body = fmt::format(R"({{"faults_injected":{},"tenants":{{)", faults_injected_);
    bool first = true;
    for (const auto& [t, s] : stats_) {
      if (!first) body += ',';
      first = false;
      body += fmt::format(
          R"("{}":{{"requests":{},"throttled":{},"token_requests":{},"records_served":{},"max_per_second":{},)"
          R"("slow_bodies_started":{},"slow_bodies_finished":{}}})",
          t, s.requests, s.throttled, s.token_requests, s.records_served, s.max_per_second, s.slow_bodies_started,
          s.slow_bodies_finished);
    }
    body += "}}";
    res.set_content(body, kJson);
  } else {
    send_problem(res, 404, "Unknown sandbox admin call");
  }
}

}  // namespace stsync::sandbox
