// Every catalogued resource, end to end: the generated job files against the sandbox serving the
// catalogue's endpoints, with a real PostgreSQL. One sandbox and one schema for all of them.
#include <catch2/catch.hpp>
#include <regex>
#include <fmt/format.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include "sandbox/catalogue.h"
#include "support.h"

using namespace stsync;
using namespace stsync::test;

namespace {

// One tenant with `rows` rows of every catalogued resource.
TestSandbox every_resource_sandbox(int rows) {
  sandbox::ServerOptions o = TestSandbox::default_options(rows, rows);
  o.data.tenants.clear();
  sandbox::TenantSetup t{kTenantA, {}};
  for (const sandbox::CatalogueResource& r : sandbox::catalogue()) t.counts[r.name] = rows;
  o.data.tenants.push_back(t);
  o.rate_limit_per_second = 500;
  return TestSandbox(o);
}

// Every job file built in, at a request rate that keeps a run of 140 jobs short.
std::map<std::string, std::string> all_jobs_env(const TestSandbox& sandbox, const TestSchema& schema) {
  return with_env(stsync_env(sandbox, schema, kTenantA),
                  {{"STSYNC_JOBS_DIR", ""}, {"STSYNC_REQUESTS_PER_SECOND", "60"}, {"STSYNC_PARALLEL", "4"}});
}

std::vector<JobSpec> enabled_jobs() {
  std::vector<JobSpec> out;
  for (JobSpec& j : load_job_specs(""))
    if (j.enabled) out.push_back(std::move(j));
  return out;
}

void require_every_job_equals_truth(TestSchema& schema, TestSandbox& sandbox) {
  for (const JobSpec& job : enabled_jobs()) {
    const std::vector<std::string> problems = compare_with_truth(schema, sandbox, job, kTenantA);
    INFO("job " << job.name);
    for (const std::string& p : problems) UNSCOPED_INFO(p);
    CHECK(problems.empty());
  }
}

}  // namespace

TEST_CASE("every job's full sync equals the sandbox's truth, an incremental run after churn equals it again, "
          "and a run with nothing new costs at most one request per job",
          "[resources]") {
  TestSandbox sandbox = every_resource_sandbox(30);
  TestSchema schema;
  const auto env = all_jobs_env(sandbox, schema);
  const std::vector<JobSpec> jobs = enabled_jobs();
  REQUIRE(jobs.size() > 130);

  ProcessResult first = run_stsync({"run"}, env);
  REQUIRE(first.exit_code == 0);
  require_every_job_equals_truth(schema, sandbox);
  // The equality is not vacuous for any shape: each of these tables holds rows.
  for (const char* table : {"customers",              // export feed, integer id
                            "journal_entries",        // list walk, GUID (text) id
                            "journal_entry_details",  // per-parent fan-out, no id (parent, position)
                            "payroll_settings",       // key from a field (employeeId)
                            "technician_ratings",     // key of two fields
                            "credit_memo_items",      // append-only, walked by createdOn
                            "form_submissions",       // append-only by another field (submittedOn)
                            "project_types",          // no date filter: read whole every run
                            "business_hours",         // one object, no paging
                            "job_history",            // nested: a job id with its events …
                            "job_history_entries",    // … as a child table
                            "customer_notes",         // per-parent, integer ids
                            "appointment_assignments"})  // export that hides inactive rows unless asked
    CHECK(schema.scalar(fmt::format("SELECT count(*) FROM {{s}}.{}", table)) > 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.appointment_assignments WHERE NOT active") > 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.zones WHERE NOT active") > 0);  // active=Any on a list walk

  // Churn in every resource (updates, deactivations, new rows; a child's change touches its
  // parent), then past the export visibility delay and the list walks' safety margin.
  for (const sandbox::CatalogueResource& r : sandbox::catalogue())
    sandbox.admin("changes", fmt::format("tenant={}&resource={}&n=6", kTenantA, r.name));
  sandbox.admin("clock", "advance_seconds=1000");
  ProcessResult second = run_stsync({"run"}, env);
  REQUIRE(second.exit_code == 0);
  require_every_job_equals_truth(schema, sandbox);
  CHECK(schema.scalar("SELECT sum(rows_updated) FROM {s}.sync_runs WHERE run_id > (SELECT max(run_id) - $1 "
                      "FROM {s}.sync_runs)",
                      {std::to_string(jobs.size())}) > 50);

  // Nothing new: every job asks once (per-parent jobs not at all: no parent changed), writes nothing.
  sandbox.admin("clock", "advance_seconds=60");
  const std::int64_t before = sandbox.stat(kTenantA, "requests");
  ProcessResult third = run_stsync({"run"}, with_env(env, {{"STSYNC_LOG_LEVEL", "debug"}}));
  REQUIRE(third.exit_code == 0);
  const std::int64_t requests = sandbox.stat(kTenantA, "requests") - before;
  std::map<std::string, int> gets;  // per job, from the debug log: which one asked more than once
  for (size_t pos = 0; (pos = third.err.find(": GET ", pos)) != std::string::npos; ++pos) {
    const size_t job = third.err.rfind(" job ", pos);
    gets[third.err.substr(job + 5, third.err.find(' ', job + 5) - job - 5)] += 1;
  }
  for (const auto& [job, n] : gets)
    if (n > 1) UNSCOPED_INFO("job " << job << ": " << n << " requests");
  std::int64_t fan_out_jobs = 0;
  for (const JobSpec& j : jobs) fan_out_jobs += j.parent.empty() ? 0 : 1;
  CHECK(requests == static_cast<std::int64_t>(jobs.size()) - fan_out_jobs);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE run_id > (SELECT max(run_id) - $1 FROM {s}.sync_runs) "
                      "AND rows_inserted + rows_updated > 0",
                      {std::to_string(jobs.size())}) == 0);
  require_every_job_equals_truth(schema, sandbox);
}

