// Complete listings: the sweep for hard deletes (with its second look), and the per-parent
// walk that sweeps each changed parent's listing.
#include "job_run.h"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_set>

#include "log.h"
#include "pg.h"

namespace stsync {

bool JobRun::reconcile_due(const JobState& state, Ticks now) const {
  if (options_.reconcile) return true;
  if (spec_.reconcile_every_seconds <= 0 || !state.reconciled_at) return false;
  return now - *state.reconciled_at >= static_cast<Ticks>(spec_.reconcile_every_seconds) * kTicksPerSecond;
}

std::int64_t JobRun::read_listing(JobStorage& store, JobState& state, std::int64_t run_id,
                                  const std::optional<std::string>& parent) {
  std::string path = tenant_path(spec_.list_path, session_.tenant().id);
  if (parent) {
    const size_t pos = path.find("{parent}");
    path.replace(pos, 8, url_encode(*parent));
  }
  std::string filters = spec_.list_query_prefix();
  if (!spec_.list_sort.empty()) filters += "sort=" + url_encode(spec_.list_sort) + "&";
  std::int64_t position = 0;
  std::optional<std::int64_t> total;
  const std::string scope = parent ? fmt::format("parent {} ", *parent) : std::string();
  for (int page_no = 1;; ++page_no) {
    const std::string where = what(fmt::format("{}listing page {}", scope, page_no));
    std::string query = path;
    if (spec_.response == ResponseShape::paged)
      query = JobSpec::with_query(query, filters + spec_.paging(page_no, spec_.page_size));
    else if (!filters.empty())
      query += "?" + filters.substr(0, filters.size() - 1);
    parser_.set_listing(parent.value_or(""), position);
    try {
      fetch_and_parse(query, where, page_);
    } catch (const Error& e) {
      // 404 for a parent: the API no longer knows it ("Customer not found": deleted at the
      // source), or it never had the one object this endpoint serves (a job never booked).
      // Either way nothing is under it now: its rows are marked deleted by the sweep, and the
      // walk goes on to the next parent instead of failing on this one every run.
      if (!(parent && e.http_status() == 404)) throw;
      if (spec_.response != ResponseShape::object)
        log::info("{}: the API does not know parent {} (404); its rows here are marked deleted", where, *parent);
      page_.clear();
    }
    if (page_.total_count) total = page_.total_count;
    position += page_.records + static_cast<std::int64_t>(page_.quarantined.size());
    // A parent with nothing under it (most of them, in a first load of notes or attachments)
    // leaves nothing to store: only the state would be written, one commit (an fsync) per
    // parent, which would bound the walk far below the request budget. Such pages write the
    // state at most once a second; a crash re-reads at most that second's parents.
    const bool empty_parent = parent && page_.records == 0 && page_.quarantined.empty() && !page_.has_more;
    if (!empty_parent || clock_.monotonic() - last_commit_at_ >= 1.0) commit(store, state, run_id, where);
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

std::vector<std::string> JobRun::confirm_gone(JobStorage& store, JobState& state, std::int64_t run_id,
                                              std::vector<std::string> candidates) {
  // Offset pages over a set that changes while it is read can skip a row (a row before it was
  // deleted). Before a row is marked deleted, the API is asked for it by id.
  const std::string path = tenant_path(spec_.list_path, session_.tenant().id);
  std::unordered_set<std::string> present;
  for (size_t i = 0; i < candidates.size(); i += 50) {
    // ids=1%2C2, or ids=1&ids=2 where the contract types ids as an array (then a comma list is
    // refused with a 400).
    const bool repeated = spec_.ids_repeated;
    std::string ids;
    for (size_t j = i; j < std::min(candidates.size(), i + 50); ++j)
      ids += (repeated || j == i ? "ids=" : "%2C") + url_encode(candidates[j]) + (repeated ? "&" : "");
    if (!repeated) ids += "&";
    const std::string where = what(fmt::format("deleted-row check {}", i / 50 + 1));
    fetch_and_parse(JobSpec::with_query(path, spec_.list_query_prefix() + ids + spec_.paging(1, 50, false)), where, page_);
    present.insert(page_.ids.begin(), page_.ids.end());
    commit(store, state, run_id, where);  // they are current versions: store them
  }
  std::vector<std::string> gone;
  for (std::string& c : candidates)
    if (!present.count(c)) gone.push_back(std::move(c));
  return gone;
}

void JobRun::sweep(JobStorage& store, JobState& state, std::int64_t run_id,
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
    // One parent's listing with nothing gone: its page committed the state already, and the
    // cursor moves with the next parent's page (or the walk's last write). A transaction less
    // per parent, where a per-parent walk spends its time: one commit (an fsync) per parent.
    const bool nothing_to_write = parent && gone.empty();
    const std::int64_t marked = nothing_to_write ? 0 : store.mark_deleted(gone, &state, run_id);
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

void JobRun::walk_parents(JobStorage& store, JobState& state, std::int64_t run_id) {
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
  // A parent marked deleted (by its own job's sweep) is no longer visited: the rows under it
  // went with it at the source. Checked on the walks over every parent, as deletes are.
  std::vector<std::string> orphans;
  if (all) {
    state.reconciled_at = db_now;
    orphans = store.rows_of_deleted_parents();
  }
  if (all || parents > 0) {
    const std::int64_t marked = store.mark_deleted(orphans, &state, run_id);  // and the state
    if (marked > 0) log::info("{}: {} row(s) under parents marked deleted: deleted_at set", what(""), marked);
    result_.deleted += marked;
  }
  log::info("{}: {} parent(s) read", what(""), parents);
}

}  // namespace stsync
