// The database side of one (tenant, job): its state row, its run history, the advisory lock,
// and the per-page transaction that stores rows and state together.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "job_spec.h"
#include "page_parser.h"
#include "pg.h"
#include "timestamp.h"

namespace stsync {

struct JobState {
  std::optional<std::string> export_token;
  std::optional<Ticks> watermark;
  std::optional<Ticks> list_cursor;
  std::optional<Ticks> list_pass_start;
  std::optional<std::string> list_pass_field;  // "created" while a first list pass is under way
};

struct MergeCounts {
  std::int64_t inserted = 0, updated = 0, unchanged = 0;
  MergeCounts& operator+=(const MergeCounts& o) {
    inserted += o.inserted;
    updated += o.updated;
    unchanged += o.unchanged;
    return *this;
  }
};

class JobStore {
 public:
  /// `rewrite_children`: rebuild the child rows of every parent in a page, not only of parents
  /// that changed (a full refresh fills a child table added to the job file).
  JobStore(PgConnection& db, const std::string& schema, const JobSpec& spec, std::int64_t tenant,
           bool rewrite_children = false);

  /// Takes the session advisory lock of (schema, job, tenant); false when another session has it.
  bool try_lock();
  void unlock();
  /// The job's state (a fresh row is created on first use).
  JobState load_state();
  /// Marks runs left 'running' by a crashed process as 'interrupted'; opens a run record.
  std::int64_t begin_run(SyncMode mode);
  /// One transaction: COPY the page into staging, merge it (an older row never replaces a newer
  /// one; a replayed page changes nothing), write `state`, count the page in the run. Throws
  /// Error(bad_data) naming the record when PostgreSQL refuses a value; PgError otherwise.
  /// `where` names the page for quarantined records.
  MergeCounts commit_page(const ParsedPage& page, const JobState& state, std::int64_t run_id,
                          const std::string& where = {});
  /// After the connection was re-opened: the staging table and the lock are gone with the old
  /// session. Takes the lock again; false when another run took it meanwhile.
  bool resume_after_reconnect();
  /// Closes the run record and the state's last success / last error, in one transaction.
  void finish_run(std::int64_t run_id, bool succeeded, const std::string& error);

 private:
  void ensure_staging();
  PgConnection& db_;
  const JobSpec& spec_;
  std::int64_t tenant_;
  std::string schema_q_, table_q_, stage_q_, lock_key_;
  std::string copy_sql_, merge_sql_;
  struct ChildSql {
    std::string table, delete_sql, insert_sql;
  };
  std::vector<ChildSql> child_sql_;
  bool staging_ready_ = false;
};

}  // namespace stsync
