// A job run: its outcome and the advice that goes with it, the commit of a page (with its
// reconnects and reruns), the server clock, the watermark. The walks are in export_walk.cc,
// list_walk.cc and listing_sweep.cc.
#include "job_run.h"

#include <fmt/format.h>

#include <algorithm>

#include "log.h"
#include "pg.h"

namespace stsync {

JobRun::JobRun(const Settings& settings, const JobSpec& spec, TenantSession& session, HttpTransport& transport,
               JobStorage& store, Clock& clock, const RunOptions& options)
    : settings_(settings),
      spec_(spec),
      session_(session),
      store_(store),
      clock_(clock),
      options_(options),
      mode_(options.mode.value_or(spec.mode)),
      budget_(settings.retry_budget_seconds),
      client_(settings, session, transport, clock, budget_),
      parser_(spec, settings.max_json_depth) {
  result_.tenant = session.tenant().id;
  result_.job = spec.name;
}

void JobRun::check_run_time(const std::string& where) const {
  if (options_.max_run_seconds <= 0 || clock_.monotonic() - started_ < options_.max_run_seconds) return;
  throw Error(ErrorKind::interrupted,
              fmt::format("{}: --max-run-time of {:.0f} s reached after this page; the next run resumes here", where,
                          options_.max_run_seconds));
}

void JobRun::repair_future_state(JobState& state) const {
  // A state written under a wrong clock (an API Date years ahead, before stsync refused such
  // Dates) would make list jobs read nothing for years while reporting success. The marks that
  // come from the API's clock must not be ahead of this machine's by more than the tolerance.
  const Ticks limit = now_ticks() + static_cast<Ticks>(settings_.max_clock_skew_seconds * kTicksPerSecond);
  auto future = [&](const std::optional<Ticks>& t) { return t && *t > limit; };
  std::vector<std::string> found;
  if (future(state.complete_through)) found.push_back("complete through " + format_timestamp(*state.complete_through, 0));
  if (future(state.reconciled_at)) found.push_back("reconciled at " + format_timestamp(*state.reconciled_at, 0));
  if (future(state.list_pass_start)) found.push_back("list pass start " + format_timestamp(*state.list_pass_start, 0));
  // A per-parent job's cursor is the database's clock, not the API's.
  if (spec_.parent.empty() && future(state.list_cursor))
    found.push_back("list cursor " + format_timestamp(*state.list_cursor, 0));
  if (future(state.watermark)) found.push_back("watermark " + format_timestamp(*state.watermark, 0));
  if (found.empty()) return;
  std::string list;
  for (const std::string& f : found) list += (list.empty() ? "" : ", ") + f;
  // Where the walk really stood is unknown: the list walk starts over (a first pass over
  // createdOn, merged through the guard: nothing is lost or duplicated); the export feed keeps
  // the server's token, which no clock wrote. The watermark only reports lag: capped at now.
  state.complete_through.reset();
  state.reconciled_at.reset();
  state.list_pass_start.reset();
  state.list_pass_field.reset();
  if (spec_.parent.empty()) state.list_cursor.reset();
  if (future(state.watermark)) state.watermark = now_ticks();
  log::warn("{}: the stored state is in the future ({}), written under a wrong clock; {}", what("state"), list,
            mode_ == SyncMode::export_feed ? "resuming from the export token, the marks reset"
                                           : "reading the resource again from the start (rows are merged, nothing is "
                                             "lost)");
}

RunCounters JobRun::run_counters() const {
  const auto& c = client_.counters();
  return {c.requests.load(), c.throttled.load(), c.retries.load()};
}

std::string JobRun::what(const std::string& page) const {
  return fmt::format("job {} tenant {} {}", spec_.name, session_.tenant().id, page);
}

JobResult skipped_run(JobResult result) {
  log::event(log::Level::info, "job_skipped", {}, "job {} tenant {}: skipped, another run holds it", result.job,
             result.tenant);
  result.outcome = JobOutcome::skipped;
  return result;
}

JobResult JobRun::run() {
  const log::JobContext context(spec_.name, session_.tenant().id);  // job and tenant as fields of JSON lines
  JobStorage& store = store_;
  if (!store.try_lock()) return skipped_run(result_);
  // Whatever ends the run (a result, an Error, any other exception): the job's temporary tables
  // are dropped and its lock released. The connection serves the next job: a session that kept
  // every job's ON COMMIT DELETE ROWS staging table would truncate all of them at every COMMIT.
  struct EndOfRun {
    JobStorage& store;
    ~EndOfRun() { store.end_run(); }
  } end_of_run{store};
  std::int64_t run_id = 0;
  started_ = clock_.monotonic();
  try {
    JobState state = store.load_state();
    run_id = store.begin_run(mode_);
    repair_future_state(state);
    if (!options_.full_refresh)
      if (std::optional<std::string> problem = store.tables_problem(state))
        throw Error(ErrorKind::db, fmt::format("job {} tenant {}: {}. Nothing was read. Run this job once with "
                                               "--full-refresh (stsync run --jobs {} --full-refresh): it reads "
                                               "everything again and merges it",
                                               spec_.name, session_.tenant().id, *problem, spec_.name));
    log::JobContext::set_page(1);
    log::event(log::Level::info, "job_started", {}, "job {} tenant {}: starting ({} mode{})", spec_.name,
               session_.tenant().id, mode_name(mode_), options_.full_refresh ? ", full refresh" : "");
    if (mode_ == SyncMode::export_feed && spec_.export_path.empty())
      throw Error(ErrorKind::config, what("") + "has no export endpoint: use --mode list, created or full");
    if (mode_ != SyncMode::export_feed && spec_.list_path.empty())
      throw Error(ErrorKind::config, what("") + "has no list endpoint: it can only be read by its export");
    if (options_.since) {
      walk_backfill(store, state, run_id);
    } else {
      switch (mode_) {
        case SyncMode::export_feed:
          walk_export(store, state, run_id);
          // The feed sees changes, not hard deletes: every reconcile_every, a complete listing of
          // the list endpoint (the same rows, merged through the guard) finds what it no longer has.
          // reconcile_every = 0 (a list that cannot list everything, e.g. one that requires ids):
          // never, not even with --reconcile.
          if (!spec_.list_path.empty() && spec_.reconcile_every_seconds > 0 &&
              reconcile_due(state, server_now_.value_or(now_ticks())))
            sweep(store, state, run_id, std::nullopt);
          break;
        case SyncMode::list_windows:
        case SyncMode::created_windows:
          walk_list(store, state, run_id);
          // A list walk sees changes, not hard deletes: a periodic sweep does.
          // (Timed by the server's clock, as reconciled_at is.)
          if (reconcile_due(state, server_now_.value_or(now_ticks()))) sweep(store, state, run_id, std::nullopt);
          break;
        case SyncMode::full_listing:
          if (spec_.parent.empty()) sweep(store, state, run_id, std::nullopt);
          else walk_parents(store, state, run_id);
          break;
      }
    }
    store.finish_run(run_id, "succeeded", "", run_counters());
    log::event(log::Level::info, "job_succeeded",
               {{"pages", result_.pages},
                {"inserted", result_.counts.inserted},
                {"updated", result_.counts.updated},
                {"unchanged", result_.counts.unchanged},
                {"marked_deleted", result_.deleted},
                {"requests", static_cast<std::int64_t>(client_.counters().requests.load())}},
               "job {} tenant {}: done, {} pages, {} inserted, {} updated, {} unchanged{}", spec_.name,
               session_.tenant().id, result_.pages, result_.counts.inserted, result_.counts.updated,
               result_.counts.unchanged,
               result_.deleted ? fmt::format(", {} marked deleted", result_.deleted) : std::string());
  } catch (const Error& e) {
    if (lacks_scope(e) && !spec_.named) {
      // The tenant's app was not granted this API's scope: every job is on by default, so this is
      // expected for some; recorded as such, not a failure. A job asked for by name still fails.
      result_.outcome = JobOutcome::not_permitted;
      result_.error = log::redact(e.what());
      result_.requests = client_.counters().requests.load();
      log::event(log::Level::warn, "job_not_permitted", {},
                "job {} tenant {}: not permitted (403): the tenant's app lacks the scope for {}; skipped. Grant "
                "the scope in ServiceTitan, or disable the job ([jobs.{}] enabled = false)",
                spec_.name, session_.tenant().id, spec_.mode == SyncMode::export_feed ? spec_.export_path : spec_.list_path,
                spec_.name);
      record_unsuccessful_run(store, run_id, "not_permitted", result_.error, run_counters(), what(""));
      return result_;
    }
    result_.outcome = e.kind() == ErrorKind::interrupted ? JobOutcome::interrupted : JobOutcome::failed;
    result_.error_kind = e.kind();
    result_.error = log::redact(e.what());
    // Every error names its job and tenant, also one raised outside a page (the state's read).
    if (result_.error.find(fmt::format("job {} tenant {}", spec_.name, session_.tenant().id)) == std::string::npos)
      result_.error = fmt::format("job {} tenant {}: {}", spec_.name, session_.tenant().id, result_.error);
    std::string advice;
    switch (e.kind()) {
      case ErrorKind::interrupted:
        advice = "; every page read so far is committed: the next run resumes from the last one";
        break;
      case ErrorKind::db_fault:
        advice = "; a condition of the database server, not of the data: fix it (space, memory, a long "
                 "lock); the next run resumes from the last committed page";
        break;
      case ErrorKind::db_conflict:
        advice = "; the next run resumes from the last committed page";
        break;
      case ErrorKind::bad_data:
        advice = "; committed pages and the watermark are kept: fix or report the record, then rerun";
        break;
      case ErrorKind::db_unavailable:
        advice = "; nothing past the last committed page was stored: rerun when PostgreSQL is back";
        break;
      case ErrorKind::network:
      case ErrorKind::http_transient:
        advice = "; the next run resumes from the last committed page";
        break;
      default: break;
    }
    const std::initializer_list<log::Count> so_far = {{"pages", result_.pages},
                                                       {"inserted", result_.counts.inserted},
                                                       {"updated", result_.counts.updated}};
    if (e.kind() == ErrorKind::interrupted)
      log::event(log::Level::warn, "job_interrupted", so_far, "{}{}", result_.error, advice);
    else
      log::event(log::Level::error, "job_failed", so_far, "{}{}", result_.error, advice);
    record_unsuccessful_run(store, run_id, e.kind() == ErrorKind::interrupted ? "interrupted" : "failed",
                            result_.error, run_counters(), what(""));
  }
  result_.requests = client_.counters().requests.load();
  return result_;
}

void JobRun::commit(JobStorage& store, const JobState& state, std::int64_t run_id,
                    const std::string& where) {
  commit(store, page_, state, run_id, where);
}

void JobRun::commit(JobStorage& store, const ParsedPage& page, const JobState& state, std::int64_t run_id,
                    const std::string& where) {
  // Only jobs that update rows delete child rows, the one statement whose plan stale statistics
  // could spoil; a first load (all inserts) never pays for an ANALYZE.
  if (result_.counts.updated > 0 && result_.pages % 4 == 0) store.refresh_statistics_if_stale();
  result_.counts += commit_on(store, page, state, run_id, where, nullptr);
  last_commit_at_ = clock_.monotonic();
  ++result_.pages;
  report_progress();
}

void JobRun::report_progress() const {
  log::JobContext::set_page(result_.pages + 1);  // the next page's lines
  if (options_.on_page)
    options_.on_page(session_.tenant().id, spec_.name, result_.pages, result_.counts.inserted + result_.counts.updated +
                                                                           result_.counts.unchanged);
}

MergeCounts JobRun::commit_on(JobStorage& store, const ParsedPage& page, const JobState& state,
                              std::int64_t run_id, const std::string& where, const CommitGates* gates) {
  for (const QuarantinedRecord& q : page.quarantined)
    log::event(log::Level::warn, "record_quarantined", {}, "{}: {}; quarantined (see the quarantine table), the job goes on",
               where, q.error);
  // PostgreSQL restarted or the connection broke: the page's transaction is lost, but the page
  // is still in memory. Reconnect (bounded), take the job's lock again and commit it again.
  const JobState written = state_to_write(state);
  for (int attempt = 1;; ++attempt) {
    try {
      return store.commit_page(page, &written, run_id, where, gates);
    } catch (const PgError& e) {
      // Whether to try again is Error::retryable()'s to say; how often and how is this loop's: a
      // conflict reruns the page at once (5 times), a lost connection is re-opened first.
      const bool conflict = e.kind() == ErrorKind::db_conflict;
      // Every database error names its job, tenant and page, with PostgreSQL's own words.
      if (!e.retryable() || attempt > (conflict ? 5 : settings_.db_reconnect_attempts))
        throw PgError(e.kind(), fmt::format("{}: {}", where, e.what()), e.sqlstate(), e.context());
      if (conflict) {
        // A serialization failure or deadlock rolled the page back: run the same page again.
        log::warn("{}: {}; committing the page again ({} of 5)", where, e.what(), attempt);
        clock_.sleep(0.05 * attempt);
        continue;
      }
      const double wait = std::min(30.0, 0.5 * (1 << std::min(attempt - 1, 6)));
      log::warn("{}: {}; reconnecting in {:.1f} s ({} of {})", where, e.what(), wait, attempt,
                settings_.db_reconnect_attempts);
      clock_.sleep(wait);
      bool locked = false;
      try {
        locked = store.reconnect();
      } catch (const PgError& again) {
        log::warn("{}: {}", what("reconnect"), again.what());
        // PostgreSQL stays away: the refusal itself is the error, not a call on a dead handle.
        if (attempt >= settings_.db_reconnect_attempts)
          throw PgError(again.kind(),
                        fmt::format("{}: {} (gave up after {} reconnect attempts)", where, again.what(), attempt),
                        again.sqlstate(), again.context());
        continue;
      }
      if (!locked)
        throw Error(ErrorKind::db, what("commit") + ": another run took this job while the connection was down; "
                                                    "stopping (it carries on from the committed state)");
    }
  }
}

void JobRun::note_server_time(const HttpResponse& response) { note_server_time(response.date); }

void JobRun::note_server_time(const std::optional<std::string>& date) {
  if (date)
    if (auto t = parse_http_date(*date))
      if (!server_now_ || *t > *server_now_) server_now_ = t;
}

std::optional<std::string> JobRun::fetch_and_parse(const std::string& query, const std::string& where,
                                                    ParsedPage& into) {
  HttpResponse response = client_.get(query, where);
  parse_body(response.body, where, into);
  return response.date;  // the body is freed here: only the COPY rows live on
}

void JobRun::parse_body(std::string& body, const std::string& where, ParsedPage& into) {
  last_body_bytes_ = body.size();
  try {
    parser_.parse(body, session_.tenant().id, into);
  } catch (const Error& e) {
    throw Error(e.kind(), fmt::format("{}: {}", where, e.what()));
  }
}

void JobRun::raise_watermark(JobState& state, const std::string& where) { raise_watermark(state, page_, where); }

void JobRun::raise_watermark(JobState& state, const ParsedPage& page, const std::string& where) {
  // The watermark is the newest modifiedOn stored, but never past the server's clock: one
  // future-dated record must not make the job look fresher than it is.
  if (!page.max_modified) return;
  Ticks newest = *page.max_modified;
  const Ticks clock = server_now_.value_or(now_ticks());
  if (newest > clock + kTicksPerSecond * 60) {
    log::warn("{}: a record's modifiedOn {} is after the server's clock {}; the watermark stops at the clock",
              where, format_timestamp(newest, 7), format_timestamp(clock, 7));
    newest = clock;
  }
  if (!state.watermark || newest > *state.watermark) state.watermark = newest;
}

}  // namespace stsync
