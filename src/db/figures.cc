#include "figures.h"

#include <fmt/format.h>

#include <cstdlib>

namespace stsync {

SchemaShape probe_schema(PgConnection& db, const std::string& schema) {
  const std::string s = db.quote_ident(schema);
  PgResult r = db.exec("SELECT to_regclass($1) IS NOT NULL, "
                       "  EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass($2) "
                       "          AND attname = 'requests' AND NOT attisdropped), "
                       "  to_regclass($3) IS NOT NULL",
                       {s + ".sync_state", s + ".sync_runs", s + ".sync_run_totals"});
  return SchemaShape{r.get(0, 0) == "t", r.get(0, 1) == "t", r.get(0, 2) == "t"};
}

// One query for every (tenant, job) of the state (optionally one tenant's); with `totals`, the
// sums over every run too. `shape` says which of the later migrations' columns and tables exist:
// a status of an older schema still works.
std::vector<JobFigures> read_figures(PgConnection& db, const std::string& schema, const SchemaShape& shape,
                                     double max_clock_skew, bool totals, std::optional<std::int64_t> tenant) {
  const std::string s = db.quote_ident(schema);
  std::vector<JobFigures> out;
  if (!shape.state) return out;
  const bool counters = totals && shape.run_counters;
  const bool pruned_totals = totals && shape.run_totals;
  const char* const iso = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'";
  PgResult r = db.exec(
      fmt::format(
          "SELECT st.tenant_id, st.job, coalesce(lr.outcome, ''), "
          "  coalesce(extract(epoch FROM st.last_success_at), 0), "
          "  coalesce(extract(epoch FROM now() - coalesce(st.complete_through, st.watermark)), -1), "
          "  coalesce(extract(epoch FROM lr.finished_at - lr.started_at), 0), "
          "  {totals}, extract(epoch FROM now()), "
          // A mark ahead of the clock: written under a wrong API clock (the next run repairs it).
          "  coalesce(greatest(st.complete_through, st.reconciled_at, st.watermark) > now() + make_interval(secs => $1), "
          "           false), "
          "  st.export_token IS NOT NULL, "
          "  coalesce(to_char(st.watermark AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), ''), "
          "  coalesce(to_char(lr.finished_at AT TIME ZONE 'UTC', {iso}), ''), "
          "  coalesce(to_char(st.last_success_at AT TIME ZONE 'UTC', {iso}), ''), coalesce(st.last_error, ''), "
          "  coalesce(lr.pages, 0), coalesce(lr.rows_inserted, 0), coalesce(lr.rows_updated, 0), "
          "  coalesce(extract(epoch FROM lr.finished_at), 0) "
          "FROM {s}.sync_state st LEFT JOIN {s}.sync_runs lr ON lr.run_id = st.last_run_id {agg} "
          "WHERE $2::bigint IS NULL OR st.tenant_id = $2::bigint "
          "ORDER BY 1, 2",
          fmt::arg("s", s), fmt::arg("iso", iso),
          fmt::arg("totals", !totals ? "0, 0, 0, 0, 0, 0, 0"
                             : counters ? "coalesce(agg.inserted, 0), coalesce(agg.updated, 0), coalesce(agg.pages, 0), "
                                          "coalesce(agg.requests, 0), coalesce(agg.throttled, 0), "
                                          "coalesce(agg.retries, 0), coalesce(agg.failed, 0)"
                                        : "coalesce(agg.inserted, 0), coalesce(agg.updated, 0), "
                                          "coalesce(agg.pages, 0), 0, 0, 0, coalesce(agg.failed, 0)"),
          fmt::arg("agg", !totals ? ""
                          : pruned_totals
                          ? fmt::format("LEFT JOIN (SELECT tenant_id, job, sum(inserted) AS inserted, "
                                        "sum(updated) AS updated, sum(pages) AS pages, sum(requests) AS requests, "
                                        "sum(throttled) AS throttled, sum(retries) AS retries, sum(failed) AS failed "
                                        "FROM (SELECT tenant_id, job, rows_inserted AS inserted, rows_updated AS "
                                        "updated, pages, requests, throttled, retries, (outcome = 'failed')::int "
                                        "AS failed FROM {0}.sync_runs UNION ALL SELECT tenant_id, job, "
                                        "rows_inserted, rows_updated, pages, requests, throttled, retries, "
                                        "failed_runs FROM {0}.sync_run_totals) u GROUP BY 1, 2) agg "
                                        "ON agg.tenant_id = st.tenant_id AND agg.job = st.job",
                                        s)
                          : fmt::format("LEFT JOIN (SELECT tenant_id, job, sum(rows_inserted) AS inserted, "
                                        "sum(rows_updated) AS updated, sum(pages) AS pages, {} "
                                        "count(*) FILTER (WHERE outcome = 'failed') AS failed "
                                        "FROM {}.sync_runs GROUP BY 1, 2) agg "
                                        "ON agg.tenant_id = st.tenant_id AND agg.job = st.job",
                                        counters ? "sum(requests) AS requests, sum(throttled) AS throttled, "
                                                   "sum(retries) AS retries,"
                                                 : "",
                                        s))),
      {fmt::format("{}", max_clock_skew),
       tenant ? std::optional<std::string>(std::to_string(*tenant)) : std::nullopt});
  for (int i = 0; i < r.rows(); ++i) {
    JobFigures f;
    f.tenant = r.get(i, 0);
    f.job = r.get(i, 1);
    f.last_outcome = r.get(i, 2);
    f.last_success = std::atof(r.get(i, 3).c_str());
    f.lag = std::atof(r.get(i, 4).c_str());
    f.last_duration = std::atof(r.get(i, 5).c_str());
    f.inserted = r.get_int(i, 6);
    f.updated = r.get_int(i, 7);
    f.pages = r.get_int(i, 8);
    f.requests = r.get_int(i, 9);
    f.throttled = r.get_int(i, 10);
    f.retries = r.get_int(i, 11);
    f.failed = r.get_int(i, 12);
    f.now = std::atof(r.get(i, 13).c_str());
    f.future_state = r.get(i, 14) == "t";
    f.token = r.get(i, 15) == "t";
    f.watermark = r.get(i, 16);
    f.last_finished = r.get(i, 17);
    f.last_success_text = r.get(i, 18);
    f.last_error = r.get(i, 19);
    f.last_pages = r.get_int(i, 20);
    f.last_inserted = r.get_int(i, 21);
    f.last_updated = r.get_int(i, 22);
    f.last_finished_at = std::atof(r.get(i, 23).c_str());
    out.push_back(std::move(f));
  }
  return out;
}

// Live rows per (job, tenant) of the listed jobs: those the API still returns (deleted_at marks
// the ones it stopped returning). One count per job table, so only for the per-job view.
std::map<std::pair<std::string, std::string>, std::string> live_rows(PgConnection& db, const Settings& settings,
                                                                      const std::set<std::string>& jobs,
                                                                      std::optional<std::int64_t> tenant) {
  const std::string s = db.quote_ident(settings.schema);
  std::map<std::pair<std::string, std::string>, std::string> rows;
  for (const JobSpec& spec : resolve_jobs(settings)) {
    if (!jobs.count(spec.name)) continue;
    const std::string table = s + "." + db.quote_ident(spec.table);
    if (db.exec("SELECT to_regclass($1) IS NOT NULL", {table}).get(0, 0) != "t") continue;
    const bool has_deleted_at =
        db.exec("SELECT count(*) FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'deleted_at' "
                "AND NOT attisdropped",
                {table})
            .get_int(0, 0) > 0;
    PgResult r = db.exec(fmt::format("SELECT tenant_id, count(*){} FROM {} WHERE $1::bigint IS NULL OR tenant_id = "
                                     "$1::bigint GROUP BY tenant_id",
                                     has_deleted_at ? " FILTER (WHERE deleted_at IS NULL)" : "", table),
                         {tenant ? std::optional<std::string>(std::to_string(*tenant)) : std::nullopt});
    for (int i = 0; i < r.rows(); ++i) rows[{spec.name, r.get(i, 0)}] = r.get(i, 1);
  }
  return rows;
}

std::map<std::string, std::int64_t> report_rows_read(PgConnection& db, const std::string& schema, const std::string& job) {
  PgResult r = db.exec(fmt::format("SELECT tenant_id, sum(rows) FROM {}.sync_report_days WHERE job = $1 GROUP BY 1",
                                   db.quote_ident(schema)),
                       {job});
  std::map<std::string, std::int64_t> out;
  for (int i = 0; i < r.rows(); ++i) out[r.get(i, 0)] = r.get_int(i, 1);
  return out;
}

// Records in quarantine (not stored by a later retry) per (job, tenant).
std::map<std::pair<std::string, std::string>, std::int64_t> quarantined(PgConnection& db, const std::string& schema) {
  const std::string s = db.quote_ident(schema);
  std::map<std::pair<std::string, std::string>, std::int64_t> out;
  if (db.exec("SELECT to_regclass($1) IS NOT NULL", {s + ".quarantine"}).get(0, 0) != "t") return out;
  // stored_at is read through to_jsonb so that this works on a schema older than the column, too.
  PgResult q = db.exec(fmt::format("SELECT job, tenant_id, count(*) FROM {}.quarantine q "
                                   "WHERE to_jsonb(q) ->> 'stored_at' IS NULL GROUP BY 1, 2",
                                   s));
  for (int i = 0; i < q.rows(); ++i) out[{q.get(i, 0), q.get(i, 1)}] = q.get_int(i, 2);
  return out;
}

std::map<std::string, std::string> last_outcomes(PgConnection& db, const std::string& schema) {
  const std::string s = db.quote_ident(schema);
  std::map<std::string, std::string> last;
  if (db.exec("SELECT to_regclass($1) IS NOT NULL", {s + ".sync_state"}).get(0, 0) != "t") return last;
  PgResult r = db.exec(fmt::format(
      "SELECT st.job, string_agg(DISTINCT coalesce(r.outcome, '-'), '/') FROM {0}.sync_state st "
      "LEFT JOIN {0}.sync_runs r ON r.run_id = st.last_run_id GROUP BY st.job",
      s));
  for (int i = 0; i < r.rows(); ++i) last[r.get(i, 0)] = r.get(i, 1);
  return last;
}

std::map<std::string, double> seconds_since_success(PgConnection& db, const std::string& schema, std::int64_t tenant) {
  PgResult r = db.exec(
      fmt::format("SELECT job, extract(epoch FROM now() - greatest(last_success_at, not_permitted_at)) "
                  "FROM {}.sync_state WHERE tenant_id = $1 AND greatest(last_success_at, not_permitted_at) IS NOT NULL",
                  db.quote_ident(schema)),
      {std::to_string(tenant)});
  std::map<std::string, double> out;
  for (int i = 0; i < r.rows(); ++i) out[r.get(i, 0)] = std::atof(r.get(i, 1).c_str());
  return out;
}

std::string describe_connection(PgConnection& db) {
  PgResult r = db.exec("SELECT current_database(), current_user");
  return fmt::format("database {} as {}", r.get(0, 0), r.get(0, 1));
}

}  // namespace stsync
