#include "report_store.h"

#include <fmt/format.h>

#include <algorithm>

#include "migrate.h"
#include "run_record.h"
#include "store.h"

namespace stsync {

ReportStore::ReportStore(PgConnection& db, const std::string& schema, const JobSpec& spec, std::int64_t tenant)
    : db_(db),
      spec_(spec),
      tenant_(tenant),
      schema_(db.quote_ident(schema)),
      table_(db.quote_ident(schema) + "." + db.quote_ident(spec.table)),
      schema_name_(schema),
      lock_(db, job_lock_key(schema, spec.name, tenant)) {}

bool ReportStore::try_lock() { return lock_.try_acquire(); }

void ReportStore::unlock() noexcept { lock_.release(); }

bool ReportStore::reconnect() {
  db_.reconnect();
  lock_.forget();
  return lock_.try_acquire();
}

ReportState ReportStore::load_state() {
  db_.exec(fmt::format("INSERT INTO {}.sync_state (tenant_id, job) VALUES ($1, $2) ON CONFLICT DO NOTHING", schema_),
           {std::to_string(tenant_), spec_.name});
  PgResult r = db_.exec(fmt::format("SELECT to_char(complete_through AT TIME ZONE 'UTC', 'YYYY-MM-DD'), report_fields "
                                    "FROM {}.sync_state WHERE tenant_id = $1 AND job = $2",
                                    schema_),
                        {std::to_string(tenant_), spec_.name});
  return ReportState{r.get_optional(0, 0), r.get_optional(0, 1)};
}

std::int64_t ReportStore::begin_run() { return open_run_record(db_, schema_, tenant_, spec_.name, "report"); }

void ReportStore::finish_run(std::int64_t run_id, std::string_view outcome, const std::string& error,
                             const RunCounters& counters) {
  close_run_record(db_, schema_, tenant_, spec_.name, run_id, outcome, error, counters);
}

std::map<std::string, std::string> ReportStore::columns() {
  PgResult r = db_.exec("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a "
                        "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                        {table_});
  std::map<std::string, std::string> out;
  for (int i = 0; i < r.rows(); ++i) out[r.get(i, 0)] = r.get(i, 1);
  return out;
}

void ReportStore::ensure_table(const std::vector<ReportColumn>& fields) {
  Transaction tx(db_);
  ensure_table_shape(db_, schema_name_, report_table_shape(spec_, fields));
  tx.commit();
}

void ReportStore::store_as_text(const std::string& column) {
  // A rewrite of the table under an exclusive lock, taken within lock_timeout: a report that
  // reads the table meanwhile makes this run fail (and the next one try again), never wait.
  try {
    db_.exec(fmt::format("ALTER TABLE {0} ALTER COLUMN {1} TYPE text USING {1}::text", table_, db_.quote_ident(column)));
  } catch (const PgError& e) {
    if (e.sqlstate() != sqlstate::lock_not_available) throw;
    throw PgError(ErrorKind::db_fault,
                  fmt::format("cannot change column {} of table {} to text: another session holds a lock on it ({}); "
                              "nothing was changed and readers were not kept waiting; the next run tries again",
                              column, table_, e.what()),
                  e.sqlstate(), e.context());
  }
}

std::map<std::string, std::string> ReportStore::day_digests(const std::string& first, const std::string& last) {
  PgResult r = db_.exec(fmt::format("SELECT day::text, digest FROM {}.sync_report_days WHERE tenant_id = $1 AND job = $2 "
                                    "AND day BETWEEN $3::date AND $4::date",
                                    schema_),
                        {std::to_string(tenant_), spec_.name, first, last});
  std::map<std::string, std::string> out;
  for (int i = 0; i < r.rows(); ++i) out[r.get(i, 0)] = r.get(i, 1);
  return out;
}

std::int64_t ReportStore::store_day(const ReportDay& day, bool unchanged, const ReportState& state, std::int64_t run_id) {
  const Params key = {std::to_string(tenant_), spec_.name, day.day};
  Transaction tx(db_);
  std::int64_t before = 0;
  if (unchanged) {
    db_.exec(fmt::format("UPDATE {}.sync_report_days SET read_at = now() WHERE tenant_id = $1 AND job = $2 AND day = $3",
                         schema_),
             key);
    before = day.rows;
  } else {
    // The day as a whole: its old rows go and its new ones come in the same transaction, so a
    // reader sees the one or the other, never a mix, and a crash leaves the old day.
    before = db_.exec(fmt::format("WITH gone AS (DELETE FROM {} WHERE tenant_id = $1 AND report_day = $2::date "
                                  "RETURNING 1) SELECT count(*) FROM gone",
                                  table_),
                      {std::to_string(tenant_), day.day})
                 .get_int(0, 0);
    std::string columns = "tenant_id, report_day, position";
    for (const std::string& c : day.columns) columns += ", " + db_.quote_ident(c);
    const std::int64_t stored = db_.copy_in(fmt::format("COPY {} ({}) FROM STDIN", table_, columns), day.copy_rows);
    if (stored != day.rows)
      throw Error(ErrorKind::db, fmt::format("table {} stored {} of the {} rows of day {} (a trigger or rule on it?)",
                                             table_, stored, day.rows, day.day));
    db_.exec(fmt::format("INSERT INTO {}.sync_report_days (tenant_id, job, day, rows, digest) "
                         "VALUES ($1, $2, $3::date, $4, $5) ON CONFLICT (tenant_id, job, day) DO UPDATE SET "
                         "rows = EXCLUDED.rows, digest = EXCLUDED.digest, read_at = now(), "
                         "change_xid = pg_current_xact_id()",
                         schema_),
             {std::to_string(tenant_), spec_.name, day.day, std::to_string(day.rows), day.digest});
  }
  const std::int64_t inserted = unchanged ? 0 : std::max<std::int64_t>(0, day.rows - before);
  const std::int64_t updated = unchanged ? 0 : day.rows - inserted;
  db_.exec(fmt::format("WITH state AS (UPDATE {0}.sync_state SET "
                       "complete_through = ($3::date)::timestamp AT TIME ZONE 'UTC', "
                       "watermark = greatest(watermark, least((($6::date) + 1)::timestamp AT TIME ZONE 'UTC', now())), "
                       "report_fields = $4, rows_total = rows_total + $5, pages_total = pages_total + 1, "
                       "updated_at = now() WHERE tenant_id = $1 AND job = $2) "
                       "UPDATE {0}.sync_runs SET pages = pages + 1, rows_inserted = rows_inserted + $7, "
                       "rows_updated = rows_updated + $8, rows_unchanged = rows_unchanged + $9 WHERE run_id = $10",
                       schema_),
           {std::to_string(tenant_), spec_.name, state.complete_through, state.fields,
            std::to_string(inserted + updated), day.day, std::to_string(inserted), std::to_string(updated),
            std::to_string(unchanged ? day.rows : 0), std::to_string(run_id)});
  tx.commit();
  return before;
}

}  // namespace stsync
