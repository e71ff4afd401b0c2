// Runs the selected jobs for the selected tenants on a small pool of workers, and maps the
// outcome to the process exit code.
#pragma once
#include <vector>

#include "config.h"
#include "http.h"
#include "retry.h"
#include "job_run.h"

namespace stsync {

struct RunSummary {
  std::vector<JobResult> results;
  int exit_code = 0;
};

/// Migrates, then runs every (tenant, job) pair. Each worker owns one HTTP handle and one
/// database connection; tenants share a request budget and a token across workers.
/// Throws Error(config) for a bad selection; PgError when PostgreSQL is unreachable.
RunSummary run_jobs(const Settings& settings, const RunOptions& options, Clock& clock);

/// The configured tenants, or only --tenant's; Error(config) when there is none or it is not one.
std::vector<TenantConfig> selected_tenants(const Settings& settings, const RunOptions& options);

/// The HTTP transport's options that follow from `settings`.
CurlOptions curl_options(const Settings& settings);

/// One line for the end of a run: jobs by outcome, rows, requests, duration ("nothing was due"
/// for a --due run that ran nothing).
std::string describe_run(const RunSummary& summary, double seconds, bool due);
/// describe_run() as the `run_finished` event: in JSON logs, the counts are fields.
void log_run_finished(const RunSummary& summary, double seconds, bool due);

/// The exit code for a set of job results (see exit_status.h).
int exit_code_for(const std::vector<JobResult>& results);

}  // namespace stsync
