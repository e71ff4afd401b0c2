// The ServiceTitan client: tokens (one per tenant, cached, refreshed early), the per-tenant
// request budget, and the retry loop. One ServiceTitanClient per worker; TenantSession shared.
#pragma once
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "config.h"
#include "http.h"
#include "rate_limiter.h"
#include "retry.h"
#include "timestamp.h"

namespace stsync {

/// What every worker of one tenant shares: credentials, the request budget and the token.
class TenantSession {
 public:
  TenantSession(TenantConfig tenant, double requests_per_second, Clock& clock)
      : tenant_(std::move(tenant)), limiter_(requests_per_second, clock), clock_(clock) {}
  const TenantConfig& tenant() const { return tenant_; }
  RateLimiter& limiter() { return limiter_; }
  /// The runs of one report (the Reporting API's limit per report and tenant: `runs` per
  /// `window_seconds`), shared by every worker of the tenant; made on first use.
  RateLimiter& report_limiter(std::int64_t report_id, int runs, double window_seconds);
  /// Every response's Date header: the server's clock, for list windows that must end in the
  /// server's past.
  void note_server_date(const std::string& http_date);
  /// A lower bound of the server's clock now: the newest Date seen (whole seconds, so never
  /// ahead; time since then is not added, as a server clock may stand still). nullopt before
  /// any response.
  std::optional<Ticks> server_now() const;

 private:
  friend class ServiceTitanClient;
  TenantConfig tenant_;
  RateLimiter limiter_;
  Clock& clock_;
  std::mutex report_mutex_;
  std::map<std::int64_t, std::unique_ptr<RateLimiter>> report_limiters_;
  std::mutex token_mutex_;
  std::string token_;
  double token_refresh_at_ = 0;  // monotonic; ~60 s before expiry
  mutable std::mutex clock_mutex_;
  std::optional<Ticks> server_date_;  // the newest Date header seen
};

class ServiceTitanClient {
 public:
  ServiceTitanClient(const Settings& settings, TenantSession& session, HttpTransport& transport,
                     Clock& clock, RetryBudget& budget);

  /// GETs `{api_url}/{path_and_query}` with the app key and a bearer token, inside the request
  /// budget, retrying what is retryable. Returns a 2xx response. Throws Error: auth_rejected
  /// (credentials refused), http_permanent (4xx; message has status, title and traceId), or the
  /// last retryable error once attempts or the job's retry budget are spent. `what` names the
  /// job and page for messages.
  HttpResponse get(const std::string& path_and_query, const std::string& what);
  /// POSTs a JSON body (the Reporting API's data requests), like get() otherwise.
  HttpResponse post_json(const std::string& path_and_query, const std::string& body, const std::string& what);

  /// The current token, fetching one if none is cached or `force` is set.
  std::string access_token(bool force);

  /// What this client did (for a job's run record and the metrics): requests sent (each attempt),
  /// 429 answers, and retries.
  struct Counters {
    std::atomic<std::int64_t> requests{0}, throttled{0}, retries{0};
  };
  const Counters& counters() const { return counters_; }

 private:
  HttpResponse perform_with_retries(const HttpRequest& request, const std::string& what,
                                    bool authorized);
  std::string fetch_token();
  /// Throws Error(bad_data) when a response's Date is further from this machine's clock than
  /// servicetitan.max_clock_skew_seconds.
  void check_server_clock(const std::string& http_date, const std::string& what) const;

  const Settings& settings_;
  TenantSession& session_;
  HttpTransport& transport_;
  Clock& clock_;
  RetryBudget& budget_;
  RetryPolicy policy_;
  Counters counters_;
};

/// A one-line description of an error response: status, the RFC 7807 title/detail/errors and
/// traceId when present, or the title of an HTML page, or a short excerpt.
std::string describe_error_response(const HttpResponse& response);

}  // namespace stsync
