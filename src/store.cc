#include "store.h"

#include <fmt/format.h>

#include "copy_text.h"
#include "errors.h"
#include "log.h"

namespace stsync {
namespace {

std::optional<std::string> ts_param(const std::optional<Ticks>& t) {
  if (!t) return std::nullopt;
  return format_timestamp_pg(*t);
}

std::optional<Ticks> ts_from_micros(const PgResult& r, int row, int col) {
  if (r.is_null(row, col)) return std::nullopt;
  return r.get_int(row, col) * kTicksPerMicro;
}

// Exactly to the microsecond, as numeric: never through a double.
std::string micros(std::string_view column) {
  return fmt::format("(extract(epoch FROM {}) * 1000000)::bigint", column);
}

}  // namespace

JobStore::JobStore(PgConnection& db, const std::string& schema, const JobSpec& spec,
                   std::int64_t tenant, bool rewrite_children)
    : db_(db), spec_(spec), tenant_(tenant) {
  schema_q_ = db.quote_ident(schema);
  table_q_ = schema_q_ + "." + db.quote_ident(spec.table);
  stage_q_ = db.quote_ident("stsync_stage_" + spec.name);
  lock_key_ = fmt::format("stsync:{}:{}:{}", schema, spec.name, tenant);

  const std::vector<std::string> cols = staging_columns(spec);
  std::string col_list, typed, set_list, stored_row, incoming_row;
  for (size_t i = 0; i < cols.size(); ++i) {
    if (i) col_list += ", ";
    col_list += db.quote_ident(cols[i]);
  }
  for (const ColumnSpec& c : spec.columns) {
    typed += db.quote_ident(c.name) + ", ";
    set_list += fmt::format("{0} = EXCLUDED.{0}, ", db.quote_ident(c.name));
    stored_row += (stored_row.empty() ? "t." : ", t.") + db.quote_ident(c.name);
    incoming_row += (incoming_row.empty() ? "EXCLUDED." : ", EXCLUDED.") + db.quote_ident(c.name);
  }
  // Same version, different typed values: the job file changed (a new column, another type).
  const std::string typed_differ =
      stored_row.empty() ? "" : fmt::format(" OR ROW({}) IS DISTINCT FROM ROW({})", stored_row, incoming_row);
  copy_sql_ = fmt::format("COPY {} ({}) FROM STDIN", stage_q_, col_list);
  // Per key, the newest version in the page wins (pages may repeat a row); then the guard: a row
  // replaces the stored one only if its modifiedOn is later, or equal with different content (the
  // raw record, or the typed values extracted from it).
  // Rows without modifiedOn count as older than any that have one.
  merge_sql_ = fmt::format(
      "WITH src AS ("
      "  SELECT DISTINCT ON (id) * FROM {stage}"
      "  ORDER BY id, modified_on DESC NULLS LAST, ordinal DESC"
      "), up AS ("
      "  INSERT INTO {table} AS t (tenant_id, id, {typed}modified_on, active, raw, synced_at)"
      "  SELECT tenant_id, id, {typed}modified_on, active, raw, now() FROM src"
      "  ON CONFLICT (tenant_id, id) DO UPDATE SET {set}modified_on = EXCLUDED.modified_on,"
      "    active = EXCLUDED.active, raw = EXCLUDED.raw, synced_at = EXCLUDED.synced_at"
      "  WHERE coalesce(EXCLUDED.modified_on, '-infinity') > coalesce(t.modified_on, '-infinity')"
      "     OR (coalesce(EXCLUDED.modified_on, '-infinity') = coalesce(t.modified_on, '-infinity')"
      "         AND (EXCLUDED.raw IS DISTINCT FROM t.raw{typed_differ}))"
      "  RETURNING (xmax = 0) AS inserted"
      ")"
      " SELECT (SELECT count(*) FROM src), count(*) FILTER (WHERE inserted),"
      "        count(*) FILTER (WHERE NOT inserted) FROM up",
      fmt::arg("stage", stage_q_), fmt::arg("table", table_q_), fmt::arg("typed", typed),
      fmt::arg("set", set_list), fmt::arg("typed_differ", typed_differ));

  // Child rows mirror the array in the parent's stored raw. Parents written by this page's merge
  // carry synced_at = now() (the transaction's start): their children are rebuilt.
  const std::string parents = fmt::format(
      "t.tenant_id = $1 AND t.id IN (SELECT id FROM {}){}", stage_q_, rewrite_children ? "" : " AND t.synced_at = now()");
  for (const ChildSpec& child : spec.children) {
    const std::string child_q = schema_q_ + "." + db.quote_ident(child.table);
    std::string names, values;
    for (const ColumnSpec& c : child.columns) {
      names += db.quote_ident(c.name) + ", ";
      values += column_from_jsonb_sql(c, "e.value") + ", ";
    }
    const std::string array = fmt::format("t.raw #> {}", json_path_sql(child.path));
    child_sql_.push_back(ChildSql{
        child.table,
        fmt::format("DELETE FROM {} c USING {} t WHERE {} AND c.tenant_id = t.tenant_id AND c.parent_id = t.id",
                    child_q, table_q_, parents),
        fmt::format("INSERT INTO {child} (tenant_id, parent_id, position, {names}raw, synced_at) "
                    "SELECT t.tenant_id, t.id, e.position, {values}e.value, now() FROM {table} t "
                    "CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof({array}) = 'array' "
                    "THEN {array} ELSE '[]'::jsonb END) WITH ORDINALITY AS e(value, position) WHERE {parents}",
                    fmt::arg("child", child_q), fmt::arg("table", table_q_), fmt::arg("parents", parents),
                    fmt::arg("names", names), fmt::arg("values", values), fmt::arg("array", array))});
  }
}

void JobStore::ensure_staging() {
  if (staging_ready_) return;
  std::string cols = "tenant_id bigint, id bigint";
  for (const ColumnSpec& c : spec_.columns)
    cols += fmt::format(", {} {}", db_.quote_ident(c.name), column_type_sql(c.type));
  cols += ", modified_on timestamptz, active boolean, raw jsonb, ordinal integer";
  // A temporary table lives as long as the connection; ON COMMIT DELETE ROWS empties it at the
  // end of every page's transaction, committed or not.
  db_.exec(fmt::format("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS", stage_q_, cols));
  staging_ready_ = true;
}

bool JobStore::try_lock() {
  PgResult r = db_.exec("SELECT pg_try_advisory_lock(hashtextextended($1, 0)), pg_backend_pid()", {lock_key_});
  lock_backend_pid_ = static_cast<int>(r.get_int(0, 1));
  return r.get(0, 0) == "t";
}

void JobStore::unlock() {
  if (db_.healthy()) db_.exec("SELECT pg_advisory_unlock(hashtextextended($1, 0))", {lock_key_});
}

bool JobStore::resume_after_reconnect() {
  staging_ready_ = false;
  return try_lock();
}

void JobStore::begin_page() {
  ensure_staging();
  db_.exec("BEGIN");
  // The job's lock and the staging table belong to one server session. A pooler that hands each
  // transaction to another server connection (PgBouncer's pool_mode = transaction or statement)
  // would silently drop both: the overlap guard would not hold. Refuse, clearly.
  PgResult r = db_.exec("SELECT pg_backend_pid()");
  if (r.get_int(0, 0) != lock_backend_pid_) {
    db_.rollback_quietly();
    throw Error(ErrorKind::config,
                fmt::format("job {} tenant {}: the database connection changed server sessions between "
                            "transactions (PgBouncer or another pooler in transaction or statement mode?): "
                            "stsync keeps a session lock and a staging table per job, so it needs a direct "
                            "connection or pool_mode = session",
                            spec_.name, tenant_));
  }
}

JobState JobStore::load_state() {
  db_.exec(fmt::format("INSERT INTO {}.sync_state (tenant_id, job) VALUES ($1, $2) "
                       "ON CONFLICT DO NOTHING",
                       schema_q_),
           {std::to_string(tenant_), spec_.name});
  PgResult r = db_.exec(
      fmt::format("SELECT export_token, {}, {}, {}, list_pass_field, {} FROM {}.sync_state "
                  "WHERE tenant_id = $1 AND job = $2",
                  micros("watermark"), micros("list_cursor"), micros("list_pass_start"),
                  micros("complete_through"), schema_q_),
      {std::to_string(tenant_), spec_.name});
  JobState s;
  s.export_token = r.get_optional(0, 0);
  s.watermark = ts_from_micros(r, 0, 1);
  s.list_cursor = ts_from_micros(r, 0, 2);
  s.list_pass_start = ts_from_micros(r, 0, 3);
  s.list_pass_field = r.get_optional(0, 4);
  s.complete_through = ts_from_micros(r, 0, 5);
  return s;
}

std::int64_t JobStore::begin_run(SyncMode mode) {
  const Params key = {std::to_string(tenant_), spec_.name};
  db_.exec(fmt::format("UPDATE {}.sync_runs SET outcome = 'interrupted', finished_at = now(), "
                       "error = 'the process ended before the run finished' "
                       "WHERE tenant_id = $1 AND job = $2 AND outcome = 'running'",
                       schema_q_),
           key);
  PgResult r = db_.exec(fmt::format("INSERT INTO {}.sync_runs (tenant_id, job, mode) "
                                    "VALUES ($1, $2, $3) RETURNING run_id",
                                    schema_q_),
                        {std::to_string(tenant_), spec_.name, std::string(mode_name(mode))});
  const std::int64_t run_id = r.get_int(0, 0);
  db_.exec(fmt::format("UPDATE {}.sync_state SET last_run_id = $3 WHERE tenant_id = $1 AND job = $2",
                       schema_q_),
           {std::to_string(tenant_), spec_.name, std::to_string(run_id)});
  return run_id;
}

MergeCounts JobStore::merge_rows(std::string_view rows) {
  MergeCounts counts;
  db_.copy_in(copy_sql_, rows);
  PgResult r = db_.exec(merge_sql_);
  const std::int64_t staged = r.get_int(0, 0);
  counts.inserted = r.get_int(0, 1);
  counts.updated = r.get_int(0, 2);
  counts.unchanged = staged - counts.inserted - counts.updated;
  for (const ChildSql& child : child_sql_) {
    db_.exec(child.delete_sql, {std::to_string(tenant_)});
    db_.exec(child.insert_sql, {std::to_string(tenant_)});
  }
  return counts;
}

void JobStore::quarantine_record(std::optional<std::int64_t> id, const std::string& where, const std::string& error,
                                 std::string_view raw) {
  db_.exec(fmt::format("INSERT INTO {}.quarantine (tenant_id, job, record_id, page, error, raw) "
                       "VALUES ($1, $2, $3, $4, $5, $6)",
                       schema_q_),
           {std::to_string(tenant_), spec_.name, id ? std::optional<std::string>(std::to_string(*id)) : std::nullopt,
            where, error, std::string(raw)});
}

MergeCounts JobStore::merge_by_record(const ParsedPage& page, const std::string& where) {
  // PostgreSQL refused something in this page. Store it again one record at a time, each under a
  // savepoint, to find exactly which records it refuses (the COPY's line number cannot name a
  // record whose child rows failed, and only the first bad record of a page is ever reported).
  MergeCounts counts;
  const size_t raw_field = staging_columns(spec_).size() - 2;
  size_t start = 0;
  for (size_t i = 0; i < page.ids.size(); ++i) {
    const size_t end = page.copy_rows.find('\n', start) + 1;
    const std::string_view row = std::string_view(page.copy_rows).substr(start, end - start);
    start = end;
    db_.exec("SAVEPOINT record");
    try {
      counts += merge_rows(row);
      db_.exec(fmt::format("DELETE FROM {}", stage_q_));
      db_.exec("RELEASE SAVEPOINT record");
    } catch (const PgError& e) {
      if (e.kind() != ErrorKind::db_value) throw;
      db_.exec("ROLLBACK TO SAVEPOINT record");
      const std::string message =
          fmt::format("record #{} (id {}): PostgreSQL refused a value: {}{}", i + 1, page.ids[i], e.what(),
                      e.context().empty() ? "" : " (" + e.context() + ")");
      if (!spec_.quarantine)
        throw Error(ErrorKind::bad_data, where + ": " + message + "; nothing of this page was stored");
      quarantine_record(page.ids[i], where, message, copy_row_field(row.substr(0, row.size() - 1), raw_field));
      log::warn("{}: {}; quarantined (see `stsync quarantine`), the job goes on", where, message);
    }
  }
  return counts;
}

void JobStore::write_state(const JobState& state, std::int64_t run_id, const MergeCounts& counts) {
  db_.exec(fmt::format("UPDATE {}.sync_state SET export_token = $3, watermark = $4, complete_through = $5, "
                       "list_cursor = $6, list_pass_start = $7, list_pass_field = $8, "
                       "rows_total = rows_total + $9, pages_total = pages_total + 1, "
                       "updated_at = now() WHERE tenant_id = $1 AND job = $2",
                       schema_q_),
           {std::to_string(tenant_), spec_.name, state.export_token, ts_param(state.watermark),
            ts_param(state.complete_through), ts_param(state.list_cursor), ts_param(state.list_pass_start),
            state.list_pass_field, std::to_string(counts.inserted + counts.updated)});
  db_.exec(fmt::format("UPDATE {}.sync_runs SET pages = pages + 1, rows_inserted = rows_inserted + $2, "
                       "rows_updated = rows_updated + $3, rows_unchanged = rows_unchanged + $4 "
                       "WHERE run_id = $1",
                       schema_q_),
           {std::to_string(run_id), std::to_string(counts.inserted), std::to_string(counts.updated),
            std::to_string(counts.unchanged)});
}

MergeCounts JobStore::commit_page(const ParsedPage& page, const JobState* state, std::int64_t run_id,
                                  const std::string& where) {
  for (bool by_record : {false, true}) {
    MergeCounts counts;
    begin_page();
    try {
      if (page.records > 0) {
        if (by_record) counts = merge_by_record(page, where);
        else counts = merge_rows(page.copy_rows);
      }
      for (const QuarantinedRecord& q : page.quarantined) quarantine_record(q.id, where, q.error, q.raw);
      if (state) write_state(*state, run_id, counts);
      db_.exec("COMMIT");
      return counts;
    } catch (const PgError& e) {
      db_.rollback_quietly();
      if (e.kind() != ErrorKind::db_value || by_record) throw;
      // A refused value: find the record(s), in a second transaction over the same page.
    } catch (...) {
      db_.rollback_quietly();
      throw;
    }
  }
  return {};  // not reached: the record-by-record pass commits or throws
}

void JobStore::finish_run(std::int64_t run_id, std::string_view outcome, const std::string& error) {
  const bool succeeded = outcome == "succeeded";
  db_.exec("BEGIN");
  try {
    db_.exec(fmt::format("UPDATE {}.sync_runs SET finished_at = now(), outcome = $2, error = $3 "
                         "WHERE run_id = $1",
                         schema_q_),
             {std::to_string(run_id), std::string(outcome),
              succeeded ? std::nullopt : std::optional<std::string>(error)});
    if (succeeded) {
      db_.exec(fmt::format("UPDATE {}.sync_state SET last_success_at = now(), last_error = NULL, "
                           "last_error_at = NULL WHERE tenant_id = $1 AND job = $2",
                           schema_q_),
               {std::to_string(tenant_), spec_.name});
    } else {
      db_.exec(fmt::format("UPDATE {}.sync_state SET last_error = $3, last_error_at = now() "
                           "WHERE tenant_id = $1 AND job = $2",
                           schema_q_),
               {std::to_string(tenant_), spec_.name, error});
    }
    db_.exec("COMMIT");
  } catch (...) {
    db_.rollback_quietly();
    throw;
  }
}

}  // namespace stsync
