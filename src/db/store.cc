#include "store.h"
#include "run_record.h"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "copy_text.h"
#include "job_table_sql.h"
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

std::string job_lock_key(const std::string& schema, const std::string& job, std::int64_t tenant) {
  return fmt::format("stsync:{}:{}:{}", schema, job, tenant);
}

JobStore::JobStore(PgConnection& db, const std::string& schema, const JobSpec& spec,
                   std::int64_t tenant, bool rewrite_children)
    : db_(db),
      spec_(spec),
      tenant_(tenant),
      lock_key_(job_lock_key(schema, spec.name, tenant)),
      lock_(db, lock_key_) {
  prepare(schema, rewrite_children);
}

void JobStore::prepare(const std::string& schema, bool rewrite_children) {
  schema_ = schema;
  rewrite_children_ = rewrite_children;
  sql_ = JobTableSql(db_, schema, spec_, rewrite_children);
}

JobStore::JobStore(std::unique_ptr<PgConnection> own, const std::string& schema, const JobSpec& spec,
                   std::int64_t tenant, bool rewrite_children)
    : own_db_(std::move(own)),
      db_(*own_db_),
      spec_(spec),
      tenant_(tenant),
      lock_key_(job_lock_key(schema, spec.name, tenant)),
      lock_(db_, lock_key_) {
  prepare(schema, rewrite_children);
  helper_ = true;
  lock_backend_pid_ = static_cast<int>(db_.exec("SELECT pg_backend_pid()").get_int(0, 0));
}

std::unique_ptr<JobStorage> JobStore::open_helper() {
  return std::unique_ptr<JobStorage>(new JobStore(db_.open_another(), schema_, spec_, tenant_, rewrite_children_));
}

void JobStore::ensure_staging() {
  if (staging_ready_) return;
  // The page's row columns as the job table has them (its raw column's type included), then the
  // record's position in the page.
  std::string cols;
  for (const TableColumn& c : job_table_shape(spec_).row_columns())
    cols += fmt::format("{} {}, ", db_.quote_ident(c.name), c.name == "raw" ? sql_.raw_type : c.sql_type);
  cols += "ordinal integer";
  // A temporary table lives as long as the connection; ON COMMIT DELETE ROWS empties it at the
  // end of every page's transaction, committed or not.
  db_.exec(fmt::format("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS", sql_.stage, cols));
  staging_ready_ = true;
}

bool JobStore::try_lock() {
  if (!lock_.try_acquire()) return false;
  lock_backend_pid_ = static_cast<int>(db_.exec("SELECT pg_backend_pid()").get_int(0, 0));
  return true;
}

void JobStore::unlock() { lock_.release(); }

void JobStore::end_run() noexcept {
  try {
    drop_temporary_tables();
  } catch (const std::exception&) {
    // The session is gone, and its temporary tables with it.
  }
  lock_.release();
}

bool JobStore::reconnect() {
  db_.reconnect();
  return resume_after_reconnect();
}

DatabaseClock JobStore::database_clock() {
  // synced_at is the start of the writing transaction, which may commit after we read: a
  // per-parent cursor never passes the start of a transaction that is still writing.
  PgResult r = db_.exec(
      "SELECT (extract(epoch FROM now()) * 1000000)::bigint, (extract(epoch FROM (SELECT min(xact_start) FROM "
      "pg_catalog.pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid())) * 1000000)::bigint");
  DatabaseClock c;
  c.now = r.get_int(0, 0) * kTicksPerMicro;
  if (!r.is_null(0, 1)) c.oldest_writer_start = r.get_int(0, 1) * kTicksPerMicro;
  return c;
}

