// The figures that status, the metrics and the staleness check read from the state and run
// tables: one query per view, whatever the number of jobs and tenants.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "config.h"
#include "pg.h"

namespace stsync {

// Per (tenant, job): the state and its last run, as status, the metrics and the staleness check
// read them; with `totals`, the sums over all runs too. Times in seconds since the epoch (0: never).
struct JobFigures {
  std::string tenant, job, last_outcome, watermark, last_finished, last_success_text, last_error;
  bool token = false;
  bool future_state = false;  // a mark ahead of the clock (written under a wrong API clock)
  double last_success = 0, last_finished_at = 0, lag = -1, last_duration = 0, now = 0;
  std::int64_t last_pages = 0, last_inserted = 0, last_updated = 0;
  std::int64_t inserted = 0, updated = 0, pages = 0, requests = 0, throttled = 0, retries = 0, failed = 0;
};

/// Which of the later migrations' tables and columns a schema has (status reads older ones too).
struct SchemaShape {
  bool state = false;         // sync_state exists
  bool run_counters = false;  // sync_runs.requests (migration 008)
  bool run_totals = false;    // sync_run_totals (migration 011)
};
SchemaShape probe_schema(PgConnection& db, const std::string& schema);

/// One query for every (tenant, job) of the state (optionally one tenant's); with `totals`, the
/// sums over every run too (sync_runs and what pruning moved to sync_run_totals). `shape` says
/// which of the later migrations' columns and tables exist: a status of an older schema works.
std::vector<JobFigures> read_figures(PgConnection& db, const std::string& schema, const SchemaShape& shape,
                                     double max_clock_skew, bool totals,
                                     std::optional<std::int64_t> tenant = std::nullopt);

/// Live rows (deleted_at not set) per (job, tenant) of `jobs`: one count per job table.
/// A report job's rows as the report gave them for the days stored (sync_report_days), per tenant.
std::map<std::string, std::int64_t> report_rows_read(PgConnection& db, const std::string& schema, const std::string& job);
std::map<std::pair<std::string, std::string>, std::string> live_rows(PgConnection& db, const Settings& settings,
                                                                      const std::set<std::string>& jobs,
                                                                      std::optional<std::int64_t> tenant);

/// Records in quarantine (not stored by a later retry) per (job, tenant).
std::map<std::pair<std::string, std::string>, std::int64_t> quarantined(PgConnection& db, const std::string& schema);

/// Per job, the outcomes of its tenants' last runs ("succeeded", "failed/succeeded", "-" for none).
std::map<std::string, std::string> last_outcomes(PgConnection& db, const std::string& schema);

/// Per job of `tenant`: seconds since its last success (or since it was found not permitted);
/// jobs that never had either are left out.
std::map<std::string, double> seconds_since_success(PgConnection& db, const std::string& schema, std::int64_t tenant);

/// "database D as U": where a connection landed (for `check`).
std::string describe_connection(PgConnection& db);

}  // namespace stsync
