// The fleet's shared bookkeeping in PostgreSQL: which process works which tenant, the rounds of
// a fleet of `stsync run` processes, and the pruning of old run records.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config.h"
#include "pg.h"

namespace stsync {

// Every process started with the same config shares the tenants through PostgreSQL. A tenant is
// worked by one process at a time (a session advisory lock on this connection, which dies with
// the process), and once per round: a tenant whose round finished after this process started
// was done by another process.
class FleetStore {
 public:
  /// `rounds`: a plain `stsync run` syncs each tenant once per round of the fleet. A round lasts
  /// while any of its processes lives (each holds a shared advisory lock for its lifetime): a
  /// process that starts while others of a round still run joins it, however late it started
  /// (cron, a Kubernetes Job's pods, a slow start); one that starts when none runs opens a new
  /// round. Without rounds (--due, the daemon) only the tenant locks apply: cadence prevents repeats.
  /// `db`: the fleet's connection (the one that applied the migrations: one connection less to open).
  FleetStore(std::unique_ptr<PgConnection> db, const Settings& settings, bool rounds);
  /// Tenants in the order to take them: never-finished first, then the longest since a round.
  std::vector<std::int64_t> order(const std::vector<TenantConfig>& tenants);
  /// True: this process works the tenant now (until release). False: another process holds it,
  /// or finished it in this round.
  /// The fleet's own connection may break (PostgreSQL restarted) while jobs go on reconnecting:
  /// its locks died with it, so it reconnects and carries on (a tenant may then, rarely, be
  /// worked twice in a round, which the job locks and the guard make harmless).
  bool claim(std::int64_t tenant);
  void release(std::int64_t tenant, bool finished);
  /// Deletes the runs that finished more than `keep_days` ago (never a job's last run), first
  /// adding what they counted to sync_run_totals, in the same statement: a run is counted once,
  /// even when two processes prune at once. In batches, so that no statement runs long.
  /// Returns the number of runs pruned.
  std::int64_t prune_runs(int keep_days);

 private:
  template <typename F>
  bool with_connection(F&& f, bool fallback);
  bool claim_once(std::int64_t tenant);
  bool release_once(std::int64_t tenant, bool finished);
  std::unique_ptr<PgConnection> db_ptr_;
  PgConnection& db_ = *db_ptr_;
  std::string schema_q_, schema_, started_, holder_;
  std::unique_ptr<AdvisoryLock> round_;  // shared, for this process's lifetime
  std::map<std::int64_t, std::unique_ptr<AdvisoryLock>> tenant_locks_;
};

}  // namespace stsync
