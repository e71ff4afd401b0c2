#include "check.h"

#include <fmt/format.h>

#include "connect.h"
#include "exit_status.h"
#include "figures.h"
#include "log.h"
#include "scheduler.h"
#include "st_client.h"

namespace stsync {

std::vector<std::string> check_connectivity(const Settings& settings, const CheckOptions& options, int& exit_code) {
  std::vector<std::string> lines;
  exit_code = kExitSuccess;
  auto say = [&](bool always, std::string line) {
    if (always || options.verbose) lines.push_back(std::move(line));
  };
  // The database first: without it no job can run, whatever the API says.
  std::string database = "PostgreSQL ok";
  try {
    say(false, "ok    PostgreSQL: " + describe_connection(*connect(settings)));
  } catch (const Error& e) {
    say(true, fmt::format("FAIL  PostgreSQL: {}", log::redact(e.what())));
    database = "PostgreSQL FAILED";
    exit_code = kExitDatabase;
  }
  RunOptions selection;
  selection.tenant = options.tenant;
  const std::vector<TenantConfig> tenants = selected_tenants(settings, selection);
  const std::vector<JobSpec> all = resolve_jobs(settings);
  CurlTransport transport(curl_options(settings));
  int authenticated = 0, rejected = 0, permitted = 0, denied = 0, failed = 0, via_parent = 0;
  for (const TenantConfig& t : tenants) {
    TenantSession session(t, settings.requests_per_second, real_clock());
    RetryBudget budget(settings.retry_budget_seconds);
    ServiceTitanClient client(settings, session, transport, real_clock(), budget);
    try {
      client.access_token(true);
      ++authenticated;
      say(false, fmt::format("ok    ServiceTitan tenant {}: credentials accepted by {}", t.id, settings.auth_url));
    } catch (const Error& e) {
      ++rejected;
      say(true, fmt::format("FAIL  ServiceTitan tenant {}: {}", t.id, log::redact(e.what())));
      if (exit_code == kExitSuccess)
        exit_code = e.kind() == ErrorKind::auth_rejected ? kExitAuthRejected : kExitJobFailed;
      continue;
    }
    // The jobs this tenant runs: its own list, else every enabled job. One small request per job:
    // which APIs the tenant's app may read. A per-parent job is read through its parent's scope;
    // its own endpoint needs a parent id.
    std::vector<const JobSpec*> jobs;
    for (const JobSpec& spec : all)
      if ((t.jobs.empty() ? spec.enabled : std::find(t.jobs.begin(), t.jobs.end(), spec.name) != t.jobs.end()) &&
          (spec.only_tenants.empty() ||
           std::find(spec.only_tenants.begin(), spec.only_tenants.end(), t.id) != spec.only_tenants.end()))
        jobs.push_back(&spec);
    int tenant_permitted = 0, tenant_denied = 0;
    for (const JobSpec* spec : jobs) {
      if (!spec->parent.empty()) {
        ++via_parent;
        say(false, fmt::format("-     tenant {} job {}: per-parent (probed through job {})", t.id, spec->name,
                               spec->parent));
        continue;
      }
      // The endpoint the job reads, asked as the job asks it (an export-mode job's export: some
      // list endpoints refuse a request without filters the job never needs).
      // A report job: its description (a run of the report would spend one of its 5 a minute).
      const bool exports = spec->mode == SyncMode::export_feed && !spec->export_path.empty();
      std::string path;
      if (spec->report)
        path = fmt::format("reporting/v2/tenant/{}/report-category/{}/reports/{}", t.id,
                           url_encode(spec->report->category), spec->report->id);
      else if (exports)
        path = tenant_path(spec->export_path, t.id) + "?includeRecentChanges=false";
      else
        path = JobSpec::with_query(tenant_path(spec->list_path, t.id),
                                   spec->list_query_prefix() +
                                       (spec->response == ResponseShape::paged ? spec->paging(1, 1, false) : ""));
      try {
        client.get(path, fmt::format("job {} tenant {} probe", spec->name, t.id));
        ++tenant_permitted;
        say(false, fmt::format("ok    tenant {} job {}: permitted", t.id, spec->name));
      } catch (const Error& e) {
        if (lacks_scope(e)) {
          ++tenant_denied;
          say(true, fmt::format("DENY  tenant {} job {}: not permitted (403): the app lacks this API's scope; "
                                "grant it in ServiceTitan or set [jobs.{}] enabled = false",
                                t.id, spec->name, spec->name));
        } else {
          ++failed;
          say(true, fmt::format("FAIL  tenant {} job {}: {}", t.id, spec->name, log::redact(e.what())));
          if (exit_code == kExitSuccess) exit_code = kExitJobFailed;
        }
      }
    }
    permitted += tenant_permitted;
    denied += tenant_denied;
    say(false, fmt::format("      tenant {}: {} job(s) permitted, {} not permitted", t.id, tenant_permitted,
                           tenant_denied));
  }
  lines.push_back(fmt::format("check: {}; {} tenant(s): {} authenticated, {} refused; {} job probe(s): {} permitted, "
                              "{} not permitted, {} failed{}",
                              database, tenants.size(), authenticated, rejected, permitted + denied + failed,
                              permitted, denied, failed,
                              via_parent ? fmt::format(" ({} per-parent job(s) read through their parent)", via_parent)
                                         : std::string()));
  return lines;
}

}  // namespace stsync
