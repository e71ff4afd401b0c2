#include "runner.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <thread>

#include "exit_status.h"
#include "http.h"
#include "log.h"
#include "migrate.h"
#include "stop.h"

namespace stsync {
namespace {

CurlOptions curl_options(const Settings& s) {
  CurlOptions o;
  o.timeout_seconds = s.timeout_seconds;
  o.connect_timeout_seconds = s.connect_timeout_seconds;
  o.tls_verify = s.tls_verify;
  o.ca_file = s.ca_file;
  o.max_body_bytes = s.max_response_bytes;
  return o;
}

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

}  // namespace

int exit_code_for(const std::vector<JobResult>& results) {
  int code = kExitSuccess;
  for (const JobResult& r : results) {
    if (r.outcome != JobOutcome::failed) continue;
    if (r.error_kind == ErrorKind::auth_rejected) return kExitAuthRejected;
    if (r.error_kind == ErrorKind::config) return kExitUsage;
    if (r.error_kind == ErrorKind::db_unavailable) code = kExitDatabase;
    else if (code == kExitSuccess) code = kExitJobFailed;
  }
  return code;
}

RunSummary run_jobs(const Settings& settings, const RunOptions& options, Clock& clock) {
  std::vector<JobSpec> specs = resolve_jobs(settings);
  if (!options.jobs.empty()) {
    std::vector<JobSpec> chosen;
    for (const std::string& name : options.jobs) {
      auto it = std::find_if(specs.begin(), specs.end(), [&](const JobSpec& j) { return j.name == name; });
      if (it == specs.end())
        throw Error(ErrorKind::config, fmt::format("--jobs: unknown job '{}' (`stsync jobs` lists them)", name));
      chosen.push_back(*it);
      chosen.back().named = true;
    }
    specs = std::move(chosen);
  } else {
    std::erase_if(specs, [](const JobSpec& j) { return !j.enabled; });
  }
  // Per-parent jobs fan out over their parent's table: queue them after every other job.
  std::stable_partition(specs.begin(), specs.end(), [](const JobSpec& j) { return j.parent.empty(); });
  const std::vector<TenantConfig> tenants = selected_tenants(settings, options);
  if (settings.app_key.empty())
    throw Error(ErrorKind::config, "no app key: set ST_APP_KEY or servicetitan.app_key");
  if (!settings.tls_verify)
    log::warn("TLS certificate verification is OFF (tls_verify = false): use only for testing");
  std::map<std::string, std::string> unprepared;  // job → why its table could not be altered
  {
    PgConnection db(settings.database_url, session_options(settings));
    apply_migrations(db, settings.schema);
    unprepared = ensure_job_tables(db, settings.schema, specs);
  }
  for (const auto& [job, why] : unprepared) log::error("job {}: {}", job, why);

  std::map<std::int64_t, std::unique_ptr<TenantSession>> sessions;
  for (const TenantConfig& t : tenants)
    sessions[t.id] = std::make_unique<TenantSession>(t, settings.requests_per_second, clock);
  struct Task {
    TenantSession* session;
    const JobSpec* spec;
  };
  std::vector<Task> tasks;
  for (const TenantConfig& t : tenants)
    for (const JobSpec& spec : specs) tasks.push_back({sessions[t.id].get(), &spec});

  RunSummary summary;
  summary.results.resize(tasks.size());
  std::atomic<size_t> next{0};
  size_t phase_end = tasks.size();
  auto worker = [&] {
    CurlTransport transport(curl_options(settings));
    std::unique_ptr<PgConnection> db;
    for (size_t i; (i = next.fetch_add(1)) < phase_end;) {
      const Task& task = tasks[i];
      JobResult& result = summary.results[i];
      result.tenant = task.session->tenant().id;
      result.job = task.spec->name;
      if (stop_requested()) {
        result.outcome = JobOutcome::skipped;
        result.error = fmt::format("not started: stopped by {}", stop_signal_name());
        continue;
      }
      if (auto it = unprepared.find(task.spec->name); it != unprepared.end()) {
        result.outcome = JobOutcome::failed;
        result.error_kind = ErrorKind::db_fault;
        result.error = it->second;
        continue;
      }
      try {
        if (!db || !db->healthy()) db = std::make_unique<PgConnection>(settings.database_url, session_options(settings));
        JobRunner runner(settings, *task.spec, *task.session, transport, *db, clock, options);
        result = runner.run();
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
  };
  // Two phases: per-parent jobs read their parents' tables, so they start once every other job
  // of the run is done (a parent changed in this run is fanned out in this run).
  const size_t first_phase = static_cast<size_t>(
      std::count_if(tasks.begin(), tasks.end(), [](const Task& t) { return t.spec->parent.empty(); }));
  for (const auto& [begin, end] : {std::pair<size_t, size_t>{0, first_phase}, {first_phase, tasks.size()}}) {
    if (begin == end) continue;
    next = begin;
    phase_end = end;
    const size_t n_workers = std::min<size_t>(static_cast<size_t>(settings.parallel), end - begin);
    std::vector<std::thread> threads;
    for (size_t i = 1; i < n_workers; ++i) threads.emplace_back(worker);
    worker();
    for (std::thread& t : threads) t.join();
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
  if (stop_requested()) {
    log::warn("stopped by {}: pages read so far are committed; the next run resumes from them", stop_signal_name());
    summary.exit_code = 128 + stop_signal();
  }
  return summary;
}

std::vector<std::string> check_connectivity(const Settings& settings, int& exit_code) {
  std::vector<std::string> lines;
  exit_code = kExitSuccess;
  if (settings.tenants.empty())
    throw Error(ErrorKind::config, "no tenant configured: set ST_TENANT_ID, ST_CLIENT_ID and ST_CLIENT_SECRET");
  CurlTransport transport(curl_options(settings));
  for (const TenantConfig& t : settings.tenants) {
    TenantSession session(t, settings.requests_per_second, real_clock());
    RetryBudget budget(settings.retry_budget_seconds);
    ServiceTitanClient client(settings, session, transport, real_clock(), budget);
    try {
      client.access_token(true);
      lines.push_back(fmt::format("ok    ServiceTitan tenant {}: credentials accepted by {}", t.id,
                                  settings.auth_url));
    } catch (const Error& e) {
      lines.push_back(fmt::format("FAIL  ServiceTitan tenant {}: {}", t.id, log::redact(e.what())));
      if (exit_code == kExitSuccess)
        exit_code = e.kind() == ErrorKind::auth_rejected ? kExitAuthRejected : kExitJobFailed;
      continue;
    }
    // One small request per enabled job: which APIs the tenant's app may read. A per-parent job
    // is read through its parent's scope; its own endpoint needs a parent id.
    int permitted = 0, denied = 0;
    for (const JobSpec& spec : resolve_jobs(settings)) {
      if (!spec.enabled) continue;
      if (!spec.parent.empty()) {
        lines.push_back(fmt::format("-     tenant {} job {}: per-parent (probed through job {})", t.id, spec.name,
                                    spec.parent));
        continue;
      }
      std::string path = spec.list_path.empty() ? spec.export_path : spec.list_path;
      const size_t pos = path.find("{tenant}");
      if (pos != std::string::npos) path.replace(pos, 8, std::to_string(t.id));
      if (spec.list_path.empty()) path += "?includeRecentChanges=false";
      else if (spec.response == ResponseShape::paged) path += "?page=1&pageSize=1";
      try {
        client.get(path, fmt::format("job {} tenant {} probe", spec.name, t.id));
        ++permitted;
        lines.push_back(fmt::format("ok    tenant {} job {}: permitted", t.id, spec.name));
      } catch (const Error& e) {
        if (e.http_status() == 403) {
          ++denied;
          lines.push_back(fmt::format("DENY  tenant {} job {}: not permitted (403): the app lacks this API's scope; "
                                      "grant it in ServiceTitan or set [jobs.{}] enabled = false",
                                      t.id, spec.name, spec.name));
        } else {
          lines.push_back(fmt::format("FAIL  tenant {} job {}: {}", t.id, spec.name, log::redact(e.what())));
          if (exit_code == kExitSuccess) exit_code = kExitJobFailed;
        }
      }
    }
    lines.push_back(fmt::format("      tenant {}: {} job(s) permitted, {} not permitted", t.id, permitted, denied));
  }
  try {
    PgConnection db(settings.database_url, session_options(settings));
    PgResult r = db.exec("SELECT current_database(), current_user, version()");
    lines.push_back(fmt::format("ok    PostgreSQL: database {} as {}", r.get(0, 0), r.get(0, 1)));
  } catch (const Error& e) {
    lines.push_back(fmt::format("FAIL  PostgreSQL: {}", log::redact(e.what())));
    if (exit_code == kExitSuccess) exit_code = kExitDatabase;
  }
  return lines;
}

}  // namespace stsync
