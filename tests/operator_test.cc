// What an operator reads (issue 21): one summary line per run, staleness per cadence, suggestions
// for slips, settings that say where they came from.
#include <catch2/catch.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <fmt/format.h>

#include "support.h"

using namespace stsync;
using namespace stsync::test;

TEST_CASE("a run ends with one summary line, and a --due run with nothing due says so", "[operator][cli]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  ProcessResult first = run_stsync({"run"}, env);
  REQUIRE(first.exit_code == 0);
  CHECK(first.err.find("run: 2 job(s): 2 succeeded; 720 row(s) inserted, 0 updated; ") != std::string::npos);
  // Every request the sandbox answered, the token's included, is counted in the summary.
  CHECK(first.err.find(fmt::format("; {} request(s); ", sandbox.stat(kTenantA, "requests") +
                                                          sandbox.stat(kTenantA, "token_requests"))) != std::string::npos);
  ProcessResult idle = run_stsync({"run", "--due"}, env);
  CHECK(idle.exit_code == 0);
  CHECK(idle.err.find("run: nothing was due") != std::string::npos);
}

TEST_CASE("status --fail-if-stale without a duration judges each job against its own cadence", "[operator][status]") {
  TestSandbox sandbox;
  TestSchema schema;
  const std::string config = write_temp_file("[jobs.invoices]\nevery = \"6h\"\n[jobs.employees]\nevery = \"1h\"\n");
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_CONFIG", config}});
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  // Both last succeeded three hours ago: late for an hourly job, not for a 6-hourly one.
  schema.db().exec(fmt::format("UPDATE {}.sync_state SET last_success_at = now() - interval '3 hours'",
                               schema.db().quote_ident(schema.name())));
  ProcessResult own = run_stsync({"status", "--fail-if-stale"}, env);
  CHECK(own.exit_code == 1);
  CHECK(own.err.find("job employees") != std::string::npos);
  CHECK(own.err.find("job invoices") == std::string::npos);
  ProcessResult fixed = run_stsync({"status", "--fail-if-stale", "2h"}, env);
  CHECK(fixed.exit_code == 1);
  CHECK(fixed.err.find("job invoices") != std::string::npos);
  CHECK(run_stsync({"status", "--fail-if-stale", "4h"}, env).exit_code == 0);
}

TEST_CASE("status shows one line per tenant, and --tenant, --job, --failed and --stale list the jobs",
          "[operator][status]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  auto big = stsync_env(sandbox, schema, kTenantBig);
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  REQUIRE(run_stsync({"run"}, big).exit_code == 0);
  // Tenant A: employees failing (an error that stands) and invoices stale; the big tenant healthy.
  PgConnection& db = schema.db();
  const std::string s = db.quote_ident(schema.name());
  db.exec(fmt::format("UPDATE {}.sync_state SET last_error = 'job employees tenant 1001: boom' WHERE tenant_id = 1001 "
                      "AND job = 'employees'",
                      s));
  db.exec(fmt::format("UPDATE {}.sync_state SET last_success_at = now() - interval '3 days' WHERE tenant_id = 1001 AND "
                      "job = 'invoices'",
                      s));
  ProcessResult tenants = run_stsync({"status"}, env);
  REQUIRE(tenants.exit_code == 0);
  INFO(tenants.out);
  // A header, one line per tenant, one summary line: nothing per job.
  CHECK(std::count(tenants.out.begin(), tenants.out.end(), '\n') == 4);
  CHECK(tenants.out.find("TENANT") == 0);
  const size_t a = tenants.out.find("\n1001 "), b = tenants.out.find("\n9007199254740993 ");
  REQUIRE(a != std::string::npos);
  REQUIRE(b != std::string::npos);
  const std::string line_a = tenants.out.substr(a + 1, tenants.out.find('\n', a + 1) - a - 1);
  const std::string line_b = tenants.out.substr(b + 1, tenants.out.find('\n', b + 1) - b - 1);
  CHECK(line_a.find("employees, invoices") != std::string::npos);  // what needs attention, by name
  CHECK(line_b.find("invoices") == std::string::npos);
  CHECK(tenants.out.find("2 tenant(s), 4 job(s): 2 ok, 1 failing, 1 stale, 0 not permitted.") != std::string::npos);
  ProcessResult json = run_stsync({"status", "--json"}, env);
  CHECK(json.out.find(R"({"tenant":1001,"jobs":2,"ok":0,"failing":1,"stale":1,"not_permitted":0,)") !=
        std::string::npos);
  CHECK(json.out.find(R"({"tenant":9007199254740993,"jobs":2,"ok":2,"failing":0,"stale":0,)") != std::string::npos);
  // The filters list jobs; they combine.
  ProcessResult failed = run_stsync({"status", "--failed"}, env);
  CHECK(failed.out.find("ERROR: job employees tenant 1001: boom") != std::string::npos);
  CHECK(failed.out.find("invoices") == std::string::npos);
  ProcessResult stale = run_stsync({"status", "--stale", "--json"}, env);
  CHECK(stale.out.find(R"("tenant":1001,"job":"invoices")") != std::string::npos);
  CHECK(stale.out.find("employees") == std::string::npos);
  ProcessResult one = run_stsync({"status", "--tenant", "9007199254740993", "--job", "employees"}, env);
  CHECK(one.out.find("9007199254740993") != std::string::npos);
  CHECK(one.out.find("1001 ") == std::string::npos);
  CHECK(one.out.find("invoices") == std::string::npos);
  ProcessResult both = run_stsync({"status", "--failed", "--stale"}, env);
  CHECK(both.out.find("(no job matches)") != std::string::npos);
  ProcessResult unknown = run_stsync({"status", "--job", "employes"}, env);
  CHECK(unknown.exit_code == 2);
  CHECK(unknown.err.find("did you mean 'employees'?") != std::string::npos);
}

