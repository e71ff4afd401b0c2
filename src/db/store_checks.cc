// What a JobStore checks about its tables besides storing pages: that they are the tables its
// state was written for, that PostgreSQL stored every row sent, and that the planner's
// statistics are not far behind the tables' size.
#include "store.h"

#include <fmt/format.h>

#include "log.h"

namespace stsync {

std::optional<std::string> JobStore::tables_problem(const JobState& state) {
  const bool progress = state.export_token || state.watermark || state.complete_through || state.list_cursor;
  if (fresh_state_) {
    // No state row, yet the table holds rows of the tenant: the state table was emptied (or the
    // table came from elsewhere). Reading everything again is exact (rows are merged); say so.
    if (db_.exec(fmt::format("SELECT EXISTS (SELECT 1 FROM {} WHERE tenant_id = $1)", sql_.table),
                 {std::to_string(tenant_)})
            .get(0, 0) == "t")
      log::warn("job {} tenant {}: no stored state, but table {} holds rows of the tenant: the state table was "
                "emptied (or the table comes from another installation); reading everything again (rows are "
                "merged, nothing is lost)",
                spec_.name, tenant_, spec_.table);
    return std::nullopt;
  }
  if (!progress) return std::nullopt;
  if (stored_oids_ && *stored_oids_ != current_oids_) {
    const std::vector<std::string> stored = parse_pg_array(*stored_oids_), now = parse_pg_array(current_oids_);
    std::vector<std::string> names = {spec_.table};
    for (const ChildSpec& c : spec_.children) names.push_back(c.table);
    std::string which;
    for (size_t i = 0; i < names.size(); ++i)
      if (i >= stored.size() || i >= now.size() || stored[i] != now[i]) which += (which.empty() ? "" : ", ") + names[i];
    return fmt::format("table(s) {} are not the ones this job's state was written for (dropped, renamed or re-created "
                       "since, or a child table added to the job file): the stored position covers rows they do not "
                       "hold",
                       which);
  }
  // A child table emptied behind stsync's back (TRUNCATE keeps its OID): parents whose records
  // list children, none of which are stored. A sample of 50 parents, one index probe each.
  for (size_t k = 0; k < spec_.children.size(); ++k) {
    const std::string path = pg_array_literal(spec_.children[k].path);
    PgResult r = db_.exec(
        fmt::format("SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM {} c WHERE c.tenant_id = "
                    "p.tenant_id AND c.parent_id = p.id)) FROM (SELECT t.tenant_id, t.id FROM {} t WHERE t.tenant_id "
                    "= $1 AND jsonb_array_length(CASE WHEN jsonb_typeof(t.raw::jsonb #> $2::text[]) = 'array' THEN "
                    "t.raw::jsonb #> $2::text[] END) > 0 LIMIT 50) p",
                    sql_.analyzable[k + 1], sql_.table),
        {std::to_string(tenant_), path});
    const std::int64_t sampled = r.get_int(0, 0), missing = r.get_int(0, 1);
    if (sampled > 0 && missing == sampled)
      return fmt::format("child table {} holds none of the rows of {} parent(s) whose records list them (emptied "
                         "behind stsync's back?)",
                         spec_.children[k].table, sampled);
  }
  return std::nullopt;
}

void JobStore::refresh_statistics_if_stale() {
  for (const std::string& table : sql_.analyzable) {
    PgResult r = db_.exec(
        "SELECT relpages, pg_relation_size(oid) / current_setting('block_size')::bigint FROM pg_catalog.pg_class "
        "WHERE oid = to_regclass($1)",
        {table});
    if (r.rows() == 0) continue;
    const std::int64_t known = r.get_int(0, 0), actual = r.get_int(0, 1);
    if (actual <= 2 * known + 128) continue;
    log::debug("{}: statistics know {} pages, the table has {}: analysing it", table, known, actual);
    db_.exec("ANALYZE (SKIP_LOCKED) " + table);
  }
}

void JobStore::require_stored(const std::string& table, std::int64_t stored, std::int64_t sent) const {
  if (stored == sent) return;
  throw Error(ErrorKind::db,
              fmt::format("{}table {}: PostgreSQL stored {} of the page's {} rows: a trigger or rule on the table "
                          "skips rows, so stsync cannot keep it exact; nothing of the page is committed. Remove it "
                          "(an AFTER trigger is fine), then rerun",
                          where_.empty() ? "" : where_ + ": ", table, stored, sent));
}

bool JobStore::table_skips_rows() {
  // Once per job run: user triggers (BEFORE ones can drop a row by returning NULL) or rules on
  // the job table make the merge's RETURNING the only word on what was stored, so then every
  // page is checked against the table (one index probe per row).
  if (!skips_rows_)
    skips_rows_ = db_.exec("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = to_regclass($1) AND "
                           "NOT tgisinternal AND (tgtype & 2) <> 0) OR EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite "
                           "WHERE ev_class = to_regclass($1) AND rulename <> '_RETURN')",
                           {sql_.table})
                      .get(0, 0) == "t";
  return *skips_rows_;
}

}  // namespace stsync
