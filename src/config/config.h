// Settings: a TOML file (optional) overlaid by the environment, which wins.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "job_spec.h"

namespace stsync {

struct TenantConfig {
  std::int64_t id = 0;
  std::string client_id;
  std::string client_secret;  // from the file, the environment, or read from client_secret_file
  std::vector<std::string> jobs;  // this tenant's jobs (empty: every enabled job)
  // Where the credentials came from, for messages ("ST_CLIENT_SECRET", "client_secret_file …").
  std::string client_id_from = "ST_CLIENT_ID", client_secret_from = "ST_CLIENT_SECRET";
};

/// Per-job overrides from the config file's [jobs.NAME] tables.
struct JobOptions {
  std::optional<bool> enabled;
  std::optional<SyncMode> mode;
  std::optional<int> overlap_seconds;
  std::optional<int> page_size;
  std::optional<bool> include_recent_changes;
  std::optional<bool> quarantine;
  std::optional<bool> history;
  std::optional<std::string> raw_type;
  std::optional<int> every_seconds;
};

// How the metrics are labelled: per (tenant, job) — 12 series per pair, ~800k for 500 tenants —,
// or aggregated per tenant or per job.
enum class MetricsBy { tenant_job, tenant, job };

struct Settings {
  std::string environment = "production";
  std::string auth_url;  // resolved: without /connect/token
  std::string api_url;
  std::string app_key;
  std::vector<TenantConfig> tenants;
  std::string database_url;  // empty: libpq's PG* variables
  std::string schema = "servicetitan";
  std::string jobs_dir;      // empty: the job files built into the binary
  std::string tenants_file;  // more [[tenants]]: a TOML file, or a directory of them
  double requests_per_second = 10;
  int parallel = 2;
  int keep_runs_days = 30;
  MetricsBy metrics_by = MetricsBy::tenant_job;  // sync_runs older than this are pruned (their counts kept); 0: keep all
  // Per worker: export pages committed on one or two connections. One by default: on the 2-core
  // development machine a second one made runs slower (see the README's benchmarks).
  int page_connections = 1;
  int timeout_seconds = 120;
  int connect_timeout_seconds = 10;
  int max_attempts = 6;            // per request
  double retry_budget_seconds = 300;  // total backoff one job may spend
  double max_backoff_seconds = 60;
  int list_safety_seconds = 60;    // list windows end this long before the server's clock
  // How far a response's Date may be from this machine's clock before the response is refused:
  // list windows, complete-through and watermarks follow the server's clock, so one wrong Date
  // (a year ahead) would otherwise move them into the future and silently skip a year of changes.
  double max_clock_skew_seconds = 300;
  // An export walk that still has more after this many pages stops (a feed that never ends).
  int max_export_pages = 100000;
  int db_reconnect_attempts = 6;   // per page, when PostgreSQL goes away mid-run (~30 s in all)
  double statement_timeout_seconds = 300;  // one of stsync's SQL statements (0: none)
  double lock_timeout_seconds = 10;        // waiting for a table lock (adding a column)
  // A decompressed response body; more is an error while it streams. Peak memory is bounded by
  // about 3× this (the body, its COPY rows, parser state) plus ~64 MB: see the README.
  std::int64_t max_response_bytes = 128LL << 20;
  int max_json_depth = 64;                 // nesting of a page's JSON
  bool tls_verify = true;
  std::string ca_file;
  std::string log_level = "info";
  std::map<std::string, JobOptions> jobs;
  std::vector<JobSpec> reports;  // [[reports]]: report jobs declared in the config
  // The Reporting API's own limit: this many runs of one report per window, per tenant (the
  // developer portal: 5 a minute). Runs wait for it rather than meet a 429.
  int report_runs = 5;
  double report_window_seconds = 60;
};

/// Reads an environment variable; the seam that tests replace.
using EnvLookup = std::function<std::optional<std::string>(const char* name)>;
EnvLookup process_environment();

/// Loads the file at `path` (if any; else $STSYNC_CONFIG if set), overlays the environment and
/// validates. Throws Error(config) with a one-line message naming the key and what to do.
/// `warnings` receives non-fatal findings (e.g. a secret-holding file others can read).
Settings load_settings(const std::optional<std::string>& path, const EnvLookup& env,
                       std::vector<std::string>& warnings);

/// The job specs with the config's per-job overrides applied.
/// Every job file with the config's [jobs.X] overrides applied; `enabled` says which run by
/// default.
std::vector<JobSpec> resolve_jobs(const Settings& settings);

}  // namespace stsync
