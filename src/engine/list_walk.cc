// List mode: windows over createdOn (a first pass) and modifiedOn, halved until each fits in
// one response, offset pages for an instant that holds more.
#include "job_run.h"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_set>

#include "log.h"
#include "pg.h"

namespace stsync {
namespace {

constexpr Ticks kMinWindow = kTicksPerMicro;  // the filters' useful resolution
constexpr Ticks kEpochFloor = 946684800LL * kTicksPerSecond;  // 2000-01-01: splits unbounded windows

}  // namespace

void JobRun::walk_list(JobStorage& store, JobState& state, std::int64_t run_id) {
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

void JobRun::check_window(const std::string& field, std::optional<Ticks> lo, Ticks hi,
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

Ticks JobRun::walk_windows(JobStorage& store, JobState& state, std::int64_t run_id, const std::string& field,
                           std::optional<Ticks> lo, Ticks hi) {
  const std::string path = tenant_path(spec_.list_path, session_.tenant().id);
  const std::string lo_name = field == "created" ? spec_.created_after : "modifiedOnOrAfter";
  const std::string hi_name = field == "created" ? spec_.created_before : "modifiedBefore";
  const Ticks safety = settings_.list_safety_seconds * kTicksPerSecond;
  Ticks cur = lo.value_or(std::min(kEpochFloor, hi));
  bool unbounded = !lo;
  Ticks width = hi - cur;
  while (cur < hi) {
    const Ticks w_hi = (width >= hi - cur) ? hi : cur + width;
    std::string window = path + "?" + spec_.list_query_prefix(unbounded || lo_name != spec_.list_floor);
    if (!unbounded) window += lo_name + "=" + url_encode(format_timestamp(cur, 7)) + "&";
    window += hi_name + "=" + url_encode(format_timestamp(w_hi, 7));
    const std::string where =
        what(fmt::format("list window {} [{}, {})", field, unbounded ? "-" : format_timestamp(cur, 7),
                         format_timestamp(w_hi, 7)));
    HttpResponse r = client_.get(JobSpec::with_query(window, spec_.paging(1, spec_.page_size)), where);
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
    parse_body(r.body, where, page_);
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

void JobRun::walk_offset_pages(JobStorage& store, JobState& state, std::int64_t run_id, const std::string& window,
                               const std::string& field, Ticks lo, Ticks hi) {
  // More rows than one response share a single instant. Page through them by offset. The set
  // can only shrink while we read (a row modified now gets a later modifiedOn; none can join an
  // instant in the server's past), and the server's order may not be stable between calls, so
  // pages may overlap or miss rows. Read passes until the distinct ids seen while the total
  // stayed the same cover the total: then every row of the window is stored. The cursor only
  // moves once the window is complete.
  constexpr int kMaxPasses = 8;
  std::unordered_set<std::string> seen;
  std::optional<std::int64_t> total;
  for (int pass = 1; pass <= kMaxPasses; ++pass) {
    int max_pages = 0;
    for (int page_no = 1;; ++page_no) {
      const std::string where = what(fmt::format("list window page {} (pass {})", page_no, pass));
      HttpResponse r = client_.get(JobSpec::with_query(window, spec_.paging(page_no, spec_.page_size)), where);
      note_server_time(r);
      parse_body(r.body, where, page_);
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