TEST_CASE("check tests the database first, probes each tenant's own jobs, and prints only failures and a summary "
          "unless --verbose",
          "[operator][check]") {
  TestSandbox sandbox;
  TestSchema schema;
  // Tenant A runs only employees (its own list); the big tenant every enabled job.
  const std::string tenants = write_temp_file(fmt::format(
      "[[tenants]]\nid = {}\nclient_id = \"{}\"\nclient_secret = \"{}\"\njobs = [\"employees\"]\n"
      "[[tenants]]\nid = {}\nclient_id = \"{}\"\nclient_secret = \"{}\"\n",
      kTenantA, sandbox::sandbox_client_id(kTenantA), sandbox::sandbox_client_secret(kTenantA), kTenantBig,
      sandbox::sandbox_client_id(kTenantBig), sandbox::sandbox_client_secret(kTenantBig)));
  auto env = stsync_env(sandbox, schema, kTenantA);
  for (const char* k : {"ST_TENANT_ID", "ST_CLIENT_ID", "ST_CLIENT_SECRET"}) env.erase(k);
  env["STSYNC_TENANTS_FILE"] = tenants;
  const std::int64_t before = sandbox.stat(kTenantA, "requests");
  ProcessResult quiet = run_stsync({"check"}, env);
  INFO(quiet.out << quiet.err);
  CHECK(quiet.exit_code == 0);
  CHECK(quiet.out == "check: PostgreSQL ok; 2 tenant(s): 2 authenticated, 0 refused; 3 job probe(s): 3 permitted, 0 "
                     "not permitted, 0 failed\n");
  CHECK(sandbox.stat(kTenantA, "requests") - before == 1);  // employees only: the tenant's own list
  ProcessResult verbose = run_stsync({"check", "--verbose"}, env);
  CHECK(verbose.out.find("ok    PostgreSQL: database") == 0);  // the database first
  CHECK(verbose.out.find("ok    tenant 1001 job employees: permitted") != std::string::npos);
  CHECK(verbose.out.find("tenant 1001 job invoices") == std::string::npos);
  CHECK(verbose.out.find("ok    tenant 9007199254740993 job invoices: permitted") != std::string::npos);
  // A denied scope is listed without --verbose; a database that cannot be reached comes first.
  sandbox.admin("scopes", fmt::format("tenant={}&deny=invoices", kTenantBig));
  ProcessResult denied = run_stsync({"check"}, env);
  CHECK(denied.exit_code == 0);
  CHECK(denied.out.find("DENY  tenant 9007199254740993 job invoices: not permitted (403)") == 0);
  CHECK(denied.out.find("2 permitted, 1 not permitted, 0 failed") != std::string::npos);
  ProcessResult no_db = run_stsync({"check"}, with_env(env, {{"DATABASE_URL", "host=127.0.0.1 port=1 dbname=x"}}));
  CHECK(no_db.exit_code == 4);
  CHECK(no_db.out.find("FAIL  PostgreSQL: ") == 0);
  CHECK(no_db.out.find("check: PostgreSQL FAILED; 2 tenant(s): 2 authenticated") != std::string::npos);
  ProcessResult one = run_stsync({"check", "--tenant", "1001"}, env);
  CHECK(one.out.find("1 tenant(s): 1 authenticated, 0 refused; 1 job probe(s)") != std::string::npos);
}

