// `stsync quarantine`: the records PostgreSQL or the page parser refused, and their second
// chance after a job-file fix.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "config.h"

namespace stsync {

struct QuarantineFilter {
  std::optional<std::string> job;
  std::optional<std::int64_t> tenant;
};

/// The records still in quarantine (not stored since), newest first: a text table or JSON.
std::string render_quarantine(const Settings& settings, const QuarantineFilter& filter, bool json);

struct QuarantineRetry {
  int stored = 0;     // now in their job's table (through the guard: never over a newer row)
  int refused = 0;    // still refused; their error is updated
  int skipped = 0;    // their job is running elsewhere, or no longer exists
};

/// Re-processes every quarantined record that matches `filter` with the current job files:
/// each one is parsed and merged like a page of one record, under the job's lock; the job's
/// token and watermark are not touched. Throws PgError when the database cannot be reached.
QuarantineRetry retry_quarantine(const Settings& settings, const QuarantineFilter& filter);

}  // namespace stsync