TEST_CASE("against the sandbox that enforces ServiceTitan's published contract two tenants pass check and every "
          "default job and after churn and hard deletes a reconcile leaves every table exact with the deleted rows marked",
          "[resources][contract]") {
  constexpr std::int64_t kTenantB = 1002;
  sandbox::ServerOptions o = TestSandbox::default_options(8, 8);
  o.data.tenants.clear();
  std::string tenants;
  for (std::int64_t id : {kTenantA, kTenantB}) {
    sandbox::TenantSetup t{id, {}};
    for (const sandbox::CatalogueResource& r : sandbox::catalogue()) t.counts[r.name] = 8;
    o.data.tenants.push_back(t);
    tenants += fmt::format("[[tenants]]\nid = {}\nclient_id = \"{}\"\nclient_secret = \"{}\"\n", id,
                           sandbox::sandbox_client_id(id), sandbox::sandbox_client_secret(id));
  }
  o.rate_limit_per_second = 500;
  TestSandbox sandbox(o);
  TestSchema schema;
  auto env = all_jobs_env(sandbox, schema);
  for (const char* k : {"ST_TENANT_ID", "ST_CLIENT_ID", "ST_CLIENT_SECRET"}) env.erase(k);
  env["STSYNC_TENANTS_FILE"] = write_temp_file(tenants);
  auto require_exact = [&] {
    for (std::int64_t tenant : {kTenantA, kTenantB})
      for (const JobSpec& job : enabled_jobs()) {
        const std::vector<std::string> problems = compare_with_truth(schema, sandbox, job, tenant);
        INFO("job " << job.name << " tenant " << tenant);
        for (const std::string& p : problems) UNSCOPED_INFO(p);
        CHECK(problems.empty());
      }
  };

  ProcessResult check = run_stsync({"check"}, env);
  INFO(check.out << check.err);
  CHECK(check.exit_code == 0);
  CHECK(check.out.find("2 authenticated, 0 refused") != std::string::npos);
  CHECK(check.out.find(" 0 not permitted, 0 failed") != std::string::npos);
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  require_exact();

  // Churn everywhere; hard deletes in an export resource that is a parent (customers: its notes
  // go with it), a list-walked one (zones) and one whose listing needs a filter (contacts).
  std::map<std::string, std::vector<std::string>> deleted;  // "tenant resource" → keys
  for (std::int64_t tenant : {kTenantA, kTenantB}) {
    for (const sandbox::CatalogueResource& r : sandbox::catalogue())
      sandbox.admin("changes", fmt::format("tenant={}&resource={}&n=3", tenant, r.name));
    for (const char* r : {"customers", "zones", "customer_contacts"}) {
      const std::string body = sandbox.admin("deletes", fmt::format("tenant={}&resource={}&n=2", tenant, r));
      std::vector<std::string> keys;
      static const std::regex key(R"re("([^"]+)")re");
      for (auto it = std::sregex_iterator(body.begin() + static_cast<long>(body.find('[')), body.end(), key);
           it != std::sregex_iterator(); ++it)
        keys.push_back((*it)[1]);
      REQUIRE(keys.size() == 2);
      deleted[fmt::format("{} {}", tenant, r)] = keys;
    }
  }
  sandbox.admin("clock", "advance_seconds=1000");
  // A routine run sees the changes; the deletes need the sweep (due every reconcile_every).
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.customers WHERE deleted_at IS NOT NULL") == 0);
  ProcessResult reconcile = run_stsync({"run", "--reconcile"}, env);
  INFO(reconcile.err.substr(reconcile.err.size() > 4000 ? reconcile.err.size() - 4000 : 0));
  REQUIRE(reconcile.exit_code == 0);
  require_exact();
  for (const auto& [what, keys] : deleted) {
    const std::int64_t tenant = std::stoll(what.substr(0, what.find(' ')));
    const std::string table = what.substr(what.find(' ') + 1);
    INFO(what);
    CHECK(schema.scalar(fmt::format("SELECT count(*) FROM {{s}}.{} WHERE tenant_id = $1 AND deleted_at IS NOT NULL "
                                    "AND id::text = ANY(string_to_array($2, ','))",
                                    table),
                        {std::to_string(tenant), keys[0] + "," + keys[1]}) == 2);
    CHECK(schema.scalar(fmt::format("SELECT count(*) FROM {{s}}.{} WHERE tenant_id = $1 AND deleted_at IS NOT NULL",
                                    table),
                        {std::to_string(tenant)}) == 2);
  }
  // Every parameter any request carried is one its operation declares (a misspelt filter would
  // be ignored by the real API and filter nothing).
  CHECK(sandbox.admin("undeclared-params", "", false) == "[]");
}

TEST_CASE("rows a list-only resource stops returning get deleted_at, never a DELETE, and are cleared when they "
          "come back",
          "[resources][deletes]") {
  TestSandbox sandbox = every_resource_sandbox(40);
  TestSchema schema;
  // project_types has no date filter (read whole every run); zones and vendors are walked by
  // modifiedOn and swept for deletes every reconcile_every (or --reconcile). vendors confirms a
  // row is gone by asking for it by id, in the form its contract types ids: an array, sent as
  // the parameter repeated (the sandbox refuses a comma list there, as the API does).
  const auto env = with_env(all_jobs_env(sandbox, schema), {});
  const std::vector<std::string> run = {"run", "--jobs", "project_types,zones,vendors"};
  REQUIRE(run_stsync(run, env).exit_code == 0);
  const std::int64_t project_types = schema.scalar("SELECT count(*) FROM {s}.project_types");
  const std::int64_t zones = schema.scalar("SELECT count(*) FROM {s}.zones");
  REQUIRE(project_types == 40);

  auto deleted_keys = [&](const std::string& resource) {
    const std::string body = sandbox.admin("deletes", fmt::format("tenant={}&resource={}&n=3", kTenantA, resource));
    std::vector<std::string> keys;
    for (size_t pos = 0; (pos = body.find('"', body.find('[') + 1 + pos)) != std::string::npos && keys.size() < 3;) {
      const size_t end = body.find('"', pos + 1);
      keys.push_back(body.substr(pos + 1, end - pos - 1));
      pos = end + 1 - (body.find('[') + 1);
    }
    return keys;
  };
  const std::vector<std::string> gone_types = deleted_keys("project_types");
  const std::vector<std::string> gone_zones = deleted_keys("zones");
  const std::vector<std::string> gone_vendors = deleted_keys("vendors");
  REQUIRE(gone_types.size() == 3);
  REQUIRE(gone_zones.size() == 3);
  REQUIRE(gone_vendors.size() == 3);
  auto marked = [&](const std::string& table, const std::vector<std::string>& keys) {
    std::string list;
    for (const std::string& k : keys) list += (list.empty() ? "" : ",") + k;
    return std::pair(schema.scalar(fmt::format("SELECT count(*) FROM {{s}}.{} WHERE deleted_at IS NOT NULL", table)),
                     schema.scalar(fmt::format("SELECT count(*) FROM {{s}}.{} WHERE deleted_at IS NOT NULL AND "
                                               "id = ANY(string_to_array($1, ',')::bigint[])",
                                               table),
                                   {list}));
  };

  // A routine run: the full listing notices at once; the modifiedOn walk cannot see a delete.
  sandbox.admin("clock", "advance_seconds=120");
  REQUIRE(run_stsync(run, env).exit_code == 0);
  CHECK(marked("project_types", gone_types) == std::pair<std::int64_t, std::int64_t>(3, 3));
  CHECK(marked("zones", gone_zones).first == 0);
  // The sweep (due every reconcile_every; forced here) marks exactly the rows that went.
  REQUIRE(run_stsync({"run", "--jobs", "project_types,zones,vendors", "--reconcile"}, env).exit_code == 0);
  CHECK(marked("zones", gone_zones) == std::pair<std::int64_t, std::int64_t>(3, 3));
  CHECK(marked("vendors", gone_vendors) == std::pair<std::int64_t, std::int64_t>(3, 3));
  // Nothing is ever removed.
  CHECK(schema.scalar("SELECT count(*) FROM {s}.project_types") == project_types);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.zones") == zones);
  for (const char* job : {"project_types", "zones"}) {
    const auto problems = compare_with_truth(schema, sandbox, builtin_job(job), kTenantA);
    for (const std::string& p : problems) UNSCOPED_INFO(p);
    CHECK(problems.empty());
  }

  // They come back unchanged (same modifiedOn): the next complete listing clears deleted_at.
  sandbox.admin("deletes", fmt::format("tenant={}&resource=project_types&n=3&restore=1", kTenantA));
  sandbox.admin("deletes", fmt::format("tenant={}&resource=zones&n=3&restore=1", kTenantA));
  REQUIRE(run_stsync({"run", "--jobs", "project_types,zones", "--reconcile"}, env).exit_code == 0);
  CHECK(marked("project_types", gone_types).first == 0);
  CHECK(marked("zones", gone_zones).first == 0);
  for (const char* job : {"project_types", "zones"}) CHECK(compare_with_truth(schema, sandbox, builtin_job(job), kTenantA).empty());
}

TEST_CASE("a job the tenant's app may not read is 'not permitted' and exit 0 unless the user named it: then exit 1",
          "[resources][scopes]") {
  TestSandbox sandbox;
  TestSchema schema;
  const auto env = stsync_env(sandbox, schema, kTenantA);  // invoices and employees
  sandbox.admin("scopes", fmt::format("tenant={}&deny=employees", kTenantA));

  ProcessResult r = run_stsync({"run"}, env);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("job employees tenant 1001: not permitted (403)") != std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'employees' AND outcome = 'not_permitted'") == 1);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'invoices' AND outcome = 'succeeded'") == 1);
  ProcessResult status = run_stsync({"status", "--by-job"}, env);
  CHECK(status.out.find("not_permitted") != std::string::npos);

  // Asked for by name (--jobs, or enabled = true in the config): a failure.
  CHECK(run_stsync({"run", "--jobs", "employees"}, env).exit_code == 1);
  const std::string config = write_temp_file("[jobs.employees]\nenabled = true\n");
  CHECK(run_stsync({"--config", config, "run"}, env).exit_code == 1);

  // `stsync check` says which jobs the app may read.
  ProcessResult check = run_stsync({"check", "--verbose"}, env);
  CHECK(check.out.find("DENY  tenant 1001 job employees: not permitted (403)") != std::string::npos);
  CHECK(check.out.find("ok    tenant 1001 job invoices: permitted") != std::string::npos);
}

