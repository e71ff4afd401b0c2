// `stsync verify`: does each table hold what ServiceTitan holds? Per (tenant, job), the source's
// count (one request: the job's list with includeTotal=true and the filters the job reads with)
// against the table's live rows.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config.h"

namespace stsync {

struct VerifyOptions {
  std::vector<std::string> jobs;       // empty: every job the tenant runs
  std::optional<std::int64_t> tenant;  // empty: every configured tenant
};

struct VerifyLine {
  enum class Verdict { equal, mismatch, cannot_count, failed };
  std::int64_t tenant = 0;
  std::string job;
  Verdict verdict = Verdict::equal;
  std::optional<std::int64_t> source, table;  // the API's totalCount, the table's live rows
  std::string note;                           // why it cannot count, or the error
};

/// Why the job's source cannot be counted in one request (empty when it can).
std::string why_uncountable(const JobSpec& spec);

/// One line per (tenant, job); reads the database once per job table and sends one request per
/// countable job (plus a token per tenant).
std::vector<VerifyLine> verify_counts(const Settings& settings, const VerifyOptions& options);

/// A table (or JSON); `exit_code` 1 when a count differs or failed, else 0.
std::string render_verify(const std::vector<VerifyLine>& lines, bool json, int& exit_code);

}  // namespace stsync
