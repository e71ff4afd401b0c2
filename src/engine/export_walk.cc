// The export feed: continueFrom tokens, their fallback to a date, and the two commit lanes.
#include "job_run.h"

#include <fmt/format.h>

#include <future>
#include <memory>
#include <unordered_set>

#include "log.h"
#include "pg.h"

namespace stsync {
namespace {

// The largest page (JSON bytes) that is parsed on the helper thread while the previous page
// commits; larger pages are parsed after it, so at most one page's COPY rows are in memory.
constexpr size_t kOverlapParseBytes = 6 << 20;

}  // namespace

void JobRun::walk_export(JobStorage& store, JobState& state, std::int64_t run_id) {
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
        // A request from the stored token that the server keeps failing (5xx after every retry):
        // the token may be what it chokes on (the spec does not say how an expired token
        // fails). Once per run, and only when a date is known, the feed restarts from it; a
        // server that fails that request too is down, and the job fails as before.
        const bool failing = from_token && page_no == 1 && e.kind() == ErrorKind::http_transient &&
                             !date_fallback_used && date_fallback().has_value();
        if ((rejected || failing) && !date_fallback_used) {
          // Rows re-read from there are merged idempotently: nothing is lost or duplicated.
          date_fallback_used = true;
          tokens_seen.clear();
          from = date_fallback();
          from_token = false;
          log::warn("{}: the continueFrom token {} ({}); restarting from {}", where,
                    failing ? "keeps failing on the server" : "was rejected again", e.what(),
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
      // The first walk to the feed's end (from its beginning, or a job from before export jobs
      // were swept): the first sweep for hard deletes is due a reconcile period after it.
      if (!page.has_more && !state.reconciled_at)
        state.reconciled_at = server_now_.value_or(now_ticks());
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

}  // namespace stsync
