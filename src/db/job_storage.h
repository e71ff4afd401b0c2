// The seam between a job's walks (engine/) and the database: what one (tenant, job) run needs of
// its storage. JobStore is the PostgreSQL one; the tests also drive every walk against an
// in-memory fake (tests/fake_store.h), without PostgreSQL.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "job_spec.h"
#include "page_parser.h"
#include "timestamp.h"

namespace stsync {

struct JobState {
  std::optional<std::string> export_token;
  std::optional<Ticks> watermark;         // max modifiedOn stored, capped by the server's clock
  std::optional<Ticks> complete_through;  // every change before it is stored: the resume point
  std::optional<Ticks> list_cursor;
  std::optional<Ticks> list_pass_start;
  std::optional<std::string> list_pass_field;  // "created" while a first list pass is under way
  std::optional<Ticks> reconciled_at;     // when a complete listing last checked for hard deletes
  std::optional<std::string> backfill;    // a backfill under way (run --since): its window and progress
};

/// Ordering points of a page committed on one of several connections (see the export walk):
/// wait for the previous page's merge before merging (row locks are taken in page order, so no
/// two pages can wait for each other), say when this page's merge is done, and wait for the
/// previous page's COMMIT before writing the state (a token never commits ahead of the rows it
/// covers).
struct CommitGates {
  std::function<void()> before_merge, after_merge, before_state;
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

/// What the API counted for a run, written with its outcome.
struct RunCounters {
  std::int64_t requests = 0, throttled = 0, retries = 0;
};

/// A parent row of a per-parent job, as its table holds it: its key and when it was written
/// (microseconds since the epoch, the database's clock).
struct ParentRow {
  std::string id;
  std::int64_t synced_micros = 0;
};

/// The database's clock for a per-parent walk: now, and the start of the oldest transaction
/// still writing (a parent it writes may commit with an earlier synced_at than rows seen now).
struct DatabaseClock {
  Ticks now = 0;
  std::optional<Ticks> oldest_writer_start;
};

class JobStorage {
 public:
  virtual ~JobStorage() = default;

  /// Takes the job's lock for this run; false when another run holds it.
  virtual bool try_lock() = 0;
  /// At the end of a run, whatever ended it: the run's session state (temporary tables) goes
  /// and the job's lock is released. Never throws.
  virtual void end_run() noexcept = 0;
  /// The job's state (a fresh one is created on first use).
  virtual JobState load_state() = 0;
  /// After load_state: why the job's tables cannot be trusted to hold what the state says, or
  /// nullopt.
  virtual std::optional<std::string> tables_problem(const JobState& state) = 0;
  /// Marks runs a crashed process left running as interrupted; opens a run record.
  virtual std::int64_t begin_run(SyncMode mode) = 0;
  /// One transaction: the page's rows (an older version never replaces a newer one), its
  /// quarantined records, `state` (if any) and the page's counts in the run.
  virtual MergeCounts commit_page(const ParsedPage& page, const JobState* state, std::int64_t run_id,
                                  const std::string& where = {}, const CommitGates* gates = nullptr) = 0;
  /// A complete listing starts: each committed page's keys are remembered until end_listing().
  virtual void begin_listing() = 0;
  virtual void end_listing() = 0;
  /// False when the remembered keys were lost (the connection was re-opened meanwhile).
  virtual bool listing_intact() const = 0;
  /// The tenant's live rows (of one parent, for a per-parent job) the listing did not return.
  virtual std::vector<std::string> unseen_rows(const std::optional<std::string>& parent) = 0;
  /// Sets deleted_at on `ids` and writes `state`, in one transaction; returns how many it marked.
  virtual std::int64_t mark_deleted(const std::vector<std::string>& ids, const JobState* state,
                                    std::int64_t run_id) = 0;
  /// Refreshes the planner's statistics of the job's tables when they describe a much smaller table.
  virtual void refresh_statistics_if_stale() = 0;
  /// Closes the run record with its outcome ('succeeded', 'failed', 'interrupted',
  /// 'not_permitted') and the job's standing success or error.
  virtual void finish_run(std::int64_t run_id, std::string_view outcome, const std::string& error,
                          const RunCounters& counters) = 0;

  /// Whether the connection under the store works.
  virtual bool connected() const = 0;
  /// Re-opens the connection (throws PgError(db_unavailable) when it cannot) and takes the job's
  /// lock again: false when another run took it meanwhile.
  virtual bool reconnect() = 0;

  /// Per-parent jobs: the database's clock, and the parents written after `since` (all when
  /// empty), in (synced_at, id) order after `after`, at most `limit`; parents marked deleted are
  /// not visited, inactive ones are (ServiceTitan keeps serving what is under them).
  virtual DatabaseClock database_clock() = 0;
  virtual std::vector<ParentRow> changed_parents(const std::optional<Ticks>& since,
                                                 const std::optional<ParentRow>& after, int limit) = 0;
  /// Per-parent jobs: the keys of live rows whose parent row is marked deleted (a parent the
  /// walk no longer visits: its rows went with it at the source).
  virtual std::vector<std::string> rows_of_deleted_parents() = 0;

  /// A store on a connection of its own for the same run (a second commit lane): it commits
  /// pages but holds no lock, and checks at each page that this store's run still holds it.
  virtual std::unique_ptr<JobStorage> open_helper() = 0;
};

}  // namespace stsync