TEST_CASE("rejected credentials are reported with where they came from: the environment or a secret file",
          "[operator][config]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"ST_CLIENT_SECRET", "wrong-secret-5150"}});
  ProcessResult from_env = run_stsync({"run"}, env);
  CHECK(from_env.exit_code == 3);
  CHECK(from_env.err.find("check the client id (from ST_CLIENT_ID), the client secret (from ST_CLIENT_SECRET)") !=
        std::string::npos);
  const std::string creds = fmt::format("/tmp/stsync-creds-{}", getpid());
  std::filesystem::create_directories(creds);
  std::ofstream(creds + "/secret-a") << "wrong-secret-5151\n";
  const std::string tenants = write_temp_file(fmt::format(
      "[[tenants]]\nid = {}\nclient_id = \"{}\"\nclient_secret_file = \"secret-a\"\n", kTenantA,
      sandbox::sandbox_client_id(kTenantA)));
  auto file_env = stsync_env(sandbox, schema, kTenantA);
  for (const char* k : {"ST_TENANT_ID", "ST_CLIENT_ID", "ST_CLIENT_SECRET"}) file_env.erase(k);
  file_env["STSYNC_TENANTS_FILE"] = tenants;
  file_env["CREDENTIALS_DIRECTORY"] = creds;
  ProcessResult from_file = run_stsync({"run"}, file_env);
  CHECK(from_file.exit_code == 3);
  CHECK(from_file.err.find(fmt::format("check the client id (from client_id in {}), the client secret (from "
                                       "client_secret_file {}/secret-a (named in {}))",
                                       tenants, creds, tenants)) != std::string::npos);
  CHECK(from_file.err.find("wrong-secret-5151") == std::string::npos);
  std::filesystem::remove_all(creds);
}

TEST_CASE("a mistyped command or job name exits 2 with the nearest name suggested", "[operator][cli]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  ProcessResult command = run_stsync({"stauts"}, env);
  CHECK(command.exit_code == 2);
  CHECK(command.err.find("unknown command 'stauts'; did you mean 'status'?") != std::string::npos);
  ProcessResult job = run_stsync({"run", "--jobs", "invoice"}, env);
  CHECK(job.exit_code == 2);
  CHECK(job.err.find("unknown job 'invoice'; did you mean 'invoices'?") != std::string::npos);
  const std::string config = write_temp_file("[jobs.employes]\nenabled = false\n");
  ProcessResult section = run_stsync({"run"}, with_env(env, {{"STSYNC_CONFIG", config}}));
  CHECK(section.exit_code == 2);
  CHECK(section.err.find("[jobs.employes] names no job; did you mean 'employees'?") != std::string::npos);
  ProcessResult quarantine = run_stsync({"quarantine", "--job", "nosuch"}, env);
  CHECK(quarantine.exit_code == 2);
  CHECK(quarantine.err.find("unknown job 'nosuch'") != std::string::npos);
  CHECK(run_stsync({"--log-level", "debug", "status"}, env).exit_code == 0);  // options before the command
}

TEST_CASE("a DATABASE_URL that is neither a URL nor key=value is refused with exit 2, naming where it came from",
          "[operator][config]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"DATABASE_URL", "notaurl"}});
  ProcessResult r = run_stsync({"run"}, env);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("DATABASE_URL is neither a postgresql:// URL nor a key=value connection string") != std::string::npos);
  const std::string config = write_temp_file("[database]\nurl = \"warehouse\"\n");
  auto from_file = stsync_env(sandbox, schema, kTenantA);
  from_file.erase("DATABASE_URL");
  from_file["STSYNC_CONFIG"] = config;
  ProcessResult f = run_stsync({"run"}, from_file);
  CHECK(f.exit_code == 2);
  CHECK(f.err.find("database.url is neither") != std::string::npos);
}