std::vector<ParentRow> JobStore::changed_parents(const std::optional<Ticks>& since,
                                                 const std::optional<ParentRow>& after, int limit) {
  const std::string table = sql_.schema + "." + db_.quote_ident(spec_.parent_table);
  Params params = {std::to_string(tenant_)};
  std::string sql = fmt::format("SELECT id::text, (extract(epoch FROM synced_at) * 1000000)::bigint FROM {} "
                                "WHERE tenant_id = $1 AND deleted_at IS NULL",
                                table);
  if (since) {
    params.push_back(format_timestamp_pg(*since));
    sql += fmt::format(" AND synced_at > ${}::timestamptz", params.size());
  }
  if (after) {
    params.push_back(std::to_string(after->synced_micros));
    params.push_back(after->id);
    sql += fmt::format(" AND (synced_at, id) > (to_timestamp(${}::bigint / 1000000.0), ${}::{})", params.size() - 1,
                       params.size(), column_type_sql(spec_.parent_key_type));
  }
  sql += fmt::format(" ORDER BY synced_at, id LIMIT {}", limit);
  try {
    PgResult r = db_.exec(sql, params);
    std::vector<ParentRow> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(ParentRow{r.get(i, 0), r.get_int(i, 1)});
    return out;
  } catch (const PgError& e) {
    if (e.sqlstate() != sqlstate::undefined_table) throw;
    throw Error(ErrorKind::config, fmt::format("job {} tenant {} : reads the parents from job {}'s table {}, which does "
                                               "not exist: run job {} first (it must be enabled)",
                                               spec_.name, tenant_, spec_.parent, spec_.parent_table, spec_.parent));
  }
}

bool JobStore::resume_after_reconnect() {
  staging_ready_ = false;
  if (listing_) {
    // The keys seen so far died with the session: this listing can no longer tell what is gone.
    listing_lost_ = true;
    db_.exec(fmt::format("CREATE TEMP TABLE IF NOT EXISTS {} (id {} PRIMARY KEY)", sql_.seen,
                         column_type_sql(spec_.key_type)));
    seen_rows_ = 0;
  } else {
    seen_rows_ = -1;  // the table went with the old session
  }
  if (helper_) {
    // A helper holds no lock: it notes its new session; each page checks the lock's holder.
    lock_backend_pid_ = static_cast<int>(db_.exec("SELECT pg_backend_pid()").get_int(0, 0));
    return true;
  }
  lock_.forget();  // it went with the old session
  return try_lock();
}

std::string JobStore::session_check_sql() const {
  // The job's lock and the staging table belong to one server session. A pooler that hands each
  // transaction to another server connection (PgBouncer's pool_mode = transaction or statement)
  // would silently drop both: the overlap guard would not hold. Refuse, clearly.
  // A helper connection also checks that the job's lock is still held by another session (the
  // run's first connection): a run whose lock is gone must not go on committing.
  return helper_ ? fmt::format("SELECT pg_backend_pid(), EXISTS (SELECT 1 FROM pg_catalog.pg_locks l, "
                               "(SELECT hashtextextended({}, 0) AS k) h WHERE l.locktype = 'advisory' "
                               "AND l.granted AND l.objsubid = 1 AND l.pid <> pg_backend_pid() "
                               "AND l.classid = ((h.k >> 32) & 4294967295)::oid "
                               "AND l.objid = (h.k & 4294967295)::oid)",
                               db_.quote_literal(lock_key_))
                 : std::string("SELECT pg_backend_pid()");
}

void JobStore::check_session(PgResult& r) const {
  if (helper_ && r.get(0, 1) != "t")
    throw Error(ErrorKind::db, fmt::format("job {} tenant {}: the run's first connection no longer holds the job's "
                                           "lock; stopping this run (the next one carries on from the committed state)",
                                           spec_.name, tenant_));
  if (r.get_int(0, 0) != lock_backend_pid_)
    throw Error(ErrorKind::config,
                fmt::format("job {} tenant {}: the database connection changed server sessions between "
                            "transactions (PgBouncer or another pooler in transaction or statement mode?): "
                            "stsync keeps a session lock and a staging table per job, so it needs a direct "
                            "connection or pool_mode = session",
                            spec_.name, tenant_));
}

void JobStore::drop_temporary_tables() {
  if (!db_.healthy()) return;
  db_.exec(fmt::format("DROP TABLE IF EXISTS pg_temp.{}, pg_temp.{}", sql_.stage, sql_.seen));
  staging_ready_ = false;
  seen_rows_ = -1;
}