TEST_CASE("stsync jobs lists every job with its table, mode, key, endpoint, enabled flag and last result",
          "[resources][cli]") {
  TestSandbox sandbox;
  TestSchema schema;
  const auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_JOBS_DIR", ""}});
  REQUIRE(run_stsync({"run", "--jobs", "payroll_settings"}, env).exit_code == 0);
  ProcessResult text = run_stsync({"jobs"}, env);
  REQUIRE(text.exit_code == 0);
  CHECK(std::count(text.out.begin(), text.out.end(), '\n') == 145);  // a header and 144 jobs
  // What the README lists: cadence, parent and child tables too.
  CHECK(text.out.find("JOB (= TABLE)                      MODE     ENABLED EVERY KEY") == 0);
  CHECK(text.out.find("PARENT") != std::string::npos);
  CHECK(text.out.find("CHILD TABLES") != std::string::npos);
  CHECK(std::regex_search(text.out, std::regex("\ninvoices +export +yes +[0-9]+[smh] +id +- +invoices_items")));
  CHECK(std::regex_search(text.out, std::regex("\njournal_entry_details +full +[a-z]+ +[0-9]+[smh] .* journal_entries ")));
  ProcessResult json = run_stsync({"jobs", "--json"}, env);
  REQUIRE(json.exit_code == 0);
  CHECK(json.out.find(R"({"job":"payroll_settings","table":"payroll_settings","mode":"export","key":"employeeId")") !=
        std::string::npos);
  CHECK(json.out.find(R"("last_result":"succeeded")") != std::string::npos);
  CHECK(json.out.find(R"x({"job":"journal_entry_details","table":"journal_entry_details","mode":"full","key":"(parent, position)","parent":"journal_entries")x") !=
        std::string::npos);
  CHECK(json.out.find(R"({"job":"ads_performance","table":"ads_performance","mode":"full")") != std::string::npos);
  CHECK(json.out.find(R"("enabled":false)") != std::string::npos);
}

