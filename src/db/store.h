// The database side of one (tenant, job): its state row, its run history, the advisory lock,
// and the per-page transaction that stores rows and state together.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <string>

#include "job_spec.h"
#include "job_storage.h"
#include "job_table_sql.h"
#include "page_parser.h"
#include "pg.h"
#include "timestamp.h"

namespace stsync {

/// The advisory lock that keeps one run of a (job, tenant) at a time, across processes and hosts.
std::string job_lock_key(const std::string& schema, const std::string& job, std::int64_t tenant);


class JobStore final : public JobStorage {
 public:
  /// `rewrite_children`: rebuild the child rows of every parent in a page, not only of parents
  /// that changed (a full refresh fills a child table added to the job file).
  JobStore(PgConnection& db, const std::string& schema, const JobSpec& spec, std::int64_t tenant,
           bool rewrite_children = false);

  /// Takes the session advisory lock of (schema, job, tenant); false when another session has it.
  bool try_lock() override;
  void unlock();
  /// Drops this job's temporary tables (staging, seen keys) from the session, outside any
  /// transaction: at the end of a job run, so that a reused connection holds only the tables of
  /// the job running on it.
  void drop_temporary_tables();
  /// drop_temporary_tables() and unlock(), whatever fails.
  void end_run() noexcept override;
  /// The job's state (a fresh row is created on first use).
  JobState load_state() override;
  /// After load_state: why the job's tables cannot be trusted to hold what the state says (a
  /// table dropped, renamed or re-created since the state last moved; a child table emptied),
  /// or nullopt. Logs a warning when the state row is new but the table holds rows of the
  /// tenant (an emptied state table: everything is read again).
  std::optional<std::string> tables_problem(const JobState& state) override;
  /// Marks runs left 'running' by a crashed process as 'interrupted'; opens a run record.
  std::int64_t begin_run(SyncMode mode) override;
  /// One transaction: COPY the page into staging, merge it (an older row never replaces a newer
  /// one; a replayed page changes nothing), write `state`, count the page in the run. When
  /// PostgreSQL refuses a value (SQLSTATE class 22), the page is committed again record by
  /// record: with quarantine on, each refused record goes to the quarantine table and the rest
  /// is stored; with it off, nothing is stored and Error(bad_data) names the record. Other
  /// PgErrors propagate (classified by classify_sqlstate). `where` names the page.
  /// Without `state`, no state or run row is written (re-processing quarantined records).
  MergeCounts commit_page(const ParsedPage& page, const JobState* state, std::int64_t run_id,
                          const std::string& where = {}, const CommitGates* gates = nullptr) override;
  MergeCounts commit_page(const ParsedPage& page, const JobState& state, std::int64_t run_id,
                          const std::string& where = {}) {
    return commit_page(page, &state, run_id, where);
  }
  /// A complete listing starts: from now on each committed page's keys are remembered (in a
  /// temporary table of this session, so a crash forgets them) until end_listing().
  void begin_listing() override;
  void end_listing() override;
  /// False when the connection was re-opened during the listing (its keys are lost).
  bool listing_intact() const override { return listing_ && !listing_lost_; }
  /// Whether the last page committed went straight into the job table (no staging, no merge).
  bool last_page_direct() const { return page_went_direct_; }
  /// The tenant's live rows (of one parent, for a per-parent job) the listing did not return.
  std::vector<std::string> unseen_rows(const std::optional<std::string>& parent) override;
  /// Sets deleted_at on `ids` (never a DELETE) and writes `state`, in one transaction; returns
  /// how many rows it marked.
  std::int64_t mark_deleted(const std::vector<std::string>& ids, const JobState* state, std::int64_t run_id) override;
  /// After the connection was re-opened: the staging table and the lock are gone with the old
  /// session. Takes the lock again; false when another run took it meanwhile.
  bool resume_after_reconnect();
  bool connected() const override { return db_.healthy(); }
  bool reconnect() override;
  /// Statistics that describe a much smaller table (a first large load before autovacuum got to
  /// it, a bulk import, autovacuum turned off) make the planner scan a child table per page
  /// instead of probing its index. When a job table has grown to more than twice the size its
  /// statistics know (and past 1 MB), this ANALYZEs it (SKIP_LOCKED: never waiting), outside any
  /// page's transaction. Cheap when nothing is stale: one catalog query.
  void refresh_statistics_if_stale() override;
  /// Closes the run record ('succeeded', 'failed' or 'interrupted') and the state's last
  /// success / last error, in one transaction.
  void finish_run(std::int64_t run_id, std::string_view outcome, const std::string& error,
                  const RunCounters& counters = RunCounters{}) override;
  DatabaseClock database_clock() override;
  std::vector<ParentRow> changed_parents(const std::optional<Ticks>& since, const std::optional<ParentRow>& after,
                                         int limit) override;
  std::vector<std::string> rows_of_deleted_parents() override;
  /// A JobStore on a new connection (the same parameters) that commits pages of this run
  /// without holding the lock.
  std::unique_ptr<JobStorage> open_helper() override;