JobState JobStore::load_state() {
  const bool fresh = db_.exec(fmt::format("INSERT INTO {}.sync_state (tenant_id, job) VALUES ($1, $2) "
                                          "ON CONFLICT DO NOTHING RETURNING 1",
                                          sql_.schema),
                              {std::to_string(tenant_), spec_.name})
                         .rows() == 1;
  Params params = {std::to_string(tenant_), spec_.name};
  std::string current = "ARRAY[";
  for (size_t i = 0; i < sql_.analyzable.size(); ++i) {
    params.push_back(sql_.analyzable[i]);
    current += fmt::format("{}to_regclass(${})::oid", i ? ", " : "", params.size());
  }
  current += "]::oid[]::text";
  PgResult r = db_.exec(
      fmt::format("SELECT export_token, {}, {}, {}, list_pass_field, {}, {}, table_oids::text, {}, backfill FROM {}.sync_state "
                  "WHERE tenant_id = $1 AND job = $2",
                  micros("watermark"), micros("list_cursor"), micros("list_pass_start"),
                  micros("complete_through"), micros("reconciled_at"), current, sql_.schema),
      params);
  JobState s;
  s.export_token = r.get_optional(0, 0);
  s.watermark = ts_from_micros(r, 0, 1);
  s.list_cursor = ts_from_micros(r, 0, 2);
  s.list_pass_start = ts_from_micros(r, 0, 3);
  s.list_pass_field = r.get_optional(0, 4);
  s.complete_through = ts_from_micros(r, 0, 5);
  s.reconciled_at = ts_from_micros(r, 0, 6);
  stored_oids_ = r.get_optional(0, 7);
  current_oids_ = r.get(0, 8);
  s.backfill = r.get_optional(0, 9);
  fresh_state_ = fresh;
  return s;
}

std::int64_t JobStore::begin_run(SyncMode mode) {
  return open_run_record(db_, sql_.schema, tenant_, spec_.name, mode_name(mode));
}

bool JobStore::copy_direct(const ParsedPage& page) {
  if (db_.exec(sql_.any_stored, {std::to_string(tenant_), pg_array_literal(page.ids)}).get_int(0, 0) != 0) return false;
  // The page's rows without their last field (the ordinal, a staging column): runs of the
  // page's buffer, nothing copied on the way.
  static constexpr std::string_view kNewline = "\n";
  std::vector<std::string_view> parts;
  parts.reserve(2 * page.row_ends.size());
  const std::string_view all = page.copy_rows;
  size_t begin = 0;
  for (size_t end : page.row_ends) {
    const std::string_view row = all.substr(begin, end - begin - 1);
    parts.push_back(row.substr(0, row.rfind('\t')));
    parts.push_back(kNewline);
    begin = end;
  }
  page_went_direct_ = true;
  require_stored(spec_.table, db_.copy_in(sql_.copy_direct, parts), static_cast<std::int64_t>(page.row_ends.size()));
  return true;
}

