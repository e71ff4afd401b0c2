#include "job_reset.h"

#include <fmt/format.h>

#include "job_table_sql.h"
#include "store.h"

namespace stsync {

ResetResult reset_job_states(PgConnection& db, const std::string& schema, const std::vector<std::string>& jobs,
                             std::optional<std::int64_t> tenant, bool apply) {
  const std::string s = db.quote_ident(schema);
  const std::string jobs_array = pg_array_literal(jobs);
  PgResult rows = db.exec(fmt::format("SELECT tenant_id::text, job FROM {}.sync_state WHERE job = ANY($1::text[]) "
                                      "AND ($2::bigint IS NULL OR tenant_id = $2) ORDER BY job, tenant_id",
                                      s),
                          {jobs_array, tenant ? std::optional<std::string>(std::to_string(*tenant)) : std::nullopt});
  ResetResult result;
  for (int i = 0; i < rows.rows(); ++i) {
    const std::string tenant_id = rows.get(i, 0), job = rows.get(i, 1);
    const std::string name = job + " " + tenant_id;
    AdvisoryLock lock(db, job_lock_key(schema, job, std::stoll(tenant_id)));
    if (!lock.try_acquire()) {
      result.busy.push_back(name);
      continue;
    }
    // A report job's stored days go too: the next run rewrites every day, also those whose
    // numbers did not change (a reset is how a table edited by hand is made right again).
    if (apply)
      db.exec(fmt::format("WITH days AS (DELETE FROM {0}.sync_report_days WHERE tenant_id = $1 AND job = $2) "
                          "UPDATE {0}.sync_state SET export_token = NULL, watermark = NULL, complete_through = NULL, "
                          "list_cursor = NULL, list_pass_start = NULL, list_pass_field = NULL, reconciled_at = NULL, "
                          "updated_at = now() WHERE tenant_id = $1 AND job = $2",
                          s),
              {tenant_id, job});
    result.reset.push_back(name);
  }
  return result;
}

}  // namespace stsync