 private:
  void ensure_staging();
  /// Sent with each page's BEGIN: the server session, and for a helper whether the job's lock
  /// is still held by the run's first connection. check_session() throws when either is wrong.
  std::string session_check_sql() const;
  void check_session(PgResult& begin_result) const;
  /// COPY + merge of `rows` (COPY text, a part or all of `page`), then the child rows of the
  /// parents it wrote; returns the counts.
  /// `single`: `rows` is one record (no duplicate ids possible).
  MergeCounts merge_rows(const ParsedPage& page, std::string_view rows, bool single);
  /// When no key of `page` is stored yet: copies its rows straight into the job table and
  /// returns true. Otherwise writes nothing and returns false.
  bool copy_direct(const ParsedPage& page);
  /// The record-by-record commit, inside the open transaction; quarantines or throws.
  MergeCounts merge_by_record(const ParsedPage& page, const std::string& where);
  void quarantine_record(std::optional<std::string> id, const std::string& where, const std::string& error,
                         std::string_view raw);
  void write_state(const JobState& state, std::int64_t run_id, const MergeCounts& counts);
  /// The helper's constructor: its own connection.
  JobStore(std::unique_ptr<PgConnection> own, const std::string& schema, const JobSpec& spec, std::int64_t tenant,
           bool rewrite_children);
  /// The constructors' common part: the statements of this job's tables.
  void prepare(const std::string& schema, bool rewrite_children);
  std::unique_ptr<PgConnection> own_db_;  // a helper's connection
  std::string schema_;
  /// Throws Error(db) naming the table when PostgreSQL stored fewer rows than were sent.
  void require_stored(const std::string& table, std::int64_t stored, std::int64_t sent) const;
  /// Whether the job table has user triggers or rules that may skip rows (asked once).
  bool table_skips_rows();
  std::optional<bool> skips_rows_;
  std::string where_;  // the page being committed, for messages
  std::optional<std::string> stored_oids_;  // sync_state.table_oids as text
  std::string current_oids_;                // the tables' OIDs now (0 = missing), as text
  bool fresh_state_ = false;                // load_state created the state row
  int lock_backend_pid_ = 0;  // the server session that took the lock (a helper: its own session)
  bool helper_ = false;
  PgConnection& db_;
  const JobSpec& spec_;
  std::int64_t tenant_;
  std::string lock_key_;
  JobTableSql sql_;  // the statements of the job's tables
  AdvisoryLock lock_;  // the job's session lock (not taken by a helper)
  bool listing_ = false, listing_lost_ = false;
  /// Keys in the seen table at most (-1: it may not exist, or holds an unknown number).
  std::int64_t seen_rows_ = -1;
  /// Empties the seen table (it exists): DELETE while it is small, else TRUNCATE.
  void clear_seen();
  // Pages of keys the table does not hold yet (a first load) are copied straight into it: the
  // rows are written once, not staged and then inserted. Tried while the pages before were all
  // new; a page that met a stored key, or whose direct copy collided with a row written
  // meanwhile, goes through the staging table and the guarded merge.
  bool direct_hopeful_ = true;   // the last merged page held only new keys
  bool page_went_direct_ = false;
  bool direct_refused_ = false;  // the page's direct copy collided: commit it again by the merge
  bool delete_for_inserted_ = false;  // children without a parent were met: clear for every written parent
  bool rewrite_children_ = false;
  bool staging_ready_ = false;
};

}  // namespace stsync