MergeCounts JobStore::merge_rows(const ParsedPage& page, std::string_view rows, bool single) {
  MergeCounts counts;
  page_went_direct_ = false;
  const bool by_id = (single || !page.duplicate_ids) && !rewrite_children_;
  std::vector<size_t> inserted, updated;
  std::optional<PgResult> merged;
  if (by_id && !single && !listing_ && direct_hopeful_ && !direct_refused_ && copy_direct(page)) {
    counts.inserted = static_cast<std::int64_t>(page.ids.size());
    for (size_t i = 0; i < page.ids.size(); ++i) inserted.push_back(i);
  } else {
    db_.copy_in(sql_.copy_stage, rows);
    if (listing_) {
      db_.exec(fmt::format("INSERT INTO {} (id) SELECT id FROM {} ON CONFLICT DO NOTHING", sql_.seen, sql_.stage));
      seen_rows_ += static_cast<std::int64_t>(page.ids.size());  // at most (a rolled back page counts too)
    }
    merged = db_.exec(by_id ? sql_.merge_unique : sql_.merge);
    const std::int64_t staged = merged->get_int(0, 0);
    counts.inserted = merged->get_int(0, 1);
    counts.updated = merged->get_int(0, 2);
    counts.unchanged = staged - counts.inserted - counts.updated;
    if (!single) direct_hopeful_ = counts.inserted == staged;
    if (counts.unchanged > 0 && table_skips_rows()) {
      // "Unchanged" must mean: the table holds this version or a newer one.
      const std::int64_t missing =
          db_.exec(fmt::format("SELECT count(*) FROM {} s WHERE NOT EXISTS (SELECT 1 FROM {} t WHERE t.tenant_id = "
                               "s.tenant_id AND t.id = s.id AND coalesce(t.modified_on, '-infinity') >= "
                               "coalesce(s.modified_on, '-infinity'))",
                               sql_.stage, sql_.table))
              .get_int(0, 0);
      require_stored(spec_.table, staged - missing, staged);
    }
  }
  if (sql_.children.empty()) return counts;
  // The records whose children are written (by their position in the page), and the parents whose
  // old children are deleted first: those the merge updated. A parent the merge inserted has none,
  // unless a person deleted the parent row by hand and left its children (then the child COPY
  // meets their keys, and the page is committed again deleting for every written parent).
  std::unordered_map<std::string_view, size_t> ordinal_of;
  if (by_id)
    for (size_t i = 0; i < page.ids.size(); ++i) ordinal_of.emplace(page.ids[i], i);
  auto ordinals = [&](const std::string& keys) {
    std::vector<size_t> out;
    for (const std::string& key : parse_pg_array(keys))
      out.push_back(by_id ? ordinal_of.at(key) : static_cast<size_t>(std::stoull(key)));
    return out;
  };
  if (merged) {
    inserted = ordinals(merged->get(0, 3));
    updated = ordinals(merged->get(0, 4));
  }
  std::vector<size_t> written = inserted, cleared = updated;
  written.insert(written.end(), updated.begin(), updated.end());
  if (rewrite_children_) {
    // A full refresh rebuilds the children of every parent it wrote or found the same, but a
    // parent the merge has just inserted has no children to delete (a first full refresh deletes
    // nothing): the delete's plan, which stale statistics can spoil, runs only where it must.
    written = ordinals(merged->get(0, 5));
    const std::unordered_set<size_t> fresh(inserted.begin(), inserted.end());
    cleared.clear();
    for (size_t i : written)
      if (!fresh.count(i)) cleared.push_back(i);
  }
  if (delete_for_inserted_) cleared = written;
  if (written.empty()) return counts;
  std::sort(written.begin(), written.end());
  std::vector<std::string> cleared_ids;
  for (size_t i : cleared) cleared_ids.push_back(page.ids.at(i));
  const std::string ids = pg_array_literal(cleared_ids);
  for (size_t k = 0; k < sql_.children.size(); ++k) {
    // The written records' child rows, as runs of the page's buffer (one run when every record
    // was written): nothing is copied on the way.
    const ParsedPage::ChildRows& rows_k = page.children.at(k);
    std::vector<std::string_view> parts;
    const std::string_view all = rows_k.copy_rows;
    size_t run_begin = 0, run_end = 0, total = 0;
    for (size_t ordinal : written) {
      const size_t begin = ordinal == 0 ? 0 : rows_k.record_ends.at(ordinal - 1);
      const size_t end = rows_k.record_ends.at(ordinal);
      if (begin != run_end) {
        if (run_end > run_begin) parts.push_back(all.substr(run_begin, run_end - run_begin));
        run_begin = begin;
      }
      run_end = end;
      total += end - begin;
    }
    if (run_end > run_begin) parts.push_back(all.substr(run_begin, run_end - run_begin));
    if (!cleared.empty()) db_.exec(sql_.children[k].delete_sql, {std::to_string(tenant_), ids});
    if (total > 0) {
      std::int64_t sent = 0;
      for (std::string_view part : parts) sent += static_cast<std::int64_t>(std::count(part.begin(), part.end(), '\n'));
      require_stored(sql_.children[k].table, db_.copy_in(sql_.children[k].copy_sql, parts), sent);
    }
  }
  return counts;
}

void JobStore::quarantine_record(std::optional<std::string> id, const std::string& where, const std::string& error,
                                 std::string_view raw) {
  db_.exec(fmt::format("INSERT INTO {}.quarantine (tenant_id, job, record_id, page, error, raw) "
                       "VALUES ($1, $2, $3, $4, $5, $6)",
                       sql_.schema),
           {std::to_string(tenant_), spec_.name, id, where, error, std::string(raw)});
}

