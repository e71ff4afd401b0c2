#include "run_record.h"

#include <fmt/format.h>

namespace stsync {

std::int64_t open_run_record(PgConnection& db, const std::string& schema, std::int64_t tenant, const std::string& job,
                             std::string_view mode) {
  const Params key = {std::to_string(tenant), job};
  db.exec(fmt::format("UPDATE {}.sync_runs SET outcome = 'interrupted', finished_at = now(), "
                       "error = 'the process ended before the run finished' "
                       "WHERE tenant_id = $1 AND job = $2 AND outcome = 'running'",
                       schema),
           key);
  PgResult r = db.exec(fmt::format("INSERT INTO {}.sync_runs (tenant_id, job, mode) "
                                    "VALUES ($1, $2, $3) RETURNING run_id",
                                    schema),
                        {std::to_string(tenant), job, std::string(mode)});
  const std::int64_t run_id = r.get_int(0, 0);
  db.exec(fmt::format("UPDATE {}.sync_state SET last_run_id = $3 WHERE tenant_id = $1 AND job = $2",
                       schema),
           {std::to_string(tenant), job, std::to_string(run_id)});
  return run_id;
}

void close_run_record(PgConnection& db, const std::string& schema, std::int64_t tenant, const std::string& job,
                      std::int64_t run_id, std::string_view outcome, const std::string& error,
                      const RunCounters& counters) {
  const bool succeeded = outcome == "succeeded";
  Transaction tx(db);
  {
    db.exec(fmt::format("UPDATE {}.sync_runs SET finished_at = now(), outcome = $2, error = $3, requests = $4, "
                         "throttled = $5, retries = $6 WHERE run_id = $1",
                         schema),
             {std::to_string(run_id), std::string(outcome),
              succeeded ? std::nullopt : std::optional<std::string>(error), std::to_string(counters.requests),
              std::to_string(counters.throttled), std::to_string(counters.retries)});
    if (succeeded) {
      db.exec(fmt::format("UPDATE {}.sync_state SET last_success_at = now(), last_error = NULL, "
                           "last_error_at = NULL, not_permitted_at = NULL WHERE tenant_id = $1 AND job = $2",
                           schema),
               {std::to_string(tenant), job});
    } else if (outcome == "not_permitted") {
      // Not a failure of the data or the services: the tenant's app lacks the scope.
      db.exec(fmt::format("UPDATE {}.sync_state SET not_permitted_at = now(), last_error = $3, last_error_at = now() "
                           "WHERE tenant_id = $1 AND job = $2",
                           schema),
               {std::to_string(tenant), job, error});
    } else if (outcome != "interrupted") {
      // A stop (SIGTERM, Ctrl-C, --max-run-time) is not an error: the run's row says why it
      // ended, and the job's standing error, if any, stays what it was.
      db.exec(fmt::format("UPDATE {}.sync_state SET last_error = $3, last_error_at = now() "
                           "WHERE tenant_id = $1 AND job = $2",
                           schema),
               {std::to_string(tenant), job, error});
    }
  }
  tx.commit();
}

}  // namespace stsync