namespace {

// 50 tenants with two small jobs each, behind a sandbox that takes `latency_ms` per call.
struct Fleet50 {
  static constexpr int kTenants = 50;
  TestSandbox sandbox;
  TestSchema schema;
  std::string config;
  explicit Fleet50(int latency_ms) : sandbox(options(latency_ms)) {
    std::string tenants;
    for (int i = 0; i < kTenants; ++i)
      tenants += fmt::format("[[tenants]]\nid = {}\nclient_id = \"{}\"\nclient_secret = \"{}\"\n", 5000 + i,
                             sandbox::sandbox_client_id(5000 + i), sandbox::sandbox_client_secret(5000 + i));
    config = write_temp_file(fmt::format("[servicetitan]\napp_key = \"sandbox-app-key\"\nauth_url = \"{0}\"\n"
                                         "api_url = \"{0}\"\nrequests_per_second = 20\n[database]\nschema = \"{1}\"\n"
                                         "[run]\nparallel = 2\n{2}",
                                         sandbox.url(), schema.name(), tenants));
  }
  static sandbox::ServerOptions options(int latency_ms) {
    sandbox::ServerOptions o = TestSandbox::default_options(0, 0);
    o.data.tenants.clear();
    for (int i = 0; i < kTenants; ++i) o.data.tenants.push_back({5000 + i, {{"invoices", 30}, {"employees", 10}}});
    o.latency_ms = latency_ms;
    o.rate_limit_per_second = 20;
    return o;
  }
  std::map<std::string, std::string> env() const {
    return {{"DATABASE_URL", database_url()}, {"STSYNC_JOBS_DIR", two_job_dir()}};
  }
  // Runs `n` processes at once; returns the wall time and their exit codes. With
  // `kill_one_after_jobs`, the first process is killed once that many jobs of the round ended.
  std::pair<double, std::vector<int>> round(int n, int kill_one_after_jobs = 0) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::unique_ptr<Process>> ps;
    for (int i = 0; i < n; ++i) ps.push_back(std::make_unique<Process>(
        std::vector<std::string>{STSYNC_BINARY, "--config", config, "run"}, env()));
    if (kill_one_after_jobs > 0) {
      const std::int64_t before = finished_runs(schema);
      REQUIRE(wait_until([&] { return finished_runs(schema) >= before + kill_one_after_jobs; }));
      ps[0]->kill_hard();
    }
    std::vector<int> codes;
    for (auto& p : ps) codes.push_back(p->wait().exit_code);
    return {std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), codes};
  }
  void require_exact() {
    for (int i = 0; i < kTenants; ++i)
      for (const char* job : {"invoices", "employees"}) {
        const auto problems = compare_with_truth(schema, sandbox, builtin_job(job), 5000 + i);
        INFO("tenant " << 5000 + i << " job " << job);
        for (const std::string& p : problems) UNSCOPED_INFO(p);
        CHECK(problems.empty());
      }
  }
};

}  // namespace

