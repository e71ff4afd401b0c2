// A backfill (stsync run --jobs … --since DATE [--until DATE]): a window read again and merged
// through the guard, the job's token and watermark left as they are, resumable.
#include "job_run.h"

#include <fmt/format.h>

#include "log.h"

namespace stsync {
namespace {

// The progress a commit writes into sync_state.backfill: the window, then how far it got.
std::string encode_backfill(const std::string& window, const std::optional<Ticks>& cursor,
                            const std::optional<std::string>& token) {
  std::string out = "window=" + window;
  if (cursor) out += "\ncursor=" + format_timestamp(*cursor, 7);
  if (token) out += "\ntoken=" + *token;
  return out;
}

// The value of `key` in an encoded backfill whose window is `window`; nullopt otherwise.
std::optional<std::string> backfill_field(const std::optional<std::string>& encoded, const std::string& window,
                                          const std::string& key) {
  if (!encoded || encoded->rfind("window=" + window + "\n", 0) != 0) return std::nullopt;
  const std::string prefix = "\n" + key + "=";
  const size_t at = encoded->find(prefix);
  if (at == std::string::npos) return std::nullopt;
  const size_t begin = at + prefix.size();
  const size_t end = encoded->find('\n', begin);
  return encoded->substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

}  // namespace

std::string why_no_backfill(const JobSpec& spec, SyncMode mode, bool until) {
  if (spec.report) return "a report job reads days: --full-refresh reads every day from its start_date again";
  if (!spec.parent.empty())
    return "a per-parent job has no date filter (each parent's listing is read whole): use --reconcile";
  if (mode == SyncMode::full_listing) return "its endpoint has no date filter: every run reads it whole already";
  if (mode == SyncMode::export_feed && until)
    return "its export feed can start at a date but not stop at one: leave out --until (or --mode list, if its list "
           "endpoint filters by modifiedOn)";
  return {};
}

JobState JobRun::state_to_write(const JobState& walking) const {
  if (!backfill_base_) return walking;
  JobState out = *backfill_base_;
  // Windows move complete_through (modifiedOn) or list_cursor (the creation field); the export
  // its token. Each is where the backfill resumes.
  const std::optional<Ticks> cursor =
      mode_ == SyncMode::created_windows ? walking.list_cursor
                                         : (mode_ == SyncMode::export_feed ? std::nullopt : walking.complete_through);
  out.backfill = encode_backfill(backfill_window_, cursor,
                                 mode_ == SyncMode::export_feed ? walking.export_token : std::nullopt);
  return out;
}

void JobRun::walk_backfill(JobStorage& store, JobState& state, std::int64_t run_id) {
  if (const std::string why = why_no_backfill(spec_, mode_, options_.until.has_value()); !why.empty())
    throw Error(ErrorKind::config, what("") + "cannot be backfilled: " + why);
  const Ticks since = *options_.since;
  backfill_window_ = format_timestamp(since, 7) + "|" + (options_.until ? format_timestamp(*options_.until, 7) : "");
  // Resume where the same window's backfill stopped (a crash, --max-run-time); a different
  // window starts afresh.
  const std::optional<std::string> cursor_text = backfill_field(state.backfill, backfill_window_, "cursor");
  const std::optional<std::string> token = backfill_field(state.backfill, backfill_window_, "token");
  const std::optional<Ticks> resume = cursor_text ? parse_timestamp(*cursor_text) : std::nullopt;
  if (resume || token) log::info("{}resuming the backfill of [{}) where it stopped", what(""), backfill_window_);
  backfill_base_ = state;
  JobState walking = state;
  walking.backfill.reset();
  if (mode_ == SyncMode::export_feed) {
    // The export from `since` (its date fallback is complete_through − overlap), or from the
    // backfill's own token.
    walking.export_token = token;
    walking.complete_through = since + spec_.overlap_seconds * kTicksPerSecond;
    walk_export(store, walking, run_id);
  } else {
    client_.access_token(false);  // the token's response tells the server's clock
    const Ticks server_end =
        session_.server_now().value_or(now_ticks()) - settings_.list_safety_seconds * kTicksPerSecond;
    const Ticks hi = options_.until ? std::min(*options_.until, server_end) : server_end;
    const Ticks lo = std::max(since, resume.value_or(since));
    // The walk's progress never runs ahead of what it stored: it starts at lo.
    walking.complete_through = walking.list_cursor = lo;
    if (lo < hi) walk_windows(store, walking, run_id, mode_ == SyncMode::created_windows ? "created" : "modified", lo, hi);
  }
  // Done: the job's state as it was, without the backfill.
  backfill_base_.reset();
  state.backfill.reset();
  page_.clear();
  commit(store, state, run_id, what("backfill end"));
  log::info("{}backfill of [{}) done", what(""), backfill_window_);
}

}  // namespace stsync
