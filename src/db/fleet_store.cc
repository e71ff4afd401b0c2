#include "fleet_store.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "log.h"

namespace stsync {

FleetStore::FleetStore(std::unique_ptr<PgConnection> db, const Settings& settings, bool rounds)
    : db_ptr_(std::move(db)) {
  schema_q_ = db_.quote_ident(settings.schema);
  schema_ = settings.schema;
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  holder_ = fmt::format("{}:{}", host, getpid());
  started_ = "infinity";
  if (!rounds) return;
  Transaction tx(db_);
  // One decision at a time.
  db_.exec("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", {"stsync-round-decision:" + schema_});
  round_ = std::make_unique<AdvisoryLock>(db_, "stsync-round:" + schema_);
  if (round_->try_acquire()) {  // no process of a round lives: this one opens a new round
    db_.exec(fmt::format("INSERT INTO {0}.fleet_round (id, started_at) VALUES (1, now()) "
                         "ON CONFLICT (id) DO UPDATE SET started_at = now()",
                         schema_q_));
    round_->release();
  }
  started_ = db_.exec(fmt::format("SELECT started_at FROM {}.fleet_round", schema_q_)).get(0, 0);
  round_->acquire_shared();  // until this process ends
  tx.commit();
}

std::vector<std::int64_t> FleetStore::order(const std::vector<TenantConfig>& tenants) {
  std::vector<std::pair<std::string, std::int64_t>> keyed;
  std::map<std::int64_t, std::string> finished;
  PgResult r = db_.exec(fmt::format("SELECT tenant_id, coalesce(to_char(round_finished_at AT TIME ZONE 'UTC', "
                                    "'YYYY-MM-DD HH24:MI:SS.US'), '') FROM {}.fleet_tenants",
                                    schema_q_));
  for (int i = 0; i < r.rows(); ++i) finished[r.get_int(i, 0)] = r.get(i, 1);
  for (const TenantConfig& t : tenants) keyed.emplace_back(finished.count(t.id) ? finished[t.id] : "", t.id);
  std::stable_sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::int64_t> out;
  for (const auto& [_, id] : keyed) out.push_back(id);
  return out;
}

bool FleetStore::claim(std::int64_t tenant) {
  return with_connection([&] { return claim_once(tenant); }, false);
}

void FleetStore::release(std::int64_t tenant, bool finished) {
  with_connection([&] { return release_once(tenant, finished); }, true);
}

std::int64_t FleetStore::prune_runs(int keep_days) {
  std::int64_t pruned = 0;
  for (int batch = 0; batch < 100; ++batch) {
    const std::int64_t n = db_.exec(fmt::format(
        "WITH gone AS ("
        "  DELETE FROM {0}.sync_runs WHERE run_id IN ("
        "    SELECT run_id FROM {0}.sync_runs r WHERE finished_at < now() - make_interval(days => $1::int) "
        "    AND NOT EXISTS (SELECT 1 FROM {0}.sync_state st WHERE st.last_run_id = r.run_id) LIMIT 5000) "
        "  RETURNING *), "
        "added AS ("
        "  INSERT INTO {0}.sync_run_totals AS t (tenant_id, job, runs, failed_runs, pages, rows_inserted, "
        "    rows_updated, requests, throttled, retries) "
        "  SELECT tenant_id, job, count(*), count(*) FILTER (WHERE outcome = 'failed'), sum(pages), "
        "    sum(rows_inserted), sum(rows_updated), sum(requests), sum(throttled), sum(retries) "
        "  FROM gone GROUP BY 1, 2 "
        "  ON CONFLICT (tenant_id, job) DO UPDATE SET runs = t.runs + excluded.runs, "
        "    failed_runs = t.failed_runs + excluded.failed_runs, pages = t.pages + excluded.pages, "
        "    rows_inserted = t.rows_inserted + excluded.rows_inserted, "
        "    rows_updated = t.rows_updated + excluded.rows_updated, requests = t.requests + excluded.requests, "
        "    throttled = t.throttled + excluded.throttled, retries = t.retries + excluded.retries) "
        "SELECT count(*) FROM gone",
        schema_q_), {std::to_string(keep_days)}).get_int(0, 0);
    pruned += n;
    if (n < 5000) break;
  }
  return pruned;
}

template <typename F>
bool FleetStore::with_connection(F&& f, bool fallback) {
  for (int attempt = 1;; ++attempt) {
    try {
      return f();
    } catch (const PgError& e) {
      if (e.kind() != ErrorKind::db_unavailable || attempt > 6) {
        log::warn("fleet: {}; going on without it", e.what());
        return fallback;
      }
      log::warn("fleet: {}; reconnecting", e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(250 * attempt));
      try {
        db_.reconnect();
      } catch (const PgError&) {
      }
      // The old session's locks went with it.
      for (auto& [_, lock] : tenant_locks_) lock->forget();
      if (round_) round_->forget();
    }
  }
}

bool FleetStore::claim_once(std::int64_t tenant) {
  auto& lock = tenant_locks_[tenant];
  if (!lock) lock = std::make_unique<AdvisoryLock>(db_, fmt::format("stsync-tenant:{}:{}", schema_, tenant));
  if (!lock->try_acquire()) {
    log::info("tenant {}: skipped, another run holds it (another process of the fleet is syncing it)", tenant);
    return false;
  }
  PgResult done = db_.exec(fmt::format("SELECT round_finished_at >= $2::timestamptz FROM {}.fleet_tenants "
                                       "WHERE tenant_id = $1",
                                       schema_q_),
                           {std::to_string(tenant), started_});
  if (done.rows() == 1 && done.get(0, 0) == "t") {
    log::info("tenant {}: skipped, another run holds it or synced it in this round", tenant);
    lock->release();
    return false;
  }
  db_.exec(fmt::format("INSERT INTO {}.fleet_tenants (tenant_id, round_started_at, holder) VALUES ($1, now(), $2) "
                       "ON CONFLICT (tenant_id) DO UPDATE SET round_started_at = now(), holder = $2",
                       schema_q_),
           {std::to_string(tenant), holder_});
  return true;
}

bool FleetStore::release_once(std::int64_t tenant, bool finished) {
  if (finished)
    db_.exec(fmt::format("UPDATE {}.fleet_tenants SET round_finished_at = now() WHERE tenant_id = $1", schema_q_),
             {std::to_string(tenant)});
  if (auto it = tenant_locks_.find(tenant); it != tenant_locks_.end()) it->second->release();
  return true;
}

}  // namespace stsync
