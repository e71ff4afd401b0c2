#include "st_client.h"

#include <simdjson.h>

#include <random>

#include "errors.h"
#include "log.h"
#include "stop.h"

namespace stsync {
namespace {

double random01() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

std::string excerpt(std::string_view body) {
  std::string out;
  for (char c : body.substr(0, 160)) out.push_back((c == '\n' || c == '\r' || c == '\t') ? ' ' : c);
  if (body.size() > 160) out += "…";
  return out;
}

}  // namespace

std::string describe_error_response(const HttpResponse& r) {
  std::string out = fmt::format("HTTP {}", r.status);
  if (r.body.empty()) return out + " with an empty body";
  if (r.content_type.find("json") != std::string::npos || r.body.front() == '{') {
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    if (parser.parse(r.body).get(doc) == simdjson::SUCCESS && doc.is_object()) {
      std::string_view s;
      if (doc["title"].get_string().get(s) == simdjson::SUCCESS) out += fmt::format(": {}", s);
      if (doc["detail"].get_string().get(s) == simdjson::SUCCESS) out += fmt::format(" — {}", s);
      if (doc["error"].get_string().get(s) == simdjson::SUCCESS) out += fmt::format(": {}", s);
      simdjson::dom::object errors;
      if (doc["errors"].get_object().get(errors) == simdjson::SUCCESS) {
        for (auto field : errors) {
          out += fmt::format(" [{}:", field.key);
          simdjson::dom::array msgs;
          if (field.value.get_array().get(msgs) == simdjson::SUCCESS)
            for (auto m : msgs)
              if (m.get_string().get(s) == simdjson::SUCCESS) out += fmt::format(" {}", s);
          out += "]";
        }
      }
      if (doc["traceId"].get_string().get(s) == simdjson::SUCCESS) out += fmt::format(" (traceId {})", s);
      return out;
    }
  }
  if (r.content_type.find("html") != std::string::npos || r.body.find("<html") != std::string::npos) {
    const size_t a = r.body.find("<title>");
    const size_t b = r.body.find("</title>");
    if (a != std::string::npos && b != std::string::npos && b > a)
      return out + fmt::format(" (an HTML page: {})", excerpt(std::string_view(r.body).substr(a + 7, b - a - 7)));
    return out + " (an HTML page)";
  }
  return out + ": " + excerpt(r.body);
}

ServiceTitanClient::ServiceTitanClient(const Settings& settings, TenantSession& session,
                                       HttpTransport& transport, Clock& clock, RetryBudget& budget)
    : settings_(settings), session_(session), transport_(transport), clock_(clock), budget_(budget) {
  policy_.max_attempts = settings.max_attempts;
  policy_.max_backoff_seconds = settings.max_backoff_seconds;
}

std::string ServiceTitanClient::access_token(bool force) {
  std::lock_guard lock(session_.token_mutex_);
  if (force || session_.token_.empty() || clock_.monotonic() >= session_.token_refresh_at_) {
    session_.token_ = fetch_token();
  }
  return session_.token_;
}

std::string ServiceTitanClient::fetch_token() {
  const TenantConfig& t = session_.tenant_;
  if (t.client_id.empty() || t.client_secret.empty())
    throw Error(ErrorKind::config,
                fmt::format("tenant {}: client {} missing: set {}", t.id,
                            t.client_id.empty() ? (t.client_secret.empty() ? "id and secret" : "id") : "secret",
                            t.client_id.empty() && t.client_secret.empty()
                                ? std::string("ST_CLIENT_ID and ST_CLIENT_SECRET, or the [[tenants]] entry's "
                                              "client_id and client_secret (or client_secret_file)")
                            : t.client_id.empty() ? "ST_CLIENT_ID, or the [[tenants]] entry's client_id"
                                                  : "ST_CLIENT_SECRET, or the [[tenants]] entry's client_secret (or "
                                                    "client_secret_file)"));
  HttpRequest req;
  req.method = "POST";
  req.url = settings_.auth_url + "/connect/token";
  req.headers = {"Content-Type: application/x-www-form-urlencoded", "Accept: application/json"};
  req.body = "grant_type=client_credentials&client_id=" + url_encode(t.client_id) +
             "&client_secret=" + url_encode(t.client_secret);
  const double asked_at = clock_.monotonic();
  HttpResponse r = perform_with_retries(req, fmt::format("tenant {} token", t.id), false);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view token;
  std::int64_t expires_in = 900;
  if (parser.parse(r.body).get(doc) != simdjson::SUCCESS ||
      doc["access_token"].get_string().get(token) != simdjson::SUCCESS || token.empty())
    throw Error(ErrorKind::http_permanent,
                fmt::format("tenant {}: the token endpoint answered without an access_token", t.id));
  if (doc["expires_in"].get_int64().get(expires_in) != simdjson::SUCCESS) expires_in = 900;
  // Refresh a minute early (or at half-life for short-lived tokens) so no request carries a
  // token that expires in flight.
  const double lead = std::min(60.0, static_cast<double>(expires_in) / 2);
  session_.token_refresh_at_ = asked_at + static_cast<double>(expires_in) - lead;
  log::add_secret(token);
  log::debug("tenant {}: new access token, expires in {} s", t.id, expires_in);
  return std::string(token);
}

HttpResponse ServiceTitanClient::get(const std::string& path_and_query, const std::string& what) {
  HttpRequest req;
  req.url = settings_.api_url + "/" + path_and_query;
  log::debug("{}: GET {}", what, path_and_query);
  return perform_with_retries(req, what, true);
}

HttpResponse ServiceTitanClient::post_json(const std::string& path_and_query, const std::string& body,
                                           const std::string& what) {
  HttpRequest req;
  req.method = "POST";
  req.url = settings_.api_url + "/" + path_and_query;
  req.headers = {"Content-Type: application/json"};
  req.body = body;
  log::debug("{}: POST {}", what, path_and_query);
  return perform_with_retries(req, what, true);
}

void ServiceTitanClient::check_server_clock(const std::string& http_date, const std::string& what) const {
  const std::optional<Ticks> server = parse_http_date(http_date);
  if (!server) return;
  const Ticks local = now_ticks();
  const Ticks skew = *server - local;
  const Ticks tolerance = static_cast<Ticks>(settings_.max_clock_skew_seconds * kTicksPerSecond);
  if (skew <= tolerance && -skew <= tolerance) return;
  // Refused, not clamped: which clock is wrong cannot be told from here, and either way the
  // windows and marks that follow the server's clock would be wrong (a Date years ahead would
  // mark years of changes as read).
  throw Error(ErrorKind::bad_data,
              fmt::format("{}: the API's clock (Date: {}) is {} {} this machine's clock ({}), beyond "
                          "servicetitan.max_clock_skew_seconds = {:g}; nothing of this response is stored. Fix the "
                          "clock that is wrong (NTP on this machine), or report the API's clock",
                          what, http_date, describe_duration(skew < 0 ? -skew : skew),
                          skew > 0 ? "ahead of" : "behind", format_timestamp(local, 0),
                          settings_.max_clock_skew_seconds));
}

HttpResponse ServiceTitanClient::perform_with_retries(const HttpRequest& base,
                                                      const std::string& what, bool authorized) {
  const std::string endpoint = base.url.substr(0, base.url.find('?'));
  bool refreshed_after_401 = false;
  for (int attempt = 1;; ++attempt) {
    HttpRequest req = base;
    if (authorized) {
      req.headers.push_back("ST-App-Key: " + settings_.app_key);
      req.headers.push_back("Authorization: Bearer " + access_token(false));
      req.headers.push_back("Accept: application/json");
    }
    session_.limiter().acquire();
    if (stop_requested()) throw Error(ErrorKind::interrupted, fmt::format("{}: stopped by {}", what, stop_signal_name()));
    std::optional<double> retry_after;
    std::string failure;
    try {
      ++counters_.requests;
      HttpResponse r = transport_.perform(req);
      if (r.date) {
        check_server_clock(*r.date, what);
        session_.note_server_date(*r.date);
      }
      if (r.status == 429) ++counters_.throttled;
      if (r.status >= 200 && r.status < 300) return r;
      if (!authorized && (r.status == 400 || r.status == 401)) {
        throw Error(ErrorKind::auth_rejected,
                    fmt::format("tenant {}: ServiceTitan rejected the client credentials ({}): check the client "
                                "id (from {}), the client secret (from {}) and ST_ENVIRONMENT ({})",
                                session_.tenant_.id, describe_error_response(r), session_.tenant_.client_id_from,
                                session_.tenant_.client_secret_from, settings_.environment));
      }
      if (authorized && r.status == 401) {
        if (!refreshed_after_401) {
          // Expired or revoked mid-walk: one fresh token, one more try, same page.
          refreshed_after_401 = true;
          log::info("{}: 401 from {}, refreshing the token", what, endpoint);
          access_token(true);
          --attempt;
          continue;
        }
        throw Error(ErrorKind::http_permanent,
                    fmt::format("{}: {} on {} even with a fresh token: the credentials do not "
                                "grant this tenant",
                                what, describe_error_response(r), endpoint),
                    r.status);
      }
      if (classify_http_status(r.status) == ErrorKind::http_permanent) {
        std::string hint;
        if (r.status == 403) hint = ": the app lacks the scope for this endpoint or the app key is wrong";
        if (r.status == 404) hint = ": unknown endpoint or tenant";
        throw Error(ErrorKind::http_permanent,
                    fmt::format("{}: {} on {}{}", what, describe_error_response(r), endpoint, hint),
                    r.status);
      }
      if (r.retry_after) retry_after = parse_retry_after(*r.retry_after, r.date, now_ticks());
      failure = fmt::format("{} on {}", describe_error_response(r), endpoint);
      if (attempt >= policy_.max_attempts)
        throw Error(ErrorKind::http_transient,
                    fmt::format("{}: {} (gave up after {} attempts)", what, failure, attempt), r.status);
    } catch (const Error& e) {
      if (!e.retryable() || e.kind() == ErrorKind::http_transient) throw;
      failure = e.what();
      if (attempt >= policy_.max_attempts)
        throw Error(e.kind(), fmt::format("{}: {} (gave up after {} attempts)", what, failure, attempt));
    }
    const double wait = backoff_seconds(policy_, attempt + 1, retry_after, random01());
    if (!budget_.take(wait))
      throw Error(ErrorKind::http_transient,
                  fmt::format("{}: {} (the job's retry budget of {} s is spent)", what, failure,
                              settings_.retry_budget_seconds));
    log::warn("{}: {}; retry {} in {:.2f} s", what, failure, attempt, wait);
    ++counters_.retries;
    clock_.sleep(wait);
  }
}

}  // namespace stsync

namespace stsync {

void TenantSession::note_server_date(const std::string& http_date) {
  const std::optional<Ticks> date = parse_http_date(http_date);
  if (!date) return;
  std::lock_guard lock(clock_mutex_);
  if (!server_date_ || *date > *server_date_) server_date_ = date;
}

RateLimiter& TenantSession::report_limiter(std::int64_t report_id, int runs, double window_seconds) {
  std::lock_guard lock(report_mutex_);
  std::unique_ptr<RateLimiter>& slot = report_limiters_[report_id];
  if (!slot) slot = std::make_unique<RateLimiter>(static_cast<size_t>(runs), window_seconds, clock_);
  return *slot;
}

std::optional<Ticks> TenantSession::server_now() const {
  std::lock_guard lock(clock_mutex_);
  return server_date_;
}

}  // namespace stsync
