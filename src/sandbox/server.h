// stsync-sandbox: a local ServiceTitan API over real HTTP (see ../shared/docs/servicetitan-api.md
// and the README's "Sandbox" section for every behaviour and admin call).
#pragma once
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "sandbox/dataset.h"
#include "sandbox/reports.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace stsync::sandbox {

// Transport and server faults, then data faults (a 200 whose page is broken), then `none` (a
// placeholder in a queue of faults: this call goes through).
enum class FaultKind { http500, http502, http503, http504, maintenance409, throttle, reset, truncate,
                       slow, html, empty, throttle_bare, slow_body, bad_json, no_data, no_id, wrong_type, bad_timestamp,
                       huge_number, refused_values, deep_json, stuck_token, cycle_token, endless_body, huge_page,
                       stale_record, none };
std::string_view fault_name(FaultKind kind);
std::optional<FaultKind> parse_fault(std::string_view name);

struct FaultOptions {
  double rate = 0;                 // probability that a resource call gets a fault
  std::vector<FaultKind> kinds;    // drawn from uniformly; empty = every kind
  std::uint64_t seed = 1;
  int slow_ms = 3000;
  std::int64_t huge_page_bytes = 64LL << 20;  // huge_page: the page padded to about this size
};

struct ServerOptions {
  DatasetOptions data;
  std::string app_key = "sandbox-app-key";
  int token_ttl_seconds = 900;
  int rate_limit_per_second = 60;       // per tenant, like ServiceTitan's per-app-per-tenant limit
  int token_rate_limit_per_second = 20; // the token endpoint's own limit
  int export_batch = 1000;
  int visibility_delay_seconds = 900;
  int churn_per_request = 0;            // changes applied to a resource before each page of it
  int latency_ms = 0;                   // every resource call answers after this long
  FaultOptions faults;
  std::string tls_cert_file, tls_key_file;  // both set: HTTPS
};

/// The API module of a resource ("crm", "accounting"): its path's first segment.
std::string module_of(const CatalogueResource& resource);

/// The deterministic credentials of a sandbox tenant.
std::string sandbox_client_id(std::int64_t tenant);
std::string sandbox_client_secret(std::int64_t tenant);

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Binds host:port (0 = any free port) and serves on a background thread.
  /// Returns the bound port; throws std::runtime_error when it cannot bind.
  int start(const std::string& host, int port);
  /// Blocks until stop() is called (from another thread or a signal handler's thread).
  void wait();
  void stop();
  Dataset& dataset() { return dataset_; }

 private:
  std::set<std::string> undeclared_params_;  // "path name": parameters sent that the contract lacks
  struct TenantStats {
    std::int64_t requests = 0, throttled = 0, token_requests = 0, records_served = 0;
    std::int64_t slow_bodies_started = 0, slow_bodies_finished = 0;  // slow_body faults: events tests wait for
    std::int64_t max_per_second = 0;
    std::deque<std::int64_t> accepted_ms, arrivals_ms, token_ms;
  };
  struct TokenInfo {
    std::int64_t tenant;
    Ticks expires;
  };

  void install_routes();
  void handle_token(const httplib::Request& req, httplib::Response& res);
  void handle_resource(const httplib::Request& req, httplib::Response& res);
  /// The Reporting API (reports.cc): categories, reports, descriptions, data (POST).
  void handle_report(const httplib::Request& req, httplib::Response& res);
  /// A 200 page: gzip (fastest level) when the client accepts it.
  void send_page(const httplib::Request& req, httplib::Response& res, std::string body);
  void handle_admin(const httplib::Request& req, httplib::Response& res);
  bool authorize(const httplib::Request& req, httplib::Response& res, std::int64_t tenant);
  bool throttle(httplib::Response& res, std::int64_t tenant);
  /// Applies a transport or server fault (true: the response is set). A data fault is returned
  /// in `data_fault` for corrupt_page to apply to the real page.
  bool inject_fault(httplib::Response& res, std::optional<FaultKind>& data_fault);
  static void corrupt_page(FaultKind kind, const std::string& resource, std::string& body);
  void send_problem(httplib::Response& res, int status, std::string_view title,
                    std::string_view field = {}, std::string_view message = {});
  std::string next_trace_id();
  std::string encode_export_token(std::int64_t tenant, const std::string& resource,
                                  std::uint64_t seq) const;
  std::optional<std::uint64_t> decode_export_token(std::string_view token, std::int64_t tenant,
                                                   const std::string& resource) const;

  ServerOptions options_;
  Dataset dataset_;
  ReportBook reports_{options_.data.seed};
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  std::mutex mutex_;  // guards everything below
  std::map<std::string, TokenInfo> tokens_;
  std::map<std::int64_t, TenantStats> stats_;
  std::deque<FaultKind> queued_faults_;
  std::map<std::pair<std::int64_t, std::string>, std::string> last_export_from_;  // for cycle_token
  std::map<std::int64_t, std::set<std::string>> denied_;  // tenant → resources or modules answering 403
  Rng fault_rng_{1};
  std::int64_t faults_injected_ = 0;
  std::atomic<std::uint64_t> export_token_epoch_{1};
  std::uint64_t trace_counter_ = 0;
  std::uint64_t token_counter_ = 0;
};

}  // namespace stsync::sandbox
