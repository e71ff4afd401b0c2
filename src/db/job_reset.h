// `stsync reset`: a job starts over on its next run (rows kept).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pg.h"

namespace stsync {

struct ResetResult {
  std::vector<std::string> reset;  // "job tenant": state forgotten (or, without apply, to be)
  std::vector<std::string> busy;   // "job tenant": a run holds the job's lock; left alone
};

/// Forgets the export token, watermark, complete_through, list cursors and reconciled_at of the
/// state rows of `jobs` (every tenant, or `tenant`), each under the job's lock so that no run is
/// in the middle of it; the job's rows are kept, and its next run reads everything again and
/// merges it through the guard. With `apply` false nothing changes: the result says what would.
ResetResult reset_job_states(PgConnection& db, const std::string& schema, const std::vector<std::string>& jobs,
                             std::optional<std::int64_t> tenant, bool apply);

}  // namespace stsync