MergeCounts JobStore::merge_by_record(const ParsedPage& page, const std::string& where) {
  // PostgreSQL refused something in this page. Store it again one record at a time, each under a
  // savepoint, to find exactly which records it refuses (the COPY's line number cannot name a
  // record whose child rows failed, and only the first bad record of a page is ever reported).
  MergeCounts counts;
  const size_t raw_field = staging_columns(spec_).size() - 2;
  size_t start = 0;
  for (size_t i = 0; i < page.ids.size(); ++i) {
    const size_t end = page.row_ends[i];
    const std::string_view row = std::string_view(page.copy_rows).substr(start, end - start);
    start = end;
    db_.exec("SAVEPOINT record");
    try {
      counts += merge_rows(page, row, /*single=*/true);
      db_.exec(fmt::format("DELETE FROM {}", sql_.stage));
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
      log::event(log::Level::warn, "record_quarantined", {}, "{}: {}; quarantined (see `stsync quarantine`), the job goes on",
                 where, message);
    }
  }
  return counts;
}

void JobStore::write_state(const JobState& state, std::int64_t run_id, const MergeCounts& counts) {
  // One statement, one round trip: the state and the run's counts.
  db_.exec(fmt::format("WITH state AS (UPDATE {0}.sync_state SET export_token = $3, watermark = $4, "
                       "complete_through = $5, list_cursor = $6, list_pass_start = $7, list_pass_field = $8, "
                       "reconciled_at = $13, table_oids = $14::oid[], backfill = $15, "
                       "rows_total = rows_total + $9 + $10, pages_total = pages_total + 1, updated_at = now() "
                       "WHERE tenant_id = $1 AND job = $2) "
                       "UPDATE {0}.sync_runs SET pages = pages + 1, rows_inserted = rows_inserted + $9, "
                       "rows_updated = rows_updated + $10, rows_unchanged = rows_unchanged + $11 WHERE run_id = $12",
                       sql_.schema),
           {std::to_string(tenant_), spec_.name, state.export_token, ts_param(state.watermark),
            ts_param(state.complete_through), ts_param(state.list_cursor), ts_param(state.list_pass_start),
            state.list_pass_field, std::to_string(counts.inserted), std::to_string(counts.updated),
            std::to_string(counts.unchanged), std::to_string(run_id), ts_param(state.reconciled_at),
            current_oids_.empty() ? std::nullopt : std::optional<std::string>(current_oids_), state.backfill});
}

MergeCounts JobStore::commit_page(const ParsedPage& page, const JobState* state, std::int64_t run_id,
                                  const std::string& where, const CommitGates* gates) {
  bool by_record = false;
  direct_refused_ = false;
  where_ = where;
  for (;;) {
    MergeCounts counts;
    page_went_direct_ = false;
    ensure_staging();
    try {
      Transaction tx(db_, session_check_sql());
      check_session(tx.begin_result());
      if (gates && gates->before_merge) gates->before_merge();
      if (page.records > 0) {
        if (by_record) counts = merge_by_record(page, where);
        else counts = merge_rows(page, page.copy_rows, false);
      }
      if (gates && gates->after_merge) gates->after_merge();
      for (const QuarantinedRecord& q : page.quarantined) {
        quarantine_record(q.id, where, q.error, q.raw);
        // Served, only not storable: a listing saw it (it is not deleted).
        if (listing_ && q.id) {
          db_.exec(fmt::format("INSERT INTO {} (id) VALUES ($1) ON CONFLICT DO NOTHING", sql_.seen), {*q.id});
          ++seen_rows_;
        }
      }
      if (gates && gates->before_state) gates->before_state();
      if (state) write_state(*state, run_id, counts);
      tx.commit();
      return counts;
    } catch (const PgError& e) {
      // (The transaction was rolled back as it went out of scope.)
      if (e.sqlstate() == sqlstate::unique_violation && page_went_direct_ && !direct_refused_) {
        // A key of the page was written by someone else between the probe and the copy: the
        // guarded merge decides which version stays.
        log::info("{}: a record of the page was stored meanwhile ({}); committing the page again through the merge",
                  where, e.what());
        direct_refused_ = true;
        continue;
      }
      if (e.sqlstate() == sqlstate::unique_violation && !sql_.children.empty() && !delete_for_inserted_) {
        // Child rows whose parent row was deleted by hand: clear by every written parent from now on.
        log::warn("{}: child rows without their parent row are in the way ({}); committing the page again "
                  "with those cleared",
                  where, e.what());
        delete_for_inserted_ = true;
        continue;
      }
      if (e.kind() != ErrorKind::db_value || by_record) throw;
      // A refused value: find the record(s), in a second transaction over the same page.
      by_record = true;
    }
  }
}

