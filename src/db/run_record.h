// A job's run records (sync_runs) and the standing outcome in its state row (sync_state): the
// same for every kind of job (the resource jobs' JobStore, the report jobs' ReportStore).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "job_storage.h"
#include "pg.h"

namespace stsync {

/// Marks the (tenant, job)'s runs left 'running' by a crashed process as 'interrupted', opens a
/// run record in `mode` and points the state row at it. `schema` is quoted.
std::int64_t open_run_record(PgConnection& db, const std::string& schema, std::int64_t tenant, const std::string& job,
                             std::string_view mode);

/// Closes the run record ('succeeded', 'failed', 'interrupted', 'not_permitted') with its
/// counters, and sets the state's last success or last error, in one transaction.
void close_run_record(PgConnection& db, const std::string& schema, std::int64_t tenant, const std::string& job,
                      std::int64_t run_id, std::string_view outcome, const std::string& error,
                      const RunCounters& counters);

}  // namespace stsync
