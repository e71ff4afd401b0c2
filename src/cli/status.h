// `stsync status`: per tenant and job, the watermark, token, rows, last run and last error.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config.h"
#include "figures.h"

namespace stsync {

struct StatusOptions {
  bool json = false;
  bool by_job = false;                 // one line per job instead of one per tenant
  std::optional<std::int64_t> tenant;  // filters; any of them shows the jobs
  std::string job;
  bool failed = false;  // jobs whose last error stands (not succeeded since)
  bool stale = false;   // jobs without a success within twice their cadence
  bool per_job() const { return by_job || tenant || !job.empty() || failed || stale; }
};

/// Reads the state and history tables: one line per tenant (jobs ok, failing, stale, not
/// permitted, worst lag, last run), or with `by_job` or a filter one line per job (rows, token,
/// watermark, lag, last run, last error). Text, or JSON when `json` is set. Throws PgError when
/// the database cannot be read, Error(config) for an unknown --job.
std::string render_status(const Settings& settings, const StatusOptions& options);

/// `stsync jobs`: every job file (with the config's overrides): name, table, mode, key, parent,
/// endpoint, enabled, cadence, child tables and the last result, when the database can be read.
std::string render_jobs(const Settings& settings, bool json);

/// The Prometheus metrics (text format, see the README), per tenant and job or aggregated per
/// tenant or per job (`Settings::metrics_by`), from sync_state, sync_runs and sync_run_totals.
/// Kept by the daemon: the job files' cadences are read once, the schema's shape until it is
/// complete, the connection is kept (and reopened after a failure), so that a scrape is one query.
class MetricsSource {
 public:
  explicit MetricsSource(const Settings& settings);
  ~MetricsSource();
  MetricsSource(const MetricsSource&) = delete;
  MetricsSource& operator=(const MetricsSource&) = delete;
  /// Throws Error when the database cannot be read.
  std::string render();

 private:
  const Settings& settings_;
  std::map<std::string, int> every_;  // job → cadence in seconds
  std::unique_ptr<PgConnection> db_;
  std::optional<SchemaShape> shape_;
};

/// MetricsSource(settings).render(), once.
std::string render_metrics(const Settings& settings);
/// render_metrics() into `path` atomically (written aside, then renamed): node_exporter's textfile
/// collector never reads half a file.
void write_metrics_file(const Settings& settings, const std::string& path);
/// "tenant T job J: …" for every job with no success within `max_age_seconds` (0: twice its
/// cadence), not-permitted jobs aside.
std::vector<std::string> stale_jobs(const Settings& settings, double max_age_seconds);

}  // namespace stsync
