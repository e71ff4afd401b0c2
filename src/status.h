// `stsync status`: per tenant and job, the watermark, token, rows, last run and last error.
#pragma once
#include <string>
#include <vector>

#include "config.h"

namespace stsync {

/// Reads the state and history tables. Returns a text table, or JSON when `json` is set.
/// Throws PgError when the database cannot be read.
std::string render_status(const Settings& settings, bool json);

/// `stsync jobs`: every job file (with the config's overrides): name, table, mode, key, parent,
/// endpoint, enabled, cadence, child tables and the last result, when the database can be read.
std::string render_jobs(const Settings& settings, bool json);

/// Prometheus text format, per tenant and job, from sync_state and sync_runs (see the README).
std::string render_metrics(const Settings& settings);
/// render_metrics() into `path` atomically (written aside, then renamed): node_exporter's textfile
/// collector never reads half a file.
void write_metrics_file(const Settings& settings, const std::string& path);
/// "tenant T job J: …" for every job with no success within `max_age_seconds` (0: twice its
/// cadence), not-permitted jobs aside.
std::vector<std::string> stale_jobs(const Settings& settings, double max_age_seconds);

}  // namespace stsync