TEST_CASE("a fleet of four processes with one config syncs every tenant once per round, within each tenant's "
          "budget, and reports how much faster than one process",
          "[fleet]") {
  Fleet50 one(40);
  const auto [alone, alone_codes] = one.round(1);
  CHECK(alone_codes == std::vector<int>{0});
  one.require_exact();

  Fleet50 four(40);
  const auto [together, codes] = four.round(4);
  CHECK(codes == std::vector<int>{0, 0, 0, 0});
  // Every (tenant, job) walked exactly once in the round, by one of the processes.
  CHECK(four.schema.scalar("SELECT count(*) FROM {s}.sync_runs") == 2 * Fleet50::kTenants);
  CHECK(four.schema.scalar("SELECT count(*) FROM (SELECT tenant_id, job FROM {s}.sync_runs GROUP BY 1, 2 "
                           "HAVING count(*) > 1) x") == 0);
  CHECK(four.schema.scalar("SELECT count(DISTINCT holder) FROM {s}.fleet_tenants") >= 3);  // the work was shared
  for (int i = 0; i < Fleet50::kTenants; ++i) {
    INFO("tenant " << 5000 + i);
    CHECK(four.sandbox.stat(5000 + i, "throttled") == 0);
    CHECK(four.sandbox.stat(5000 + i, "max_per_second") <= 20);
  }
  four.require_exact();
  const double ratio = together / alone;
  WARN(fmt::format("fleet round: one process {:.1f} s, four processes {:.1f} s (ratio {:.2f})", alone, together, ratio));
  // Reported, not asserted: speed is measured, never asserted by a test (under ASan on 2 cores the
  // ratio is ~0.55; in the Release build ~0.35).
}

TEST_CASE("a fleet process killed mid-round leaves its tenants to the others and the next round, exact", "[fleet]") {
  Fleet50 f(40);
  const auto [seconds, codes] = f.round(4, 10);  // killed once 10 of the round's 100 jobs ended
  CHECK(codes[0] == 128 + SIGKILL);
  CHECK(codes[1] == 0);
  CHECK(codes[2] == 0);
  CHECK(codes[3] == 0);
  // The next round (cron's next minute): every tenant complete and exact.
  const auto [again, again_codes] = f.round(2);
  CHECK(again_codes == std::vector<int>{0, 0});
  f.require_exact();
  CHECK(f.schema.scalar("SELECT count(*) FROM {s}.fleet_tenants WHERE round_finished_at IS NULL") == 0);
}
