#include "sync.h"

#include <fmt/format.h>

#include <future>

#include "log.h"

namespace stsync {
namespace {

std::string with_tenant(const std::string& path, std::int64_t tenant) {
  std::string out = path;
  const size_t pos = out.find("{tenant}");
  if (pos != std::string::npos) out.replace(pos, 8, std::to_string(tenant));
  return out;
}

constexpr Ticks kMinWindow = kTicksPerMicro;  // the filters' useful resolution
constexpr Ticks kEpochFloor = 946684800LL * kTicksPerSecond;  // 2000-01-01: splits unbounded windows

}  // namespace

JobRunner::JobRunner(const Settings& settings, const JobSpec& spec, TenantSession& session,
                     HttpTransport& transport, PgConnection& db, Clock& clock,
                     const RunOptions& options)
    : settings_(settings),
      spec_(spec),
      session_(session),
      db_(db),
      clock_(clock),
      options_(options),
      mode_(options.mode.value_or(spec.mode)),
      budget_(settings.retry_budget_seconds),
      client_(settings, session, transport, clock, budget_),
      parser_(spec) {
  result_.tenant = session.tenant().id;
  result_.job = spec.name;
}

std::string JobRunner::what(const std::string& page) const {
  return fmt::format("job {} tenant {} {}", spec_.name, session_.tenant().id, page);
}

JobResult JobRunner::run() {
  JobStore store(db_, settings_.schema, spec_, session_.tenant().id, options_.full_refresh);
  if (!store.try_lock()) {
    log::info("job {} tenant {}: skipped, another run holds it", spec_.name, session_.tenant().id);
    result_.outcome = JobOutcome::skipped;
    return result_;
  }
  std::int64_t run_id = 0;
  try {
    JobState state = store.load_state();
    run_id = store.begin_run(mode_);
    log::info("job {} tenant {}: starting ({} mode{})", spec_.name, session_.tenant().id,
              mode_name(mode_), options_.full_refresh ? ", full refresh" : "");
    if (mode_ == SyncMode::export_feed) {
      walk_export(store, std::move(state), run_id);
    } else {
      walk_list(store, std::move(state), run_id);
    }
    store.finish_run(run_id, true, "");
    log::info("job {} tenant {}: done, {} pages, {} inserted, {} updated, {} unchanged",
              spec_.name, session_.tenant().id, result_.pages, result_.counts.inserted,
              result_.counts.updated, result_.counts.unchanged);
  } catch (const Error& e) {
    result_.outcome = JobOutcome::failed;
    result_.error_kind = e.kind();
    result_.error = log::redact(e.what());
    std::string advice;
    switch (e.kind()) {
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
    log::error("{}{}", result_.error, advice);
    if (run_id != 0 && db_.healthy()) {
      try {
        store.finish_run(run_id, false, result_.error);
      } catch (const Error& e2) {
        log::warn("job {} tenant {}: could not record the failure: {}", spec_.name,
                  session_.tenant().id, e2.what());
      }
    }
  }
  try {
    store.unlock();
  } catch (const Error&) {
    // The session is gone, and its lock with it.
  }
  return result_;
}

void JobRunner::commit(JobStore& store, const JobState& state, std::int64_t run_id,
                       const std::string& where) {
  for (const QuarantinedRecord& q : page_.quarantined)
    log::warn("{}: {}; quarantined (see the quarantine table), the job goes on", where, q.error);
  // PostgreSQL restarted or the connection broke: the page's transaction is lost, but the page
  // is still in memory. Reconnect (bounded), take the job's lock again and commit it again.
  for (int attempt = 1;; ++attempt) {
    try {
      result_.counts += store.commit_page(page_, state, run_id, where);
      ++result_.pages;
      return;
    } catch (const PgError& e) {
      if (e.kind() != ErrorKind::db_unavailable || attempt > settings_.db_reconnect_attempts) throw;
      const double wait = std::min(30.0, 0.5 * (1 << std::min(attempt - 1, 6)));
      log::warn("{}: {}; reconnecting in {:.1f} s ({} of {})", what("commit"), e.what(), wait, attempt,
                settings_.db_reconnect_attempts);
      clock_.sleep(wait);
      try {
        db_.reconnect();
      } catch (const PgError& again) {
        log::warn("{}: {}", what("reconnect"), again.what());
        continue;
      }
      if (!store.resume_after_reconnect())
        throw Error(ErrorKind::db, what("commit") + ": another run took this job while the connection was down; "
                                                    "stopping (it carries on from the committed state)");
    }
  }
}

void JobRunner::walk_export(JobStore& store, JobState state, std::int64_t run_id) {
  const std::int64_t tenant = session_.tenant().id;
  const std::string base = with_tenant(spec_.export_path, tenant);
  auto date_fallback = [&]() -> std::optional<std::string> {
    if (!state.watermark || options_.full_refresh) return std::nullopt;
    return format_timestamp(*state.watermark - spec_.overlap_seconds * kTicksPerSecond, 7);
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
  bool token_fallback_used = false;
  auto query_for = [&](const std::optional<std::string>& f) {
    std::string q = base + "?includeRecentChanges=" + (spec_.include_recent_changes ? "true" : "false");
    if (f) q += "&from=" + url_encode(*f);
    return q;
  };
  auto where_for = [&](int page_no) {
    return what(fmt::format("export page {}{}", page_no,
                            from_token ? " (from token)" : from ? " (from " + *from + ")" : ""));
  };
  // The next page is fetched while this one commits: HTTP and PostgreSQL work at the same time.
  // Only the fetch thread touches the client (its handle, retry budget) meanwhile; the session
  // it shares with other workers is thread-safe.
  std::future<HttpResponse> prefetch;
  for (int page_no = 1;; ++page_no) {
    const std::string where = where_for(page_no);
    HttpResponse response;
    try {
      response = prefetch.valid() ? prefetch.get() : client_.get(query_for(from), where);
    } catch (const Error& e) {
      // A continueFrom the API no longer accepts: restart from the watermark minus the overlap.
      // Rows re-read there are merged idempotently, so nothing is lost or duplicated.
      if (from_token && !token_fallback_used && e.kind() == ErrorKind::http_permanent &&
          (e.http_status() == 400 || e.http_status() == 404 || e.http_status() == 410)) {
        token_fallback_used = true;
        from = date_fallback();
        from_token = false;
        log::warn("{}: the saved continueFrom token was rejected ({}); restarting from {}", where,
                  e.what(), from.value_or("the beginning of the feed"));
        --page_no;
        continue;
      }
      throw;
    }
    try {
      parser_.parse(response.body, tenant, page_);
    } catch (const Error& e) {
      throw Error(e.kind(), fmt::format("{}: {}", where, e.what()));
    }
    if (page_.nul_replaced > 0)
      log::warn("{}: {} value(s) held NUL characters, stored as U+FFFD", where, page_.nul_replaced);
    if (page_.has_more && !page_.continue_from)
      throw Error(ErrorKind::bad_data, fmt::format("{}: hasMore is true but continueFrom is missing", where));
    if (page_.has_more && from_token && *from == *page_.continue_from && page_.records == 0)
      throw Error(ErrorKind::bad_data, fmt::format("{}: the feed returned the same token and no rows; "
                                                   "stopping instead of looping",
                                                   where));
    if (page_.continue_from) state.export_token = page_.continue_from;
    if (page_.max_modified && (!state.watermark || *page_.max_modified > *state.watermark))
      state.watermark = page_.max_modified;
    const bool has_more = page_.has_more;
    if (has_more) {
      from = page_.continue_from;
      from_token = true;
      prefetch = std::async(std::launch::async, [this, query = query_for(from), next = where_for(page_no + 1)] {
        return client_.get(query, next);
      });
    }
    commit(store, state, run_id, where);
    log::debug("{}: {} records, hasMore={}", where, page_.records, has_more);
    if (!has_more) break;
  }
}

void JobRunner::walk_list(JobStore& store, JobState state, std::int64_t run_id) {
  const std::int64_t tenant = session_.tenant().id;
  const std::string path = with_tenant(spec_.list_path, tenant);
  // The server's clock bounds every window: rows change at server time, and a window must end
  // in the server's past, or rows modified after we read it but stamped before its end are lost.
  HttpResponse probe = client_.get(
      path + "?page=1&pageSize=1" + (spec_.inactive_filter.empty() ? "" : "&" + spec_.inactive_filter),
      what("list clock probe"));
  Ticks server_now = now_ticks();
  if (probe.date) {
    if (auto t = parse_http_date(*probe.date)) server_now = *t;
  } else {
    log::warn("{}: the response has no Date header; using the local clock", what("list"));
  }
  const Ticks end = server_now - settings_.list_safety_seconds * kTicksPerSecond;

  if (options_.full_refresh || (!state.watermark && !state.list_pass_field)) {
    state.list_pass_field = "created";
    state.list_pass_start = end;
    state.list_cursor.reset();
  }
  if (state.list_pass_field == "created") {
    // First pass: windows over createdOn, which never changes, so no row can move between
    // windows while we read (rows without modifiedOn are only found this way). Rows changed
    // meanwhile carry modifiedOn ≥ the pass start and are read by the modifiedOn pass.
    const Ticks pass_end = state.list_pass_start.value_or(end);
    walk_windows(store, state, run_id, "created", state.list_cursor, pass_end);
    state.list_pass_field.reset();
    state.list_cursor.reset();
    state.watermark = pass_end;
    state.list_pass_start.reset();
    page_.clear();
    commit(store, state, run_id, what("list first pass end"));
  }
  const Ticks lo = *state.watermark - spec_.overlap_seconds * kTicksPerSecond;
  if (lo < end) walk_windows(store, state, run_id, "modified", lo, end);
}

void JobRunner::walk_windows(JobStore& store, JobState& state, std::int64_t run_id,
                             const std::string& field, std::optional<Ticks> lo, Ticks hi) {
  const std::int64_t tenant = session_.tenant().id;
  const std::string path = with_tenant(spec_.list_path, tenant);
  const std::string lo_name = field == "created" ? "createdOnOrAfter" : "modifiedOnOrAfter";
  const std::string hi_name = field == "created" ? "createdBefore" : "modifiedBefore";
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
    try {
      parser_.parse(r.body, tenant, page_);
    } catch (const Error& e) {
      throw Error(e.kind(), fmt::format("{}: {}", where, e.what()));
    }
    if (page_.has_more) {
      if (w_hi - cur > kMinWindow) {
        // Too many rows for one response: halve the window. A window read in one response is a
        // consistent snapshot; offset paging over a changing set is not.
        width = std::max(kMinWindow, (w_hi - cur) / 2);
        continue;
      }
      walk_offset_pages(store, state, run_id, window);
      page_.clear();  // the window's rows are stored; this commit only moves the cursor
    }
    if (field == "created") state.list_cursor = w_hi;
    else state.watermark = w_hi;
    commit(store, state, run_id, where);
    cur = w_hi;
    unbounded = false;
    width = std::min(width * 2, hi - kEpochFloor);
  }
}

void JobRunner::walk_offset_pages(JobStore& store, JobState& state, std::int64_t run_id,
                                  const std::string& window) {
  // More rows than one response share a single instant. Page through them by offset, then check
  // that the window's count did not change meanwhile; if it did, rows may have shifted past a
  // page boundary, so read it again. The state (cursor) only moves once the window is complete.
  const std::int64_t tenant = session_.tenant().id;
  for (int attempt = 1; attempt <= 5; ++attempt) {
    std::optional<std::int64_t> first_total;
    for (int page_no = 1;; ++page_no) {
      const std::string where = what(fmt::format("list window page {}", page_no));
      HttpResponse r = client_.get(window + fmt::format("&page={}&pageSize={}&includeTotal=true",
                                                        page_no, spec_.page_size),
                                   where);
      try {
        parser_.parse(r.body, tenant, page_);
      } catch (const Error& e) {
        throw Error(e.kind(), fmt::format("{}: {}", where, e.what()));
      }
      if (!first_total) first_total = page_.total_count;
      commit(store, state, run_id, where);
      if (!page_.has_more) break;
    }
    if (page_.total_count == first_total) return;
    log::info("{}: the window changed while paging; reading it again", what("list"));
  }
  throw Error(ErrorKind::http_transient,
              what("list: a dense window kept changing while paged; try again later"));
}

}  // namespace stsync
