#include "sync.h"

#include <fmt/format.h>

#include <future>
#include <unordered_set>

#include "log.h"
#include "pg.h"

namespace stsync {
namespace {

constexpr Ticks kMinWindow = kTicksPerMicro;
// The largest page (JSON bytes) that is parsed on the helper thread while the previous page
// commits; larger pages are parsed after it, so at most one page's COPY rows are in memory.
constexpr size_t kOverlapParseBytes = 6 << 20;  // the filters' useful resolution
constexpr Ticks kEpochFloor = 946684800LL * kTicksPerSecond;  // 2000-01-01: splits unbounded windows

}  // namespace

JobRunner::JobRunner(const Settings& settings, const JobSpec& spec, TenantSession& session,
                     HttpTransport& transport, JobStorage& store, Clock& clock,
                     const RunOptions& options)
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

void JobRunner::check_run_time(const std::string& where) const {
  if (options_.max_run_seconds <= 0 || clock_.monotonic() - started_ < options_.max_run_seconds) return;
  throw Error(ErrorKind::interrupted,
              fmt::format("{}: --max-run-time of {:.0f} s reached after this page; the next run resumes here", where,
                          options_.max_run_seconds));
}

void JobRunner::repair_future_state(JobState& state) const {
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

RunCounters JobRunner::run_counters() const {
  const auto& c = client_.counters();
  return {c.requests.load(), c.throttled.load(), c.retries.load()};
}

std::string JobRunner::what(const std::string& page) const {
  return fmt::format("job {} tenant {} {}", spec_.name, session_.tenant().id, page);
}

JobResult JobRunner::run() {
  const log::JobContext context(spec_.name, session_.tenant().id);  // job and tenant as fields of JSON lines
  JobStorage& store = store_;
  if (!store.try_lock()) {
    log::event(log::Level::info, "job_skipped", {}, "job {} tenant {}: skipped, another run holds it", spec_.name,
               session_.tenant().id);
    result_.outcome = JobOutcome::skipped;
    return result_;
  }
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
    switch (mode_) {
      case SyncMode::export_feed:
        walk_export(store, std::move(state), run_id);
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
    if (e.kind() == ErrorKind::http_permanent && e.http_status() == 403 && !spec_.named) {
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
      if (run_id != 0 && store.connected()) {
        try {
          store.finish_run(run_id, "not_permitted", result_.error, run_counters());
        } catch (const Error&) {
        }
      }
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
    if (run_id != 0 && !store.connected()) {
      // The connection broke (PostgreSQL went away): one attempt to record the failure as such,
      // instead of the next run calling it "interrupted: the process ended".
      try {
        store.reconnect();
      } catch (const Error&) {
      }
    }
    if (run_id != 0 && store.connected()) {
      try {
        store.finish_run(run_id, e.kind() == ErrorKind::interrupted ? "interrupted" : "failed", result_.error,
                         run_counters());
      } catch (const Error& e2) {
        log::warn("job {} tenant {}: could not record the failure: {}", spec_.name,
                  session_.tenant().id, e2.what());
      }
    }
  }
  result_.requests = client_.counters().requests.load();
  return result_;
}

void JobRunner::commit(JobStorage& store, const JobState& state, std::int64_t run_id,
                       const std::string& where) {
  commit(store, page_, state, run_id, where);
}

void JobRunner::commit(JobStorage& store, const ParsedPage& page, const JobState& state, std::int64_t run_id,
                       const std::string& where) {
  // Only jobs that update rows delete child rows, the one statement whose plan stale statistics
  // could spoil; a first load (all inserts) never pays for an ANALYZE.
  if (result_.counts.updated > 0 && result_.pages % 4 == 0) store.refresh_statistics_if_stale();
  result_.counts += commit_on(store, page, state, run_id, where, nullptr);
  ++result_.pages;
  report_progress();
}

void JobRunner::report_progress() const {
  log::JobContext::set_page(result_.pages + 1);  // the next page's lines
  if (options_.on_page)
    options_.on_page(session_.tenant().id, spec_.name, result_.pages, result_.counts.inserted + result_.counts.updated +
                                                                           result_.counts.unchanged);
}

MergeCounts JobRunner::commit_on(JobStorage& store, const ParsedPage& page, const JobState& state,
                                 std::int64_t run_id, const std::string& where, const CommitGates* gates) {
  for (const QuarantinedRecord& q : page.quarantined)
    log::event(log::Level::warn, "record_quarantined", {}, "{}: {}; quarantined (see the quarantine table), the job goes on",
               where, q.error);
  // PostgreSQL restarted or the connection broke: the page's transaction is lost, but the page
  // is still in memory. Reconnect (bounded), take the job's lock again and commit it again.
  for (int attempt = 1;; ++attempt) {
    try {
      return store.commit_page(page, &state, run_id, where, gates);
    } catch (const PgError& e) {
      if (e.kind() == ErrorKind::db_conflict && attempt <= 5) {
        // A serialization failure or deadlock rolled the page back: run the same page again.
        log::warn("{}: {}; committing the page again ({} of 5)", where, e.what(), attempt);
        clock_.sleep(0.05 * attempt);
        continue;
      }
      // Every database error names its job, tenant and page, with PostgreSQL's own words.
      if (e.kind() != ErrorKind::db_unavailable || attempt > settings_.db_reconnect_attempts)
        throw PgError(e.kind(), fmt::format("{}: {}", where, e.what()), e.sqlstate(), e.context());
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

void JobRunner::note_server_time(const HttpResponse& response) { note_server_time(response.date); }

void JobRunner::note_server_time(const std::optional<std::string>& date) {
  if (date)
    if (auto t = parse_http_date(*date))
      if (!server_now_ || *t > *server_now_) server_now_ = t;
}

std::optional<std::string> JobRunner::fetch_and_parse(const std::string& query, const std::string& where,
                                                       ParsedPage& into) {
  HttpResponse response = client_.get(query, where);
  parse_body(response.body, where, into);
  return response.date;  // the body is freed here: only the COPY rows live on
}

void JobRunner::parse_body(std::string& body, const std::string& where, ParsedPage& into) {
  last_body_bytes_ = body.size();
  try {
    parser_.parse(body, session_.tenant().id, into);
  } catch (const Error& e) {
    throw Error(e.kind(), fmt::format("{}: {}", where, e.what()));
  }
}

void JobRunner::raise_watermark(JobState& state, const std::string& where) { raise_watermark(state, page_, where); }

void JobRunner::raise_watermark(JobState& state, const ParsedPage& page, const std::string& where) {
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

void JobRunner::walk_export(JobStorage& store, JobState state, std::int64_t run_id) {
  const std::int64_t tenant = session_.tenant().id;
  const std::string base = tenant_path(spec_.export_path, tenant);
  // A date restarts the feed at complete_through − overlap: everything changed before
  // complete_through was stored by a walk that reached the feed's end. Never the watermark,
  // which may come from the middle of a walk over a feed that is only "usually" ordered.
  auto date_fallback = [&]() -> std::optional<std::string> {
    if (!state.complete_through || options_.full_refresh) return std::nullopt;
    return format_timestamp(*state.complete_through - spec_.overlap_seconds * kTicksPerSecond, 7);
  };
  std::optional<std::string> from;
  bool from_token = false;
  if (options_.full_refresh) {
    state.export_token.reset();
  } else if (state.export_token) {
    from = state.export_token;
    from_token = true;
  } else {
    from = date_fallback();
  }
  int token_retries = 0;
  bool date_fallback_used = false;
  // Every token this walk followed: a feed whose continueFrom goes back to any of them cycles.
  std::unordered_set<std::string> tokens_seen;
  if (from && from_token) tokens_seen.insert(*from);
  // A walk bound far above any tenant's size (export pages hold up to 5,000 rows): 100,000 pages.
  const int max_pages = settings_.max_export_pages;
  auto query_for = [&](const std::optional<std::string>& f) {
    std::string q = base + "?includeRecentChanges=" + (spec_.include_recent_changes ? "true" : "false");
    if (!spec_.export_filter.empty()) q += "&" + spec_.export_filter;
    if (f) q += "&from=" + url_encode(*f);
    return q;
  };
  auto where_for = [&](int page_no) {
    return what(fmt::format("export page {}{}", page_no,
                            from_token ? " (from token)" : from ? " (from " + *from + ")" : ""));
  };
  // The next page is fetched and parsed on a helper thread while this one commits: HTTP, gzip,
  // simdjson and PostgreSQL work at the same time. Only the helper thread touches the client
  // (its handle, retry budget) and the parser meanwhile; the session it shares with other
  // workers is thread-safe. Pages above kOverlapParseBytes of JSON are only fetched meanwhile and
  // parsed after the commit, so that one page's rows are in memory at a time.
  //
  // Pages are committed on two connections when run.page_connections = 2 (and pages are not
  // that large): page k on connection k % 2, so that one page's COPY (PostgreSQL parsing jsonb)
  // runs while the other's merge and COMMIT do. CommitGates keep the order that matters: merges
  // in page order (row locks: no two pages can wait for each other) and each page's state after
  // the previous page's COMMIT (a token never commits ahead of the rows it covers; rows may
  // commit ahead of the token, which the guard makes harmless).
  std::unique_ptr<JobStorage> second_store;
  std::future<MergeCounts> lane[2];
  int lane_buffer[2] = {-1, -1};
  std::shared_future<void> prev_merged, prev_committed;
  auto finish_lane = [&](int l) {
    if (!lane[l].valid()) return;
    lane_buffer[l] = -1;
    result_.counts += lane[l].get();
    ++result_.pages;
    report_progress();
  };
  // Waits for the pages in flight, the older lane first, so that the first failure is the one
  // reported.
  auto drain = [&](int newest_lane) {
    std::exception_ptr first;
    for (int l : {1 - newest_lane, newest_lane}) {
      try {
        finish_lane(l);
      } catch (...) {
        if (!first) first = std::current_exception();
      }
    }
    if (first) std::rethrow_exception(first);
  };
  std::future<std::optional<std::string>> prefetch;
  std::future<HttpResponse> prefetch_body;
  int cur = 0, next_buffer = -1;
  int last_lane = 0;
  try {
    for (int page_no = 1;; ++page_no) {
      const std::string where = where_for(page_no);
      std::optional<std::string> date;
      try {
        if (prefetch.valid()) {
          date = prefetch.get();
          cur = next_buffer;
        } else if (prefetch_body.valid()) {
          HttpResponse response = prefetch_body.get();
          date = response.date;
          parse_body(response.body, where, pages_[static_cast<size_t>(cur)]);
        } else {
          date = fetch_and_parse(query_for(from), where, pages_[static_cast<size_t>(cur)]);
        }
      } catch (const Error& e) {
        const bool rejected = from_token && e.kind() == ErrorKind::http_permanent &&
                              (e.http_status() == 400 || e.http_status() == 404 || e.http_status() == 410);
        if (rejected && token_retries == 0 && state.export_token) {
          // First the last committed token once more (a rejection may be passing), then the date.
          ++token_retries;
          from = state.export_token;
          tokens_seen = {*from};  // the walk restarts there: tokens met again are not a cycle
          log::warn("{}: the continueFrom token was rejected ({}); trying the last committed token again", where,
                    e.what());
          --page_no;
          continue;
        }
        if (rejected && !date_fallback_used) {
          // Rows re-read from there are merged idempotently: nothing is lost or duplicated.
          date_fallback_used = true;
          tokens_seen.clear();
          from = date_fallback();
          from_token = false;
          log::warn("{}: the continueFrom token was rejected again ({}); restarting from {}", where, e.what(),
                    from ? *from + " (complete through − overlap)" : "the beginning of the feed");
          --page_no;
          continue;
        }
        throw;
      }
      ParsedPage& page = pages_[static_cast<size_t>(cur)];
      note_server_time(date);
      if (page.nul_replaced > 0)
        log::warn("{}: {} value(s) held NUL characters, stored as U+FFFD", where, page.nul_replaced);
      if (page.control_escaped > 0)
        log::warn("{}: {} raw control character(s) inside strings, stored escaped (the same value)", where,
                  page.control_escaped);
      if (page.has_more && !page.continue_from)
        throw Error(ErrorKind::bad_data, fmt::format("{}: hasMore is true but continueFrom is missing", where));
      const bool same_token = page.has_more && from_token && from && *from == *page.continue_from;
      if (page.has_more && !same_token && !tokens_seen.insert(*page.continue_from).second) {
        // A token this walk already followed: the feed goes back (a cycle of two or more pages)
        // and would be walked forever. Nothing of this page is stored; the state stays at the
        // last committed page.
        drain(last_lane);
        throw Error(ErrorKind::bad_data,
                    fmt::format("{}: the feed's continueFrom goes back to a token this walk already followed "
                                "(after {} pages); stopping instead of looping. The stored state stays at the last "
                                "good page; if it repeats, run this job with --full-refresh or report the feed",
                                where, page_no - 1));
      }
      if (page.has_more && page_no > max_pages) {
        drain(last_lane);
        throw Error(ErrorKind::bad_data,
                    fmt::format("{}: the feed still has more after {} pages ({} rows), far more than any "
                                "ServiceTitan tenant holds; stopping instead of walking forever (the state stays "
                                "at the last good page)",
                                where, page_no - 1, result_.counts.inserted + result_.counts.updated +
                                                        result_.counts.unchanged));
      }
      if (same_token && page.records == 0)
        throw Error(ErrorKind::bad_data, fmt::format("{}: the feed returned the same token and no rows; "
                                                     "stopping instead of looping",
                                                     where));
      if (page.continue_from) state.export_token = page.continue_from;
      raise_watermark(state, page, where);
      const bool has_more = page.has_more && !same_token;
      if (!page.has_more && state.watermark) {
        // The end of the feed: every change up to the newest one stored is stored.
        const Ticks through = std::min(*state.watermark, server_now_.value_or(now_ticks()));
        if (!state.complete_through || through > *state.complete_through) state.complete_through = through;
      }
      const bool large = last_body_bytes_ > kOverlapParseBytes;
      const bool two_lanes = !large && settings_.page_connections >= 2 && (page_no > 1 || has_more);
      if (!two_lanes) {
        // One connection (and, for large pages, one page of rows): whatever was in flight first.
        drain(last_lane);
        if (large && cur != 0) {
          std::swap(pages_[0], pages_[static_cast<size_t>(cur)]);
          cur = 0;
        }
      }
      ParsedPage& committing = pages_[static_cast<size_t>(cur)];
      const int l = two_lanes ? page_no % 2 : 0;
      finish_lane(l);  // page_no − 2: its buffer is free again
      if (has_more) {
        from = committing.continue_from;
        from_token = true;
        if (!large) {
          next_buffer = 0;
          while (next_buffer == cur || next_buffer == lane_buffer[0] || next_buffer == lane_buffer[1]) ++next_buffer;
          prefetch = std::async(std::launch::async, [this, query = query_for(from), next = where_for(page_no + 1),
                                                     buffer = next_buffer] {
            return fetch_and_parse(query, next, pages_[static_cast<size_t>(buffer)]);
          });
        } else {
          pages_[1] = ParsedPage{};  // their buffers are not needed while pages are this large
          pages_[2] = ParsedPage{};
          prefetch_body = std::async(std::launch::async, [this, query = query_for(from), next = where_for(page_no + 1)] {
            return client_.get(query, next);
          });
        }
      }
      if (!two_lanes) {
        commit(store, committing, state, run_id, where);
        prev_merged = prev_committed = std::shared_future<void>();
      } else {
        if (l == 1 && !second_store) second_store = store.open_helper();
        auto merged = std::make_shared<std::promise<void>>();
        auto committed = std::make_shared<std::promise<void>>();
        std::shared_future<void> my_merged = merged->get_future().share();
        std::shared_future<void> my_committed = committed->get_future().share();
        JobStorage& lane_store = l == 0 ? store : *second_store;
        lane_buffer[l] = cur;
        lane[l] = std::async(std::launch::async, [this, &lane_store, &committing, state, run_id, where,
                                                  merged, committed, after = prev_merged,
                                                  after_commit = prev_committed,
                                                  check_statistics = l == 0 && page_no % 8 == 0] {
          // Only jobs that update rows delete child rows (see commit()); the lock holder's lane checks.
          if (check_statistics && updated_rows_.load() > 0) lane_store.refresh_statistics_if_stale();
          bool merge_said = false;
          CommitGates gates;
          gates.before_merge = [&] {
            if (after.valid()) after.get();
          };
          gates.after_merge = [&] {
            if (!merge_said) merged->set_value();
            merge_said = true;
          };
          gates.before_state = [&] {
            if (after_commit.valid()) after_commit.get();
          };
          try {
            MergeCounts counts = commit_on(lane_store, committing, state, run_id, where, &gates);
            updated_rows_ += counts.updated;
            if (!merge_said) merged->set_value();
            committed->set_value();
            return counts;
          } catch (...) {
            if (!merge_said) merged->set_exception(std::current_exception());
            committed->set_exception(std::current_exception());
            throw;
          }
        });
        prev_merged = my_merged;
        prev_committed = my_committed;
        last_lane = l;
      }
      log::event(log::Level::debug, "page_committed", {{"records", committing.records}}, "{}: {} records, hasMore={}",
                 where, committing.records, committing.has_more);
      if (same_token) {
        drain(last_lane);
        throw Error(ErrorKind::bad_data,
                    fmt::format("{}: hasMore is true but continueFrom is the token just sent; the page's {} rows are "
                                "stored, stopping instead of looping (the next run tries again)",
                                where, committing.records));
      }
      if (!has_more) break;
      check_run_time(where);
    }
    drain(last_lane);
  } catch (...) {
    // Whatever failed, the pages in flight finish (commit or roll back) before the run's record
    // is written on this connection; their own errors come second.
    try {
      drain(last_lane);
    } catch (...) {
    }
    throw;
  }
}

void JobRunner::walk_list(JobStorage& store, JobState& state, std::int64_t run_id) {
  // Windows end in the server's past: rows change at server time, and a window that ends after
  // the server's now may miss rows modified after we read it but stamped before its end. The
  // server's clock as the tenant's responses so far tell it (the token's, at least) proposes the
  // end; walk_windows checks it against each response's Date header (no extra request: a run
  // that finds nothing costs one request).
  client_.access_token(false);  // the token's response tells the server's clock, if nothing did yet
  const Ticks end = session_.server_now().value_or(now_ticks()) - settings_.list_safety_seconds * kTicksPerSecond;
  const bool created_only = mode_ == SyncMode::created_windows;

  // Only a walk that reached the end of a feed (complete_through) skips the createdOn pass: a
  // watermark from a partial export says nothing about the rows not yet read. An append-only job
  // walks its creation field on every run, from complete_through − overlap.
  if (options_.full_refresh || (!state.complete_through && !state.list_pass_field) ||
      (created_only && !state.list_pass_field)) {
    state.list_pass_field = "created";
    state.list_pass_start = end;
    state.list_cursor.reset();
    if (created_only && state.complete_through && !options_.full_refresh)
      state.list_cursor = *state.complete_through - spec_.overlap_seconds * kTicksPerSecond;
  }
  if (state.list_pass_field == "created") {
    // First pass: windows over createdOn, which never changes, so no row can move between
    // windows while we read (rows without modifiedOn are only found this way). Rows changed
    // meanwhile carry modifiedOn ≥ the pass start and are read by the modifiedOn pass.
    Ticks pass_end = state.list_pass_start.value_or(end);
    pass_end = std::min(pass_end, walk_windows(store, state, run_id, "created", state.list_cursor, pass_end));
    state.list_pass_field.reset();
    state.list_cursor.reset();
    if (!state.complete_through || pass_end > *state.complete_through) state.complete_through = pass_end;
    // The first load read everything: the first sweep for deletes is due a period later.
    if (!state.reconciled_at) state.reconciled_at = pass_end;
    state.list_pass_start.reset();
    page_.clear();
    commit(store, state, run_id, what("list first pass end"));
  }
  if (created_only) return;
  const Ticks lo = *state.complete_through - spec_.overlap_seconds * kTicksPerSecond;
  if (lo < end) walk_windows(store, state, run_id, "modified", lo, end);
}

bool JobRunner::reconcile_due(const JobState& state, Ticks now) const {
  if (options_.reconcile) return true;
  if (spec_.reconcile_every_seconds <= 0 || !state.reconciled_at) return false;
  return now - *state.reconciled_at >= static_cast<Ticks>(spec_.reconcile_every_seconds) * kTicksPerSecond;
}

std::int64_t JobRunner::read_listing(JobStorage& store, JobState& state, std::int64_t run_id,
                                     const std::optional<std::string>& parent) {
  std::string path = tenant_path(spec_.list_path, session_.tenant().id);
  if (parent) {
    const size_t pos = path.find("{parent}");
    path.replace(pos, 8, url_encode(*parent));
  }
  std::string filters;
  if (!spec_.inactive_filter.empty()) filters += spec_.inactive_filter + "&";
  if (!spec_.list_sort.empty()) filters += "sort=" + url_encode(spec_.list_sort) + "&";
  std::int64_t position = 0;
  std::optional<std::int64_t> total;
  const std::string scope = parent ? fmt::format("parent {} ", *parent) : std::string();
  for (int page_no = 1;; ++page_no) {
    const std::string where = what(fmt::format("{}listing page {}", scope, page_no));
    std::string query = path;
    if (spec_.response == ResponseShape::paged)
      query += "?" + filters + fmt::format("page={}&pageSize={}&includeTotal=true", page_no, spec_.page_size);
    else if (!filters.empty())
      query += "?" + filters.substr(0, filters.size() - 1);
    parser_.set_listing(parent.value_or(""), position);
    try {
      fetch_and_parse(query, where, page_);
    } catch (const Error& e) {
      // A parent without the one object this endpoint serves (a job never booked): none.
      if (!(spec_.response == ResponseShape::object && parent && e.http_status() == 404)) throw;
      page_.clear();
    }
    if (page_.total_count) total = page_.total_count;
    position += page_.records + static_cast<std::int64_t>(page_.quarantined.size());
    commit(store, state, run_id, where);
    if (spec_.response != ResponseShape::paged || !page_.has_more) break;
    check_run_time(where);
    if (page_.records == 0)
      throw Error(ErrorKind::bad_data, fmt::format("{}: hasMore is true on an empty page; stopping instead of looping", where));
    const std::int64_t limit = total ? *total / spec_.page_size + 2 : 1000000;
    if (page_no >= limit)
      throw Error(ErrorKind::bad_data,
                  fmt::format("{}: hasMore is still true after {} pages of {} for {} rows: the server ignores the "
                              "page parameter; stopping instead of looping",
                              where, page_no, spec_.page_size, total.value_or(0)));
  }
  return position;
}

std::vector<std::string> JobRunner::confirm_gone(JobStorage& store, JobState& state, std::int64_t run_id,
                                                 std::vector<std::string> candidates) {
  // Offset pages over a set that changes while it is read can skip a row (a row before it was
  // deleted). Before a row is marked deleted, the API is asked for it by id.
  const std::string path = tenant_path(spec_.list_path, session_.tenant().id);
  std::unordered_set<std::string> present;
  for (size_t i = 0; i < candidates.size(); i += 50) {
    std::string ids;
    for (size_t j = i; j < std::min(candidates.size(), i + 50); ++j) ids += (j > i ? "," : "") + candidates[j];
    const std::string where = what(fmt::format("deleted-row check {}", i / 50 + 1));
    fetch_and_parse(path + "?" + (spec_.inactive_filter.empty() ? "" : spec_.inactive_filter + "&") +
                        "ids=" + url_encode(ids) + "&page=1&pageSize=50",
                    where, page_);
    present.insert(page_.ids.begin(), page_.ids.end());
    commit(store, state, run_id, where);  // they are current versions: store them
  }
  std::vector<std::string> gone;
  for (std::string& c : candidates)
    if (!present.count(c)) gone.push_back(std::move(c));
  return gone;
}

void JobRunner::sweep(JobStorage& store, JobState& state, std::int64_t run_id,
                      const std::optional<std::string>& parent) {
  store.begin_listing();
  try {
    read_listing(store, state, run_id, parent);
    std::vector<std::string> gone;
    if (store.listing_intact()) gone = store.unseen_rows(parent);
    if (!gone.empty()) {
      if (spec_.ids_param && !parent) {
        gone = confirm_gone(store, state, run_id, std::move(gone));
      } else {
        // No way to ask by id: a second listing; only rows both listings miss are gone.
        log::info("{}: {} row(s) not returned; listing again to confirm before marking them deleted",
                  what(parent ? "parent " + *parent : std::string("listing")), gone.size());
        read_listing(store, state, run_id, parent);
        gone = store.listing_intact() ? store.unseen_rows(parent) : std::vector<std::string>{};
      }
    }
    if (!store.listing_intact()) {
      log::warn("{}: the database connection was re-opened during the listing; deletions are checked next time",
                what("listing"));
      gone.clear();
    } else if (!parent) {
      state.reconciled_at = server_now_.value_or(now_ticks());
    }
    const std::int64_t marked = store.mark_deleted(gone, &state, run_id);
    if (marked > 0)
      log::info("{}: {} row(s) no longer returned by the API: deleted_at set", what(parent ? "parent " + *parent : std::string("listing")),
                marked);
    result_.deleted += marked;
    store.end_listing();
  } catch (...) {
    try {
      store.end_listing();
    } catch (...) {
    }
    throw;
  }
}

void JobRunner::walk_parents(JobStorage& store, JobState& state, std::int64_t run_id) {
  // The parents whose rows were written since this job last looked, by their synced_at (the
  // database's clock), in batches, oldest first. A change under a parent is assumed to touch the
  // parent (its modifiedOn: the sandbox does so); the periodic sweep over every parent (every
  // reconcile_every) catches what that misses.
  const DatabaseClock clock = store.database_clock();
  const Ticks db_now = clock.now;
  // A parent written by a transaction still open may commit with a synced_at before the rows seen
  // now: the cursor stays before the start of the oldest writer.
  const std::optional<Ticks> oldest_writer =
      clock.oldest_writer_start ? std::optional<Ticks>(*clock.oldest_writer_start - kTicksPerMicro) : std::nullopt;
  const bool all = options_.full_refresh || !state.list_cursor || reconcile_due(state, db_now);
  const std::optional<Ticks> since = all ? std::nullopt : state.list_cursor;
  std::optional<ParentRow> after;
  std::int64_t parents = 0;
  for (;;) {
    const std::vector<ParentRow> batch = store.changed_parents(since, after, 500);
    if (batch.empty()) break;
    for (const ParentRow& parent : batch) {
      // Every parent before this one is done: the next run starts after the last one done.
      Ticks synced = parent.synced_micros * kTicksPerMicro;
      if (oldest_writer) synced = std::min(synced, *oldest_writer);
      sweep(store, state, run_id, parent.id);
      ++parents;
      if (!state.list_cursor || synced > *state.list_cursor) state.list_cursor = synced;
      after = parent;
    }
  }
  if (all) state.reconciled_at = db_now;
  if (all || parents > 0) store.mark_deleted({}, &state, run_id);  // the state, with nothing to mark
  log::info("{}: {} parent(s) read", what(""), parents);
}

void JobRunner::check_window(const std::string& field, std::optional<Ticks> lo, Ticks hi,
                             const std::string& where) const {
  // The walk's correctness rests on the server's filters; a server that ignores or rounds them
  // would make the walk skip rows or never end. Every row must lie in [lo, hi).
  const bool created = field == "created";
  const std::optional<Ticks> min = created ? page_.min_created : page_.min_modified;
  const std::optional<Ticks> max = created ? page_.max_created : page_.max_modified;
  std::string problem;
  if (!created && page_.without_modified > 0)
    problem = fmt::format("{} row(s) without modifiedOn", page_.without_modified);
  else if (lo && min && *min < *lo)
    problem = fmt::format("a row with {}On {}", field, format_timestamp(*min, 7));
  else if (max && *max >= hi)
    problem = fmt::format("a row with {}On {}", field, format_timestamp(*max, 7));
  if (!problem.empty())
    throw Error(ErrorKind::bad_data,
                fmt::format("{}: the server returned {} outside the window it was asked for: it ignores or rounds "
                            "the {}On filters, so a list walk cannot be exact; use mode = \"export\" for this job "
                            "if the resource has an export feed, or report it",
                            where, problem, field));
}

Ticks JobRunner::walk_windows(JobStorage& store, JobState& state, std::int64_t run_id, const std::string& field,
                              std::optional<Ticks> lo, Ticks hi) {
  const std::int64_t tenant = session_.tenant().id;
  const std::string path = tenant_path(spec_.list_path, tenant);
  const std::string lo_name = field == "created" ? spec_.created_after : "modifiedOnOrAfter";
  const std::string hi_name = field == "created" ? spec_.created_before : "modifiedBefore";
  const Ticks safety = settings_.list_safety_seconds * kTicksPerSecond;
  Ticks cur = lo.value_or(std::min(kEpochFloor, hi));
  bool unbounded = !lo;
  Ticks width = hi - cur;
  while (cur < hi) {
    const Ticks w_hi = (width >= hi - cur) ? hi : cur + width;
    std::string window = path + "?" + (spec_.inactive_filter.empty() ? "" : spec_.inactive_filter + "&");
    if (!unbounded) window += lo_name + "=" + url_encode(format_timestamp(cur, 7)) + "&";
    window += hi_name + "=" + url_encode(format_timestamp(w_hi, 7));
    const std::string where =
        what(fmt::format("list window {} [{}, {})", field, unbounded ? "-" : format_timestamp(cur, 7),
                         format_timestamp(w_hi, 7)));
    HttpResponse r = client_.get(window + fmt::format("&page=1&pageSize={}&includeTotal=true", spec_.page_size), where);
    note_server_time(r);
    if (!r.date && !server_now_) log::warn("{}: the response has no Date header; using the local clock", where);
    // (A Date header is whole seconds: the server's clock may be up to a second past it.)
    if (server_now_ && w_hi > *server_now_ + kTicksPerSecond - safety) {
      // Our clock is ahead of the server's: the window must end in the server's past. Nothing of
      // this response is stored; the walk ends earlier.
      log::info("{}: the server's clock is behind this machine's; the walk ends at {}", where,
                format_timestamp(*server_now_ - safety, 7));
      hi = *server_now_ - safety;
      if (hi <= cur) break;
      width = std::min(width, hi - cur);
      continue;
    }
    try {
      parser_.parse(r.body, tenant, page_);
    } catch (const Error& e) {
      throw Error(e.kind(), fmt::format("{}: {}", where, e.what()));
    }
    check_window(field, unbounded ? std::nullopt : std::optional<Ticks>(cur), w_hi, where);
    if (page_.has_more) {
      if (w_hi - cur > kMinWindow) {
        // Too many rows for one response: halve the window. A window read in one response is a
        // consistent snapshot; offset paging over a changing set is not.
        width = std::max(kMinWindow, (w_hi - cur) / 2);
        continue;
      }
      walk_offset_pages(store, state, run_id, window, field, cur, w_hi);
      page_.clear();  // the window's rows are stored; this commit only moves the cursor
    }
    raise_watermark(state, where);
    if (field == "created") state.list_cursor = w_hi;
    else state.complete_through = w_hi;
    commit(store, state, run_id, where);
    check_run_time(where);
    cur = w_hi;
    unbounded = false;
    width = std::min(width * 2, hi - kEpochFloor);
  }
  return cur;
}

void JobRunner::walk_offset_pages(JobStorage& store, JobState& state, std::int64_t run_id, const std::string& window,
                                  const std::string& field, Ticks lo, Ticks hi) {
  // More rows than one response share a single instant. Page through them by offset. The set
  // can only shrink while we read (a row modified now gets a later modifiedOn; none can join an
  // instant in the server's past), and the server's order may not be stable between calls, so
  // pages may overlap or miss rows. Read passes until the distinct ids seen while the total
  // stayed the same cover the total: then every row of the window is stored. The cursor only
  // moves once the window is complete.
  const std::int64_t tenant = session_.tenant().id;
  constexpr int kMaxPasses = 8;
  std::unordered_set<std::string> seen;
  std::optional<std::int64_t> total;
  for (int pass = 1; pass <= kMaxPasses; ++pass) {
    int max_pages = 0;
    for (int page_no = 1;; ++page_no) {
      const std::string where = what(fmt::format("list window page {} (pass {})", page_no, pass));
      HttpResponse r = client_.get(window + fmt::format("&page={}&pageSize={}&includeTotal=true",
                                                        page_no, spec_.page_size),
                                   where);
      note_server_time(r);
      try {
        parser_.parse(r.body, tenant, page_);
      } catch (const Error& e) {
        throw Error(e.kind(), fmt::format("{}: {}", where, e.what()));
      }
      check_window(field, lo, hi, where);
      if (!page_.total_count)
        throw Error(ErrorKind::bad_data, fmt::format("{}: includeTotal=true but the page has no totalCount", where));
      if (total != page_.total_count) {
        if (total) log::info("{}: the window's count changed ({} → {}); reading it again", where, *total,
                             *page_.total_count);
        total = page_.total_count;
        seen.clear();
      }
      if (max_pages == 0) max_pages = static_cast<int>(*total / spec_.page_size) + 2;
      seen.insert(page_.ids.begin(), page_.ids.end());
      raise_watermark(state, where);
      commit(store, state, run_id, where);
      if (!page_.has_more) break;
      if (page_no >= max_pages)
        throw Error(ErrorKind::bad_data,
                    fmt::format("{}: hasMore is still true after {} pages of {} for {} rows: the server ignores "
                                "the page parameter; stopping instead of looping",
                                where, page_no, spec_.page_size, *total));
    }
    if (static_cast<std::int64_t>(seen.size()) == *total) return;
    if (static_cast<std::int64_t>(seen.size()) > *total)
      throw Error(ErrorKind::bad_data,
                  what(fmt::format("list window [{}, {}): {} distinct ids but totalCount {}: the server's filter "
                                   "or count is inconsistent",
                                   format_timestamp(lo, 7), format_timestamp(hi, 7), seen.size(), *total)));
    log::info("{}: {} of {} distinct rows seen (the order is not stable between pages); another pass",
              what("list"), seen.size(), *total);
  }
  throw Error(ErrorKind::http_transient,
              what(fmt::format("list: a dense window did not converge in {} passes (rows seen {} of {}); the "
                               "committed rows are kept, try again later",
                               kMaxPasses, seen.size(), total.value_or(0))));
}

}  // namespace stsync
