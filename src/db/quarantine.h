// `stsync quarantine`: the records PostgreSQL or the page parser refused, and their second
// chance after a job-file fix.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config.h"

namespace stsync {

struct QuarantineFilter {
  std::optional<std::string> job;
  std::optional<std::int64_t> tenant;
  std::vector<std::int64_t> ids;  // quarantine ids (empty: any)
};

/// A record still in quarantine, as text.
struct QuarantinedRow {
  std::string quarantine_id, tenant, job, record_id, seen_at, page, error;
};

/// The records still in quarantine (not stored since) that match `filter`, newest first;
/// nullopt when the schema has no quarantine table yet.
std::optional<std::vector<QuarantinedRow>> quarantined_records(const Settings& settings,
                                                               const QuarantineFilter& filter);

struct QuarantineRetry {
  int stored = 0;      // now in their job's table (through the guard: never over a newer row)
  int refused = 0;     // still refused; their error is updated
  int skipped = 0;     // their job is running elsewhere, or no longer exists
  int superseded = 0;  // dropped: the job's table already holds this version of the row or a newer one
};

/// Re-processes every quarantined record that matches `filter` with the current job files:
/// each one is parsed and merged like a page of one record, under the job's lock; the job's
/// token and watermark are not touched. Throws PgError when the database cannot be reached.
/// A record whose row the job's table holds at the same or a later modifiedOn (a later run or a
/// full refresh stored a good version) is dropped instead, counted as superseded.
QuarantineRetry retry_quarantine(const Settings& settings, const QuarantineFilter& filter);

/// The records still in quarantine that match `filter`: how many there are, and with `confirm`
/// deletes them (the operator decided they are not wanted). Returns the count.
int discard_quarantine(const Settings& settings, const QuarantineFilter& filter, bool confirm);

}  // namespace stsync
