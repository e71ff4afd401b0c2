// One job for one tenant: walk the API (export feed, list windows, complete listings), committing
// each page with the job's state in one transaction, through the JobStorage seam.
#pragma once
#include <cstdint>
#include <array>
#include <atomic>
#include <functional>
#include <optional>
#include <string>

#include "config.h"
#include "errors.h"
#include "job_spec.h"
#include "retry.h"
#include "st_client.h"
#include "job_storage.h"
#include "log.h"

namespace stsync {

/// Why `spec` cannot be backfilled (with `until` given or not); empty when it can.
std::string why_no_backfill(const JobSpec& spec, SyncMode mode, bool until);

struct RunOptions {
  std::vector<std::string> jobs;        // empty: every enabled job
  std::optional<std::int64_t> tenant;   // empty: every configured tenant
  bool full_refresh = false;            // ignore saved watermarks (rows are upserted, never dropped)
  std::optional<SyncMode> mode;         // override every selected job's mode for this run
  bool reconcile = false;               // sweep for hard deletes now, due or not (jobs with a list endpoint)
  bool due = false;                     // only jobs whose cadence (`every`) has passed since their last success
  double max_run_seconds = 0;           // a job stops after the page in flight past this (0: no limit)
  // A backfill (run --since [--until]): re-read [since, until) and merge it through the guard,
  // leaving the job's token and watermark as they are; resumable.
  std::optional<Ticks> since, until;
  /// Called after each committed page (from the job's thread): tenant, job, pages, rows so far.
  std::function<void(std::int64_t, const std::string&, std::int64_t, std::int64_t)> on_page;
};

// not_permitted: the endpoint answered 403 for a job the user did not name (the app lacks the
// scope); recorded and logged once, not a failure.
enum class JobOutcome { succeeded, failed, skipped, interrupted, not_permitted };

struct JobResult {
  std::int64_t tenant = 0;
  std::string job;
  JobOutcome outcome = JobOutcome::succeeded;
  std::optional<ErrorKind> error_kind;
  std::string error;
  std::int64_t pages = 0;
  std::int64_t deleted = 0;  // rows marked deleted_at by this run's sweeps
  std::int64_t requests = 0;  // API requests sent (every attempt)
  MergeCounts counts;
};

/// A run that found the job's lock held: logged (job_skipped) and returned as skipped.
JobResult skipped_run(JobResult result);

/// Records the outcome of a run that did not succeed, whatever the kind of job (`Store`: a
/// JobStorage or a ReportStore). When the connection broke (PostgreSQL went away), one attempt
/// to reconnect first, so that the next run does not call it "interrupted: the process ended".
/// Never throws: a failure to record is logged naming `who`.
template <typename Store>
void record_unsuccessful_run(Store& store, std::int64_t run_id, std::string_view outcome, const std::string& error,
                             const RunCounters& counters, const std::string& who) {
  if (run_id == 0) return;
  if (!store.connected()) {
    try {
      store.reconnect();
    } catch (const Error&) {
    }
  }
  if (!store.connected()) return;
  try {
    store.finish_run(run_id, outcome, error, counters);
  } catch (const Error& e) {
    log::warn("{}: could not record the outcome: {}", who, e.what());
  }
}

class JobRun {
 public:
  JobRun(const Settings& settings, const JobSpec& spec, TenantSession& session, HttpTransport& transport,
         JobStorage& store, Clock& clock, const RunOptions& options);
  /// Runs the job to the end of the feed. Never throws for job failures: they are in the result
  /// (and logged once, here). PgError(db_unavailable) from the lock or state read propagates.
  JobResult run();

