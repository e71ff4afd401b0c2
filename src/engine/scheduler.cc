#include "scheduler.h"
#include "connect.h"

#include "suggest.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <thread>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <unistd.h>

#include "exit_status.h"
#include "http.h"
#include "log.h"
#include "figures.h"
#include "fleet_store.h"
#include "migrate.h"
#include "store.h"
#include "report_run.h"
#include "report_store.h"
#include "stop.h"

namespace stsync {

std::vector<TenantConfig> selected_tenants(const Settings& s, const RunOptions& o) {
  if (s.tenants.empty())
    throw Error(ErrorKind::config,
                "no tenant configured: set ST_TENANT_ID, ST_CLIENT_ID and ST_CLIENT_SECRET, or "
                "add [[tenants]] to the config file");
  if (!o.tenant) return s.tenants;
  for (const TenantConfig& t : s.tenants)
    if (t.id == *o.tenant) return {t};
  throw Error(ErrorKind::config, fmt::format("--tenant {} is not a configured tenant", *o.tenant));
}

int exit_code_for(const std::vector<JobResult>& results) {
  // The most telling failure wins: credentials, then usage, then the database, then any job.
  auto rank = [](int code) {
    return code == kExitAuthRejected ? 4 : code == kExitUsage ? 3 : code == kExitDatabase ? 2 : code ? 1 : 0;
  };
  int code = kExitSuccess;
  for (const JobResult& r : results) {
    if (r.outcome != JobOutcome::failed) continue;
    const int mine = exit_status_for(r.error_kind.value_or(ErrorKind::bad_data), /*whole_command=*/false);
    if (rank(mine) > rank(code)) code = mine;
  }
  return code;
}

namespace {

// The jobs of one tenant for this run: the user's --jobs, else the tenant's own list, else every
// enabled job; per-parent jobs in a second phase (they read their parents' tables).
struct TenantWork {
  TenantSession* session = nullptr;
  std::vector<const JobSpec*> phases[2];
  int phase = 0;
  size_t next = 0;
  int running = 0;
};

}  // namespace

CurlOptions curl_options(const Settings& s) {
  CurlOptions o;
  o.timeout_seconds = s.timeout_seconds;
  o.connect_timeout_seconds = s.connect_timeout_seconds;
  o.tls_verify = s.tls_verify;
  o.ca_file = s.ca_file;
  o.max_body_bytes = s.max_response_bytes;
  return o;
}

namespace {

// A run's results summed: jobs by outcome, rows, requests (the summary line and its event).
struct RunTally {
  std::map<JobOutcome, std::int64_t> by_outcome;
  std::int64_t inserted = 0, updated = 0, requests = 0;
  explicit RunTally(const RunSummary& summary) {
    for (const JobResult& r : summary.results) {
      ++by_outcome[r.outcome];
      inserted += r.counts.inserted;
      updated += r.counts.updated;
      requests += r.requests;
    }
  }
};

}  // namespace

std::string describe_run(const RunSummary& summary, double seconds, bool due) {
  if (summary.results.empty())
    return due ? "run: nothing was due (each job waits for its cadence, `every`; `stsync status` shows the last runs)"
               : "run: no job ran";
  RunTally tally(summary);
  auto& by_outcome = tally.by_outcome;
  const std::int64_t inserted = tally.inserted, updated = tally.updated, requests = tally.requests;
  static const std::pair<JobOutcome, const char*> kNames[] = {{JobOutcome::succeeded, "succeeded"},
                                                               {JobOutcome::failed, "failed"},
                                                               {JobOutcome::not_permitted, "not permitted"},
                                                               {JobOutcome::interrupted, "interrupted"},
                                                               {JobOutcome::skipped, "skipped"}};
  std::string outcomes;
  for (const auto& [outcome, name] : kNames)
    if (by_outcome.count(outcome)) outcomes += fmt::format("{}{} {}", outcomes.empty() ? "" : ", ", by_outcome[outcome], name);
  return fmt::format("run: {} job(s): {}; {} row(s) inserted, {} updated; {} request(s); {:.1f} s",
                     summary.results.size(), outcomes, inserted, updated, requests, seconds);
}

void log_run_finished(const RunSummary& summary, double seconds, bool due) {
  RunTally tally(summary);
  auto& n = tally.by_outcome;
  const std::int64_t inserted = tally.inserted, updated = tally.updated, requests = tally.requests;
  log::write_event(log::Level::info, "run_finished",
                   {{"jobs", static_cast<std::int64_t>(summary.results.size())},
                    {"succeeded", n[JobOutcome::succeeded]},
                    {"failed", n[JobOutcome::failed]},
                    {"not_permitted", n[JobOutcome::not_permitted]},
                    {"interrupted", n[JobOutcome::interrupted]},
                    {"skipped", n[JobOutcome::skipped]},
                    {"inserted", inserted},
                    {"updated", updated},
                    {"requests", requests},
                    {"milliseconds", static_cast<std::int64_t>(seconds * 1000)},
                    {"exit_code", summary.exit_code}},
                   describe_run(summary, seconds, due));
}

RunSummary run_jobs(const Settings& settings, const RunOptions& options, Clock& clock) {
  std::vector<JobSpec> all = resolve_jobs(settings);
  auto find_job = [&](const std::string& name, const std::string& where) -> const JobSpec& {
    auto it = std::find_if(all.begin(), all.end(), [&](const JobSpec& j) { return j.name == name; });
    if (it == all.end())
      throw Error(ErrorKind::config, fmt::format("{}: unknown job '{}'{} (`stsync jobs` lists them)", where, name,
                                                 did_you_mean(name, job_names(all))));
    return *it;
  };
  // The specs this run may use, named ones marked (a 403 on them fails).
  std::vector<JobSpec> specs;
  auto add = [&](const JobSpec& j, bool named) {
    auto it = std::find_if(specs.begin(), specs.end(), [&](const JobSpec& o) { return o.name == j.name; });
    if (it == specs.end()) {
      specs.push_back(j);
      specs.back().named = j.named || named;
    }
  };
  for (const std::string& name : options.jobs) add(find_job(name, "--jobs"), true);
  const std::vector<TenantConfig> tenants = selected_tenants(settings, options);
  if (options.jobs.empty()) {
    for (const JobSpec& j : all)
      if (j.enabled) add(j, false);
    for (const TenantConfig& t : tenants)
      for (const std::string& name : t.jobs) add(find_job(name, fmt::format("tenant {}", t.id)), true);
  }
  if (settings.app_key.empty())
    throw Error(ErrorKind::config, "no app key: set ST_APP_KEY or servicetitan.app_key");
  if (!settings.tls_verify)
    log::warn("TLS certificate verification is OFF (tls_verify = false): use only for testing");
  std::map<std::string, std::string> unprepared;  // job → why its table could not be altered
  auto fleet_db = connect(settings);
  // Migrations and the job tables' shapes are checked once per process for a given database,
  // schema and set of jobs: a daemon's later rounds send no DDL and no migration check. A round
  // in which a job fails checks again next time (a table dropped or altered meanwhile).
  std::string prepared_key = settings.database_url + '\n' + settings.schema;
  for (const JobSpec& j : specs) prepared_key += '\n' + j.name + ':' + std::to_string(j.columns.size()) + ':' +
                                                 std::to_string(j.children.size());
  static std::mutex prepared_mutex;
  static std::string prepared;  // the key of the last preparation that left every job ready
  bool already_prepared;
  {
    std::lock_guard lock(prepared_mutex);
    already_prepared = prepared == prepared_key;
  }
  if (!already_prepared) {
    apply_migrations(*fleet_db, settings.schema);
    unprepared = ensure_job_tables(*fleet_db, settings.schema, specs);
    for (const auto& [job, why] : unprepared) log::error("job {}: {}", job, why);
    std::lock_guard lock(prepared_mutex);
    prepared = unprepared.empty() ? prepared_key : std::string();
  }
  auto spec_of = [&](const std::string& name) {
    auto it = std::find_if(specs.begin(), specs.end(), [&](const JobSpec& j) { return j.name == name; });
    if (it == specs.end())  // every tenant's job names were checked above; this guards the lookup
      throw Error(ErrorKind::config, fmt::format("unknown job '{}' (`stsync jobs` lists them)", name));
    return &*it;
  };

  // Sessions are cheap (no thread, no connection): 500 tenants cost 500 small objects.
  std::map<std::int64_t, std::unique_ptr<TenantSession>> sessions;
  std::map<std::int64_t, const TenantConfig*> config_of;
  for (const TenantConfig& t : tenants) {
    sessions[t.id] = std::make_unique<TenantSession>(t, settings.requests_per_second, clock);
    config_of[t.id] = &t;
  }
  FleetStore fleet(std::move(fleet_db), settings, !options.due);
  std::unique_ptr<PgConnection> state_db;  // reads which jobs are due (--due only)
  // A claimed tenant's jobs for this run (with --due, only those due now).
  auto work_for = [&](std::int64_t tenant) {
    TenantWork w;
    w.session = sessions[tenant].get();
    std::vector<const JobSpec*> jobs;
    if (!options.jobs.empty()) {
      for (const JobSpec& j : specs) jobs.push_back(&j);  // exactly the jobs named on the command line
    } else if (!config_of[tenant]->jobs.empty()) {
      for (const std::string& name : config_of[tenant]->jobs) jobs.push_back(spec_of(name));
    } else {
      for (const JobSpec& j : specs)
        if (j.enabled) jobs.push_back(&j);
    }
    if (options.due) {
      std::map<std::string, double> since;  // none known: every job is due
      try {
        if (!state_db) state_db = connect(settings);
        if (!state_db->healthy()) state_db->reconnect();
        since = seconds_since_success(*state_db, settings.schema, tenant);
      } catch (const PgError& e) {
        log::warn("tenant {}: cannot read which jobs are due ({}); running all of them", tenant, e.what());
      }
      std::erase_if(jobs, [&](const JobSpec* j) {
        auto it = since.find(j->name);
        return it != since.end() && it->second < j->every_seconds;
      });
    }
    // A report job declared for some tenants only runs for those.
    std::erase_if(jobs, [&](const JobSpec* j) {
      return !j->only_tenants.empty() &&
             std::find(j->only_tenants.begin(), j->only_tenants.end(), tenant) == j->only_tenants.end();
    });
    for (const JobSpec* j : jobs) w.phases[j->parent.empty() ? 0 : 1].push_back(j);
    return w;
  };

  RunOptions job_options = options;  // with the progress reporter, when there is a terminal
  RunSummary summary;
  std::mutex mutex;
  std::condition_variable changed;
  const std::vector<std::int64_t> order = fleet.order(tenants);
  size_t next_tenant = 0;
  std::map<std::int64_t, TenantWork> active;
  struct Task {
    std::int64_t tenant;
    const JobSpec* spec;
  };
  // The fleet's connection (claims, releases, which jobs are due) is used by one worker at a time,
  // under its own mutex: the scheduler's lock is never held across database I/O (or a reconnect's
  // sleep), so the other workers go on taking jobs meanwhile.
  std::mutex fleet_mutex;
  int claiming = 0;  // workers between taking a tenant off `order` and adding its work
  // Under the lock: the next (tenant, job) to run; claims tenants as needed, releases finished ones.
  // Workers spread over tenants: each tenant has its own request budget, so jobs of several
  // tenants side by side do not queue behind one tenant's budget. A worker takes the active
  // tenant with work left and the fewest jobs running; when each of those already runs one and
  // tenants remain, it claims another tenant first.
  auto next_task = [&](std::unique_lock<std::mutex>& lock) -> std::optional<Task> {
    for (;;) {
      std::optional<std::int64_t> finished;
      std::map<std::int64_t, TenantWork>::iterator best = active.end();
      for (auto it = active.begin(); it != active.end(); ++it) {
        TenantWork& w = it->second;
        if (w.phase == 0 && w.next == w.phases[0].size() && w.running == 0) {
          w.phase = 1;
          w.next = 0;
        }
        if (w.next < w.phases[w.phase].size()) {
          if (best == active.end() || w.running < best->second.running) best = it;
        } else if (w.phase == 1 && w.running == 0) {
          finished = it->first;
        }
      }
      if (finished) {  // its lock goes back to the fleet first
        active.erase(*finished);
        lock.unlock();
        {
          std::lock_guard fleet_lock(fleet_mutex);
          fleet.release(*finished, !stop_requested());
        }
        lock.lock();
        continue;
      }
      const bool more_tenants = !stop_requested() && next_tenant < order.size();
      if (best != active.end() && (best->second.running == 0 || !more_tenants)) {
        TenantWork& w = best->second;
        return Task{best->first, w.phases[w.phase][w.next++]};
      }
      if (more_tenants) {
        const std::int64_t tenant = order[next_tenant++];
        ++claiming;
        lock.unlock();
        std::optional<TenantWork> work;
        {
          std::lock_guard fleet_lock(fleet_mutex);
          if (fleet.claim(tenant)) work = work_for(tenant);
        }
        lock.lock();
        --claiming;
        if (work) active.emplace(tenant, std::move(*work));
        changed.notify_all();
        continue;
      }
      if (best != active.end()) {
        TenantWork& w = best->second;
        return Task{best->first, w.phases[w.phase][w.next++]};
      }
      if (active.empty() && claiming == 0) return std::nullopt;
      changed.wait(lock);
    }
  };
  // One HTTP handle per worker, made before any thread starts: a failure to make one is this
  // run's error, not an exception in a thread.
  const size_t n_workers = std::max<size_t>(1, static_cast<size_t>(settings.parallel));
  std::vector<std::unique_ptr<CurlTransport>> transports;
  for (size_t i = 0; i < n_workers; ++i) transports.push_back(std::make_unique<CurlTransport>(curl_options(settings)));
  auto worker = [&](size_t index) {
    CurlTransport& transport = *transports[index];
    std::unique_ptr<PgConnection> db;
    std::unique_lock lock(mutex);
    while (std::optional<Task> task = next_task(lock)) {
      TenantWork& w = active.at(task->tenant);
      ++w.running;
      lock.unlock();
      JobResult result;
      result.tenant = task->tenant;
      result.job = task->spec->name;
      if (stop_requested()) {
        result.outcome = JobOutcome::skipped;
        result.error = fmt::format("not started: stopped by {}", stop_signal_name());
      } else if (auto it = unprepared.find(task->spec->name); it != unprepared.end()) {
        result.outcome = JobOutcome::failed;
        result.error_kind = ErrorKind::db_fault;
        result.error = it->second;
      } else {
        try {
          if (!db || !db->healthy()) db = connect(settings);
          if (task->spec->report) {
            ReportStore store(*db, settings.schema, *task->spec, w.session->tenant().id);
            ReportRun runner(settings, *task->spec, *w.session, transport, store, clock, job_options);
            result = runner.run();
          } else {
            JobStore store(*db, settings.schema, *task->spec, w.session->tenant().id, job_options.full_refresh);
            JobRun runner(settings, *task->spec, *w.session, transport, store, clock, job_options);
            result = runner.run();
          }
        } catch (const Error& e) {
          result.outcome = JobOutcome::failed;
          result.error_kind = e.kind();
          result.error = log::redact(e.what());
          log::error("job {} tenant {}: {}", result.job, result.tenant, result.error);
        } catch (const std::exception& e) {
          // A defect, not a condition of the data or the services: fail this job, keep the others.
          result.outcome = JobOutcome::failed;
          result.error = log::redact(fmt::format("unexpected error: {}", e.what()));
          log::error("job {} tenant {}: {}", result.job, result.tenant, result.error);
        }
      }
      lock.lock();
      summary.results.push_back(std::move(result));
      --active.at(task->tenant).running;
      changed.notify_all();
    }
    changed.notify_all();
  };
  // On a terminal, a line of progress (pages, rows, rows/s of the running jobs), redrawn every
  // second and erased at the end; never when stderr is a file, a pipe or a journal.
  struct Progress {
    std::int64_t pages = 0, rows = 0;
    double started = 0;
  };
  std::map<std::pair<std::int64_t, std::string>, Progress> progress;
  std::mutex progress_mutex;
  std::atomic<bool> done{false};
  std::thread painter;
  if (isatty(STDERR_FILENO) && !log::json() && !options.on_page) {
    job_options.on_page = [&](std::int64_t tenant, const std::string& job, std::int64_t pages, std::int64_t rows) {
      std::lock_guard lock(progress_mutex);
      Progress& p = progress[{tenant, job}];
      if (p.started == 0) p.started = real_clock().monotonic();
      p.pages = pages;
      p.rows = rows;
    };
    painter = std::thread([&] {
      while (!done.load()) {
        std::this_thread::sleep_for(std::chrono::seconds(1));
        std::string line;
        {
          std::lock_guard lock(progress_mutex);
          const double now = real_clock().monotonic();
          for (const auto& [key, p] : progress)
            line += fmt::format("  {} {}: {} pages, {} rows, {:.0f} rows/s", key.second, key.first, p.pages, p.rows,
                                p.rows / std::max(0.001, now - p.started));
          progress.clear();  // finished jobs leave the line; running ones report again
        }
        if (line.size() > 200) line = line.substr(0, 197) + "...";
        if (!line.empty()) log::progress(line);
      }
      log::progress("");
    });
  }
  std::vector<std::thread> threads;
  for (size_t i = 1; i < n_workers; ++i) threads.emplace_back(worker, i);
  worker(0);
  for (std::thread& t : threads) t.join();
  done = true;
  if (painter.joinable()) painter.join();

  // History older than keep_runs_days goes, at most once an hour per process (a daemon's rounds
  // do not pay a query each). Failing to prune is not failing the run.
  static std::atomic<double> last_prune{-1e18};
  if (settings.keep_runs_days > 0 && !stop_requested() && clock.monotonic() - last_prune.load() >= 3600) {
    last_prune = clock.monotonic();
    try {
      const std::int64_t pruned = fleet.prune_runs(settings.keep_runs_days);
      if (pruned > 0)
        log::event(log::Level::info, "runs_pruned", {{"runs", pruned}},
                   "pruned {} run record(s) older than {} day(s) (their counts are kept in sync_run_totals)", pruned,
                   settings.keep_runs_days);
    } catch (const Error& e) {
      log::warn("could not prune old run records: {}", e.what());
    }
  }

  // A tenant for which every job answered 403 has a wrong app key or an app without any of these
  // scopes: that is a failure, not a list of jobs it may skip.
  std::map<std::int64_t, std::pair<int, int>> per_tenant;  // tenant → (jobs, not permitted)
  for (const JobResult& r : summary.results) {
    auto& [jobs, denied] = per_tenant[r.tenant];
    ++jobs;
    if (r.outcome == JobOutcome::not_permitted) ++denied;
  }
  for (JobResult& r : summary.results) {
    const auto [jobs, denied] = per_tenant[r.tenant];
    if (r.outcome != JobOutcome::not_permitted || denied < jobs) continue;
    r.outcome = JobOutcome::failed;
    r.error_kind = ErrorKind::http_permanent;
    if (&r == &*std::find_if(summary.results.begin(), summary.results.end(),
                             [&](const JobResult& x) { return x.tenant == r.tenant; }))
      log::error("tenant {}: every job answered 403 (not permitted): the app key is wrong, or the tenant's app was "
                 "granted none of these APIs' scopes; check ST_APP_KEY and the app's scopes in ServiceTitan",
                 r.tenant);
  }
  summary.exit_code = exit_code_for(summary.results);
  if (std::any_of(summary.results.begin(), summary.results.end(),
                  [](const JobResult& r) { return r.outcome == JobOutcome::failed; })) {
    std::lock_guard lock(prepared_mutex);
    prepared.clear();  // the next round checks the migrations and tables again
  }
  if (stop_requested()) {
    log::warn("stopped by {}: pages read so far are committed; the next run resumes from them", stop_signal_name());
    summary.exit_code = 128 + stop_signal();
  }
  return summary;
}

}  // namespace stsync