void JobStore::begin_listing() {
  ensure_staging();
  if (seen_rows_ < 0) {
    db_.exec(fmt::format("CREATE TEMP TABLE IF NOT EXISTS {} (id {} PRIMARY KEY)", sql_.seen,
                         column_type_sql(spec_.key_type)));
    clear_seen();
  }
  listing_ = true;
  listing_lost_ = false;
}

void JobStore::end_listing() {
  if (!listing_) return;
  listing_ = false;
  clear_seen();
}

void JobStore::clear_seen() {
  // Every statement here is a transaction of its own, and its COMMIT waits for a WAL flush (an
  // fsync): once per parent, that bounded a per-parent walk at about 20 parents a second. A
  // parent with nothing under it put no key in the table: nothing to empty, no statement. A
  // small listing's keys go by DELETE, a large one's by TRUNCATE.
  if (seen_rows_ == 0) return;
  db_.exec((seen_rows_ > 0 && seen_rows_ <= 10000 ? "DELETE FROM " : "TRUNCATE ") + sql_.seen);
  seen_rows_ = 0;
}

std::vector<std::string> JobStore::rows_of_deleted_parents() {
  const std::string parents = sql_.schema + "." + db_.quote_ident(spec_.parent_table);
  PgResult r = db_.exec(fmt::format("SELECT t.id::text FROM {} t WHERE t.tenant_id = $1 AND t.deleted_at IS NULL AND "
                                    "EXISTS (SELECT 1 FROM {} p WHERE p.tenant_id = t.tenant_id AND p.id = t.parent_id "
                                    "AND p.deleted_at IS NOT NULL) ORDER BY t.id",
                                    sql_.table, parents),
                        {std::to_string(tenant_)});
  std::vector<std::string> out;
  for (int i = 0; i < r.rows(); ++i) out.push_back(r.get(i, 0));
  return out;
}

std::vector<std::string> JobStore::unseen_rows(const std::optional<std::string>& parent) {
  // An anti-join over the tenant's live rows: the cost of a sweep, which runs every
  // reconcile_every (or per parent, over that parent's rows), never per page.
  PgResult r = db_.exec(
      fmt::format("SELECT t.id::text FROM {} t WHERE t.tenant_id = $1 AND t.deleted_at IS NULL{} "
                  "AND NOT EXISTS (SELECT 1 FROM {} s WHERE s.id = t.id) ORDER BY t.id",
                  sql_.table, parent ? fmt::format(" AND t.parent_id = $2::{}", column_type_sql(spec_.parent_key_type)) : "",
                  sql_.seen),
      parent ? std::vector<std::optional<std::string>>{std::to_string(tenant_), *parent}
             : std::vector<std::optional<std::string>>{std::to_string(tenant_)});
  std::vector<std::string> out;
  for (int i = 0; i < r.rows(); ++i) out.push_back(r.get(i, 0));
  return out;
}

std::int64_t JobStore::mark_deleted(const std::vector<std::string>& ids, const JobState* state, std::int64_t run_id) {
  ensure_staging();
  Transaction tx(db_, session_check_sql());
  check_session(tx.begin_result());
  {
    std::int64_t marked = 0;
    if (!ids.empty()) {
      PgResult r = db_.exec(fmt::format("WITH d AS (UPDATE {} SET deleted_at = now(), change_xid = pg_current_xact_id() WHERE tenant_id = $1 "
                                        "AND id = ANY($2::{}[]) AND deleted_at IS NULL RETURNING 1) SELECT count(*) FROM d",
                                        sql_.table, column_type_sql(spec_.key_type)),
                            {std::to_string(tenant_), pg_array_literal(ids)});
      marked = r.get_int(0, 0);
    }
    if (state) write_state(*state, run_id, MergeCounts{});
    tx.commit();
    return marked;
  }
}

void JobStore::finish_run(std::int64_t run_id, std::string_view outcome, const std::string& error,
                          const RunCounters& counters) {
  close_run_record(db_, sql_.schema, tenant_, spec_.name, run_id, outcome, error, counters);
}

}  // namespace stsync