 private:
  /// The export feed; `state` is left as the last page committed it.
  void walk_export(JobStorage& store, JobState& state, std::int64_t run_id);
  /// List walks by windows: createdOn then modifiedOn (list mode), or the creation field only
  /// (created mode, append-only records).
  void walk_list(JobStorage& store, JobState& state, std::int64_t run_id);
  /// Reads a complete listing (of one parent) and marks the rows it no longer returns deleted,
  /// once a second look (ids=…, or a second listing) confirms they are gone.
  void sweep(JobStorage& store, JobState& state, std::int64_t run_id, const std::optional<std::string>& parent);
  /// Stores every page of the listing; returns how many records it had.
  std::int64_t read_listing(JobStorage& store, JobState& state, std::int64_t run_id,
                            const std::optional<std::string>& parent);
  /// The candidates the list still returns when asked for them by id (those rows are stored).
  std::vector<std::string> confirm_gone(JobStorage& store, JobState& state, std::int64_t run_id,
                                        std::vector<std::string> candidates);
  /// A per-parent job: sweeps the listing of every parent row changed since the last run (all
  /// parents on the first run and when a reconcile is due).
  void walk_parents(JobStorage& store, JobState& state, std::int64_t run_id);
  /// A backfill of [options_.since, options_.until): list windows, or the export from a date.
  void walk_backfill(JobStorage& store, JobState& state, std::int64_t run_id);
  /// During a backfill, what a commit writes: the job's state as it was before, with the
  /// backfill's progress taken from the walk's own state.
  JobState state_to_write(const JobState& walking) const;
  /// A sweep for hard deletes is due at `now` (the clock reconciled_at was set by).
  bool reconcile_due(const JobState& state, Ticks now) const;
  /// Stores every row of [lo, hi) of `field` ("created" or "modified"), splitting windows until
  /// each fits in one response. `lo` empty: no lower bound. `after_window` updates the state
  /// that commits with each window's rows.
  /// Returns where the walk ended: `hi`, or earlier when the server's clock is behind ours.
  Ticks walk_windows(JobStorage& store, JobState& state, std::int64_t run_id, const std::string& field,
                    std::optional<Ticks> lo, Ticks hi);
  void walk_offset_pages(JobStorage& store, JobState& state, std::int64_t run_id, const std::string& window_query,
                         const std::string& field, Ticks lo, Ticks hi);
  /// Throws Error(bad_data) when page_ holds a row outside [lo, hi) of `field`.
  void check_window(const std::string& field, std::optional<Ticks> lo, Ticks hi, const std::string& where) const;
  /// Keeps the latest server clock (Date header) seen in this run.
  void note_server_time(const HttpResponse& response);
  void note_server_time(const std::optional<std::string>& date);
  /// GET + parse into `into` (errors name `where`); returns the response's Date header.
  std::optional<std::string> fetch_and_parse(const std::string& query, const std::string& where, ParsedPage& into);
  void parse_body(std::string& body, const std::string& where, ParsedPage& into);
  /// Raises state.watermark to the page's newest modifiedOn, capped by the server's clock.
  void raise_watermark(JobState& state, const std::string& where);
  void raise_watermark(JobState& state, const ParsedPage& page, const std::string& where);
  /// Commits `page` on `store`: retries conflicts, reconnects when the connection broke.
  /// Touches no member but the clock and the log: it runs on a commit lane's thread.
  MergeCounts commit_on(JobStorage& store, const ParsedPage& page, const JobState& state,
                        std::int64_t run_id, const std::string& where, const CommitGates* gates);
  /// Commits page_ with `state`; `where` names the page in logs and the quarantine table.
  void commit(JobStorage& store, const JobState& state, std::int64_t run_id, const std::string& where);
  void commit(JobStorage& store, const ParsedPage& page, const JobState& state, std::int64_t run_id,
              const std::string& where);
  std::string what(const std::string& page) const;
  RunCounters run_counters() const;
  /// Resets the marks of a state written under a wrong clock (ahead of this machine's clock by
  /// more than the tolerance), with a warning.
  void repair_future_state(JobState& state) const;
  void report_progress() const;
  /// Past --max-run-time: throws Error(interrupted) at a page boundary (everything before it is
  /// committed; the next run resumes there).
  void check_run_time(const std::string& where) const;
  double started_ = 0;  // steady seconds when the run began
  double last_commit_at_ = 0;  // steady seconds of the last page committed on this connection

  const Settings& settings_;
  const JobSpec& spec_;
  TenantSession& session_;
  JobStorage& store_;
  Clock& clock_;
  const RunOptions& options_;
  SyncMode mode_;
  RetryBudget budget_;
  ServiceTitanClient client_;
  PageParser parser_;
  // Export pages rotate through three buffers: one being fetched and parsed, up to two being
  // committed. List mode uses the first only (page_).
  std::array<ParsedPage, 3> pages_;
  ParsedPage& page_ = pages_[0];
  JobResult result_;
  std::optional<Ticks> server_now_;  // the newest Date header of this run
  size_t last_body_bytes_ = 0;       // JSON bytes of the last page parsed
  std::atomic<std::int64_t> updated_rows_{0};  // rows the commit lanes updated in this run
  std::optional<JobState> backfill_base_;  // set during a backfill: the state every commit writes
  std::string backfill_window_;            // "since|until" of the backfill under way
};

}  // namespace stsync
