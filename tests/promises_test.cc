// Behaviours the README promises that no other test pinned down, each written so that the bug it
// names makes it fail (issue 16: the job lock's result ignored, the periodic sweep never due, the
// modifiedOn guard dropped).
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <signal.h>
#include <simdjson.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "support.h"
#include "timestamp.h"

using namespace stsync;
using namespace stsync::test;

TEST_CASE("a job whose lock another session holds is skipped and its table is not written, the others run",
          "[promises][lock]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  // Another run's lock on (schema, invoices, tenant), taken directly: no tenant lock in the way.
  const std::string key = fmt::format("stsync:{}:invoices:{}", schema.name(), kTenantA);
  schema.db().exec("SELECT pg_advisory_lock(hashtextextended($1, 0))", {key});
  ProcessResult r = run_stsync({"run"}, env);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("job invoices tenant 1001: skipped, another run holds it") != std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices") == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.employees") == 120);
  schema.db().exec("SELECT pg_advisory_unlock(hashtextextended($1, 0))", {key});
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  check_exact(schema, sandbox, {"invoices", "employees"});
}

TEST_CASE("the periodic sweep comes due on the server's clock and marks hard deletes without --reconcile",
          "[promises][deletes]") {
  sandbox::ServerOptions o = TestSandbox::default_options();
  o.data.tenants = {sandbox::TenantSetup{kTenantA, {{"zones", 40}}}};
  TestSandbox sandbox(o);
  TestSchema schema;
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_JOBS_DIR", ""}});
  const std::vector<std::string> run = {"run", "--jobs", "zones"};
  REQUIRE(run_stsync(run, env).exit_code == 0);
  REQUIRE(schema.scalar("SELECT count(*) FROM {s}.zones") == 40);
  sandbox.admin("deletes", fmt::format("tenant={}&resource=zones&n=3", kTenantA));
  // A day later: a routine run walks modifiedOn windows, which cannot see a delete.
  sandbox.admin("clock", "advance_seconds=86400");
  REQUIRE(run_stsync(run, env).exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.zones WHERE deleted_at IS NOT NULL") == 0);
  // A week after the first load (zones: reconcile_every = 7d), the routine run sweeps.
  sandbox.admin("clock", "advance_seconds=518400");
  REQUIRE(run_stsync(run, env).exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.zones WHERE deleted_at IS NOT NULL") == 3);
  check_exact(schema, sandbox, {"zones"});
}

TEST_CASE("an older version of a record served again never overwrites the newer row, end to end", "[promises][guard]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  // The first record of the next page is an older version of itself (modifiedOn 2000, content
  // changed); a full refresh re-reads the feed from the start through the guarded merge.
  sandbox.admin("faults", "next=stale_record");
  REQUIRE(run_stsync({"run", "--jobs", "invoices", "--full-refresh"}, env).exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices WHERE raw ? 'staleCopy'") == 0);
  check_exact(schema, sandbox, {"invoices"});
}

TEST_CASE("SIGINT stops a run with exit 130 and records it as interrupted, and the next run completes",
          "[promises][signals]") {
  auto o = TestSandbox::default_options(2000, 20);
  o.export_batch = 25;
  TestSandbox sandbox(o);
  TestSchema schema;
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_REQUESTS_PER_SECOND", "20"}});
  Process p({STSYNC_BINARY, "run", "--jobs", "invoices"}, env);
  REQUIRE(sandbox.wait_for_records_served(kTenantA, 100));
  p.send_signal(SIGINT);
  ProcessResult r = p.wait();
  CHECK(r.exit_code == 130);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'invoices' AND outcome = 'interrupted'") == 1);
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  check_exact(schema, sandbox, {"invoices"});
}

TEST_CASE("run --tenant syncs only that tenant, and a job disabled in the config does not run", "[promises][cli]") {
  TestSandbox sandbox;
  TestSchema schema;
  const std::string config = write_temp_file(fmt::format(
      "[[tenants]]\nid = {0}\nclient_id = \"{1}\"\nclient_secret = \"{2}\"\n"
      "[[tenants]]\nid = {3}\nclient_id = \"{4}\"\nclient_secret = \"{5}\"\n"
      "[jobs.employees]\nenabled = false\n",
      kTenantA, sandbox::sandbox_client_id(kTenantA), sandbox::sandbox_client_secret(kTenantA), kTenantBig,
      sandbox::sandbox_client_id(kTenantBig), sandbox::sandbox_client_secret(kTenantBig)));
  auto env = stsync_env(sandbox, schema, kTenantA);
  for (const char* k : {"ST_TENANT_ID", "ST_CLIENT_ID", "ST_CLIENT_SECRET"}) env.erase(k);
  env["STSYNC_CONFIG"] = config;
  REQUIRE(run_stsync({"run", "--tenant", std::to_string(kTenantBig)}, env).exit_code == 0);
  CHECK(schema.scalar("SELECT count(DISTINCT tenant_id) FROM {s}.invoices") == 1);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices WHERE tenant_id = $1", {std::to_string(kTenantBig)}) > 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_state WHERE job = 'employees'") == 0);
  check_exact(schema, sandbox, {"invoices"}, kTenantBig);
}

TEST_CASE("a tenant listed twice is a configuration error naming it", "[promises][config]") {
  TestSandbox sandbox;
  TestSchema schema;
  const std::string config = write_temp_file(fmt::format(
      "[[tenants]]\nid = {0}\nclient_id = \"a\"\nclient_secret = \"b\"\n[[tenants]]\nid = {0}\nclient_id = \"a\"\n"
      "client_secret = \"b\"\n",
      kTenantA));
  auto env = stsync_env(sandbox, schema, kTenantA);
  for (const char* k : {"ST_TENANT_ID", "ST_CLIENT_ID", "ST_CLIENT_SECRET"}) env.erase(k);
  env["STSYNC_CONFIG"] = config;
  ProcessResult r = run_stsync({"run"}, env);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find(std::to_string(kTenantA)) != std::string::npos);
}

TEST_CASE("STSYNC_LOG_FORMAT=json writes one JSON object per line and no secret", "[promises][log]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_LOG_FORMAT", "json"}});
  ProcessResult r = run_stsync({"run"}, env);
  REQUIRE(r.exit_code == 0);
  int lines = 0;
  for (size_t start = 0; start < r.err.size();) {
    size_t end = r.err.find('\n', start);
    if (end == std::string::npos) end = r.err.size();
    const std::string line = r.err.substr(start, end - start);
    start = end + 1;
    if (line.empty()) continue;
    ++lines;
    INFO(line);
    CHECK(line.front() == '{');
    CHECK(line.back() == '}');
    CHECK(line.find("\"message\":") != std::string::npos);
  }
  CHECK(lines > 3);
  CHECK(r.err.find(sandbox::sandbox_client_secret(kTenantA)) == std::string::npos);
}

TEST_CASE("rows on a list window's exact edge are read by the window that starts there", "[promises][list]") {
  TestSandbox sandbox;
  TestSchema schema;
  const std::string config = write_temp_file("[jobs.invoices]\npage_size = 40\noverlap_seconds = 0\n");
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_CONFIG", config}});
  const std::vector<std::string> run = {"run", "--jobs", "invoices", "--mode", "list"};
  // The first run ends its windows at T0 - 60 s (list_safety_seconds): complete-through.
  REQUIRE(run_stsync(run, env).exit_code == 0);
  const std::int64_t t0 = sandbox.server().dataset().now() / kTicksPerSecond;
  REQUIRE(schema.scalar("SELECT extract(epoch FROM complete_through)::bigint FROM {s}.sync_state") == t0 - 60);
  // The next run, at T0 + 1000 s, reads [T0 - 60, T0 + 940): too many rows for one page, so the
  // window is halved at T0 + 440, exactly where 60 changes are stamped.
  sandbox.admin("clock", "advance_seconds=440");
  sandbox.admin("changes", fmt::format("tenant={}&resource=invoices&n=60", kTenantA));
  sandbox.admin("clock", "advance_seconds=560");
  ProcessResult r = run_stsync(run, env);
  REQUIRE(r.exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices WHERE modified_on = to_timestamp($1)",
                      {std::to_string(t0 + 440)}) > 0);
  check_exact(schema, sandbox, {"invoices"});
}

TEST_CASE("an incremental run writes the children of the parents it wrote once, in one attempt per page",
          "[promises][children]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  sandbox.admin("changes", fmt::format("tenant={}&resource=invoices&n=60", kTenantA));
  sandbox.admin("clock", "advance_seconds=960");
  // Rows inserted into the child table, aborted attempts included (PostgreSQL counts attempted
  // inserts whatever the outcome): a page whose children collide and is committed again shows.
  auto inserted_children = [&] {
    schema.db().exec("SELECT pg_stat_clear_snapshot()");
    return schema.scalar("SELECT n_tup_ins FROM pg_catalog.pg_stat_user_tables WHERE relid = to_regclass($1)",
                         {schema.db().quote_ident(schema.name()) + ".invoices_items"});
  };
  const std::int64_t before = inserted_children();
  ProcessResult r = run_stsync({"run", "--jobs", "invoices"}, env);
  REQUIRE(r.exit_code == 0);
  const std::int64_t written = schema.scalar(
      "SELECT count(*) FROM {s}.invoices_items WHERE synced_at >= (SELECT started_at FROM {s}.sync_runs WHERE job = "
      "'invoices' ORDER BY run_id DESC LIMIT 1)");
  CHECK(written > 0);
  CHECK(inserted_children() - before == written);
  check_exact(schema, sandbox, {"invoices"});
}

TEST_CASE("a migration that fails exits 4 naming the migration, and no job runs", "[promises][db]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  // Something of the user's in the way of migration 001's table.
  schema.db().exec(fmt::format("CREATE SCHEMA {0}; CREATE VIEW {0}.sync_state AS SELECT 1 AS x",
                               schema.db().quote_ident(schema.name())));
  ProcessResult r = run_stsync({"run"}, env);
  CHECK(r.exit_code == 4);
  CHECK(r.err.find("migration 001_state.sql failed") != std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = $1", {schema.name()}) == 0);
}

TEST_CASE("a page rolled back by a serialization failure is committed again and the run succeeds", "[promises][db]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"migrate"}, env).exit_code == 0);
  const std::string s = schema.db().quote_ident(schema.name());
  // The first insert into employees fails with 40001, once (a sequence is not rolled back).
  schema.db().exec(fmt::format(
      "CREATE SEQUENCE {0}.conflicts; CREATE FUNCTION {0}.conflict_once() RETURNS trigger LANGUAGE plpgsql AS "
      "'BEGIN IF nextval(''{1}.conflicts'') = 1 THEN RAISE EXCEPTION ''could not serialize'' USING ERRCODE = "
      "''40001''; END IF; RETURN NEW; END'; CREATE TRIGGER conflict_once AFTER INSERT ON {0}.employees FOR EACH ROW "
      "EXECUTE FUNCTION {0}.conflict_once()",
      s, schema.name()));
  ProcessResult r = run_stsync({"run", "--jobs", "employees"}, env);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("SQLSTATE 40001") != std::string::npos);
  CHECK(r.err.find("committing the page again (1 of 5)") != std::string::npos);
  schema.db().exec(fmt::format("DROP TRIGGER conflict_once ON {}.employees", s));
  check_exact(schema, sandbox, {"employees"});
}

TEST_CASE("a client_secret_file named relative to its config file is read from beside it", "[promises][config]") {
  TestSandbox sandbox;
  TestSchema schema;
  const std::string dir = fmt::format("/tmp/stsync-beside-{}", getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/stsync.toml") << fmt::format(
      "[[tenants]]\nid = {}\nclient_id = \"{}\"\nclient_secret_file = \"tenant.secret\"\n", kTenantA,
      sandbox::sandbox_client_id(kTenantA));
  std::ofstream(dir + "/tenant.secret") << sandbox::sandbox_client_secret(kTenantA) << "\n";
  std::filesystem::permissions(dir + "/tenant.secret", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  auto env = stsync_env(sandbox, schema, kTenantA);
  for (const char* k : {"ST_TENANT_ID", "ST_CLIENT_ID", "ST_CLIENT_SECRET"}) env.erase(k);
  env["STSYNC_CONFIG"] = dir + "/stsync.toml";
  ProcessResult r = run_stsync({"run", "--jobs", "employees"}, env);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find(sandbox::sandbox_client_secret(kTenantA)) == std::string::npos);
  check_exact(schema, sandbox, {"employees"});
  std::filesystem::remove_all(dir);
}

TEST_CASE("a database password never appears in an error, from DATABASE_URL or PGPASSWORD", "[promises][secrets]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = with_env(stsync_env(sandbox, schema, kTenantA),
                      {{"DATABASE_URL", "postgresql://someone:url-pw-4711@127.0.0.1:1/x"},
                       {"STSYNC_DB_RECONNECT_ATTEMPTS", "0"}});
  ProcessResult r = run_stsync({"run"}, env);
  CHECK(r.exit_code == 4);
  CHECK(r.err.find("url-pw-4711") == std::string::npos);
  CHECK(r.out.find("url-pw-4711") == std::string::npos);
  auto env2 = with_env(stsync_env(sandbox, schema, kTenantA),
                       {{"DATABASE_URL", "host=127.0.0.1 port=1 user=x dbname=x"}, {"PGPASSWORD", "env-pw-4712"}});
  ProcessResult r2 = run_stsync({"check"}, env2);
  CHECK(r2.exit_code != 0);
  CHECK(r2.err.find("env-pw-4712") == std::string::npos);
  CHECK(r2.out.find("env-pw-4712") == std::string::npos);
}

TEST_CASE("quarantine lists by job and tenant, as text or JSON", "[promises][quarantine]") {
  auto o = TestSandbox::default_options(400, 20);
  o.export_batch = 100;
  TestSandbox sandbox(o);
  TestSchema schema;
  const std::string config = write_temp_file("[jobs.invoices]\nquarantine = true\n");
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_CONFIG", config}});
  sandbox.admin("faults", "next=none,refused_values");
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  REQUIRE(schema.scalar("SELECT count(*) FROM {s}.quarantine") == 3);
  CHECK(run_stsync({"quarantine", "--job", "invoices"}, env).out.find("3 record(s)") != std::string::npos);
  CHECK(run_stsync({"quarantine", "--job", "employees"}, env).out.find("3 record(s)") == std::string::npos);
  CHECK(run_stsync({"quarantine", "--tenant", "999"}, env).out.find("3 record(s)") == std::string::npos);
  ProcessResult json = run_stsync({"quarantine", "--json", "--tenant", std::to_string(kTenantA)}, env);
  CHECK(json.exit_code == 0);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  REQUIRE(parser.parse(json.out).get(doc) == simdjson::SUCCESS);
  simdjson::dom::array records;
  REQUIRE(doc.get_array().get(records) == simdjson::SUCCESS);
  CHECK(records.size() == 3);
  for (simdjson::dom::element rec : records) {
    std::string_view job;
    CHECK(rec["job"].get_string().get(job) == simdjson::SUCCESS);
    CHECK(job == "invoices");
  }
}

TEST_CASE("quarantine --discard deletes the chosen records only with --yes, and --retry drops records whose row a later "
          "run stored",
          "[promises][quarantine]") {
  auto o = TestSandbox::default_options(400, 20);
  o.export_batch = 100;
  TestSandbox sandbox(o);
  TestSchema schema;
  const std::string config = write_temp_file("[jobs.invoices]\nquarantine = true\n");
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_CONFIG", config}});
  sandbox.admin("faults", "next=none,refused_values");
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  REQUIRE(schema.scalar("SELECT count(*) FROM {s}.quarantine") == 3);
  const std::string first = std::to_string(schema.scalar("SELECT min(quarantine_id) FROM {s}.quarantine"));
  // Nothing goes without a selection and a confirmation.
  CHECK(run_stsync({"quarantine", "--discard"}, env).exit_code == 2);
  ProcessResult unconfirmed = run_stsync({"quarantine", "--discard", "--id", first}, env);
  CHECK(unconfirmed.exit_code == 2);
  CHECK(unconfirmed.err.find("1 record(s) would be deleted; add --yes") != std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.quarantine") == 3);
  ProcessResult discarded = run_stsync({"quarantine", "--discard", "--id", first, "--yes"}, env);
  CHECK(discarded.exit_code == 0);
  CHECK(discarded.out == "1 record(s) discarded\n");
  CHECK(schema.scalar("SELECT count(*) FROM {s}.quarantine") == 2);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.quarantine WHERE quarantine_id = " + first) == 0);
  // A full refresh without the fault stores good versions of the other two: a retry drops them
  // (the table already holds that version) instead of failing on them again.
  REQUIRE(run_stsync({"run", "--jobs", "invoices", "--full-refresh"}, env).exit_code == 0);
  check_exact(schema, sandbox, {"invoices"});
  ProcessResult retried = run_stsync({"quarantine", "--retry"}, env);
  INFO(retried.out << retried.err);
  CHECK(retried.exit_code == 0);
  CHECK(retried.out.find("0 stored, 0 still refused, 0 skipped, 2 dropped") != std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.quarantine") == 0);
  check_exact(schema, sandbox, {"invoices"});
  // --all: every record (none left here).
  CHECK(run_stsync({"quarantine", "--discard", "--all", "--yes"}, env).out == "0 record(s) discarded\n");
}

TEST_CASE("include_recent_changes = true reads changes inside the export's 15-minute visibility delay",
          "[promises][export]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  sandbox.admin("changes", fmt::format("tenant={}&resource=invoices&n=30", kTenantA));
  sandbox.admin("clock", "advance_seconds=60");  // well inside the delay
  // The default: the feed does not show them yet, so the table is behind the truth.
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  CHECK_FALSE(compare_with_truth(schema, sandbox, builtin_job("invoices"), kTenantA).empty());
  const std::string config = write_temp_file("[jobs.invoices]\ninclude_recent_changes = true\n");
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, with_env(env, {{"STSYNC_CONFIG", config}})).exit_code == 0);
  check_exact(schema, sandbox, {"invoices"});
}

TEST_CASE("the full and created modes (--mode) read a job exactly through its list endpoint", "[promises][modes]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  ProcessResult full = run_stsync({"run", "--jobs", "employees", "--mode", "full"}, env);
  REQUIRE(full.exit_code == 0);
  CHECK(full.err.find("(full mode") != std::string::npos);
  check_exact(schema, sandbox, {"employees"});
  ProcessResult created = run_stsync({"run", "--jobs", "invoices", "--mode", "created"}, env);
  REQUIRE(created.exit_code == 0);
  CHECK(created.err.find("(created mode") != std::string::npos);
  check_exact(schema, sandbox, {"invoices"});
}

TEST_CASE("a second stop signal ends the process at once, without waiting for the statement in flight",
          "[promises][signals]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = with_env(stsync_env(sandbox, schema, kTenantA),
                      {{"STSYNC_STATEMENT_TIMEOUT_SECONDS", "120"}, {"STSYNC_PARALLEL", "1"}});
  REQUIRE(run_stsync({"migrate"}, env).exit_code == 0);
  const std::string s = schema.db().quote_ident(schema.name());
  stall_inserts(schema, "employees", 60);  // the first page's merge stalls in the database
  Process p({STSYNC_BINARY, "run", "--jobs", "employees"}, env);
  REQUIRE(wait_until([&] { return stalled(schema); }));
  p.send_signal(SIGTERM);  // the first: finish or roll back the page in flight, then stop
  // Two signals pending at once merge into one: the second is sent once the first was handled
  // (no longer pending for the process, /proc/PID/status ShdPnd).
  auto sigterm_pending = [&] {
    std::ifstream status("/proc/" + std::to_string(p.pid()) + "/status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind("ShdPnd:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) >> (SIGTERM - 1)) & 1;
    return 0ULL;
  };
  REQUIRE(wait_until([&] { return sigterm_pending() == 0; }));
  p.send_signal(SIGTERM);  // the second: now
  ProcessResult r = p.wait();
  CHECK(r.exit_code == 143);
  // It did not wait for the statement: the run could not even be recorded as interrupted.
  INFO(r.err);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'employees' AND outcome = 'running'") == 1);
  release_stall(schema);
}

TEST_CASE("overlap_seconds re-reads that much before complete-through on every list run, and 0 re-reads nothing",
          "[promises][list]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  const std::vector<std::string> run = {"run", "--jobs", "invoices", "--mode", "list"};
  REQUIRE(run_stsync(run, env).exit_code == 0);
  sandbox.admin("changes", fmt::format("tenant={}&resource=invoices&n=20", kTenantA));
  sandbox.admin("clock", "advance_seconds=120");  // the changes are now 60 s before complete-through
  REQUIRE(run_stsync(run, env).exit_code == 0);
  // Nothing changed since: what a run reads is its overlap alone.
  auto served_by = [&](int overlap) {
    const std::string config = write_temp_file(fmt::format("[jobs.invoices]\noverlap_seconds = {}\n", overlap));
    const std::int64_t before = sandbox.stat(kTenantA, "records_served");
    REQUIRE(run_stsync(run, with_env(env, {{"STSYNC_CONFIG", config}})).exit_code == 0);
    return sandbox.stat(kTenantA, "records_served") - before;
  };
  CHECK(served_by(0) == 0);
  CHECK(served_by(300) >= 20);
  check_exact(schema, sandbox, {"invoices"});
}

TEST_CASE("two daemons sharing tenants never run the same job of a tenant at once, and every job runs",
          "[promises][daemon]") {
  sandbox::ServerOptions o = TestSandbox::default_options(0, 0);
  o.data.tenants.clear();
  for (int i = 0; i < 4; ++i) o.data.tenants.push_back({6000 + i, {{"invoices", 30}, {"employees", 10}}});
  TestSandbox sandbox(o);
  TestSchema schema;
  std::string tenants;
  for (int i = 0; i < 4; ++i)
    tenants += fmt::format("[[tenants]]\nid = {}\nclient_id = \"{}\"\nclient_secret = \"{}\"\n", 6000 + i,
                           sandbox::sandbox_client_id(6000 + i), sandbox::sandbox_client_secret(6000 + i));
  const std::string config = write_temp_file(
      fmt::format("[servicetitan]\napp_key = \"sandbox-app-key\"\nauth_url = \"{0}\"\napi_url = \"{0}\"\n"
                  "[database]\nschema = \"{1}\"\n[jobs.employees]\nevery = \"1s\"\n{2}",
                  sandbox.url(), schema.name(), tenants));
  const std::map<std::string, std::string> env = {{"DATABASE_URL", database_url()}, {"STSYNC_JOBS_DIR", two_job_dir()},
                                                  {"STSYNC_MAX_CLOCK_SKEW_SECONDS", "31622400"}};
  std::vector<std::unique_ptr<Process>> daemons;
  for (int i = 0; i < 2; ++i)
    daemons.push_back(std::make_unique<Process>(
        std::vector<std::string>{STSYNC_BINARY, "--config", config, "daemon", "--interval", "0.2", "--listen", "off"},
        env));
  // Every tenant's employees job (every second) ran three times, invoices (hourly) once.
  REQUIRE(wait_until([&] {
    return finished_runs(schema) > 0 &&  // (0 until the first daemon created the table)
           schema.scalar("SELECT count(*) FROM (SELECT tenant_id FROM {s}.sync_runs WHERE job = 'employees' AND outcome "
                         "= 'succeeded' GROUP BY 1 HAVING count(*) >= 3) t") == 4;
  }));
  for (auto& d : daemons) d->send_signal(SIGTERM);
  for (auto& d : daemons) CHECK(d->wait().exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'invoices' AND outcome = 'succeeded'") == 4);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE outcome NOT IN ('succeeded', 'interrupted')") == 0);
  // No two runs of one (tenant, job) overlap in time.
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs a JOIN {s}.sync_runs b ON a.tenant_id = b.tenant_id AND "
                      "a.job = b.job AND a.run_id < b.run_id AND a.started_at < b.finished_at AND b.started_at < "
                      "a.finished_at") == 0);
  for (int i = 0; i < 4; ++i) check_exact(schema, sandbox, {"invoices", "employees"}, 6000 + i);
}

TEST_CASE("reset forgets a job's token and watermark only with --yes and its next run reads everything again with the "
          "rows kept exact",
          "[promises][reset]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"run", "--jobs", "invoices,employees"}, env).exit_code == 0);
  const std::int64_t rows = schema.scalar("SELECT count(*) FROM {s}.invoices");
  REQUIRE(rows == 600);
  auto token_kept = [&](const std::string& job) {
    return schema.scalar("SELECT count(*) FROM {s}.sync_state WHERE job = $1 AND export_token IS NOT NULL", {job});
  };
  REQUIRE(token_kept("invoices") == 1);
  // A misspelt job is refused with a suggestion; without --yes nothing changes.
  ProcessResult typo = run_stsync({"reset", "--jobs", "invoice"}, env);
  CHECK(typo.exit_code == 2);
  CHECK(typo.err.find("did you mean 'invoices'") != std::string::npos);
  ProcessResult unconfirmed = run_stsync({"reset", "--jobs", "invoices"}, env);
  CHECK(unconfirmed.exit_code == 2);
  CHECK(unconfirmed.err.find("1 job state(s) would be reset: invoices 1001; add --yes") != std::string::npos);
  CHECK(token_kept("invoices") == 1);
  // A job whose lock a run holds is left alone.
  {
    PgConnection holder(database_url());
    holder.exec("SELECT pg_advisory_lock(hashtextextended($1, 0))", {fmt::format("stsync:{}:invoices:{}", schema.name(), kTenantA)});
    ProcessResult busy = run_stsync({"reset", "--jobs", "invoices", "--yes"}, env);
    CHECK(busy.exit_code == 1);
    CHECK(busy.err.find("job invoices 1001: a run holds its lock") != std::string::npos);
    CHECK(token_kept("invoices") == 1);
  }
  ProcessResult reset = run_stsync({"reset", "--jobs", "invoices", "--yes"}, env);
  CHECK(reset.exit_code == 0);
  CHECK(reset.out == "1 job state(s) reset: invoices 1001: their next run reads everything again (rows are kept)\n");
  CHECK(token_kept("invoices") == 0);
  CHECK(token_kept("employees") == 1);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices") == rows);  // rows kept
  const std::int64_t served = sandbox.stat(kTenantA, "records_served");
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  CHECK(sandbox.stat(kTenantA, "records_served") - served >= rows);  // read from the start
  CHECK(token_kept("invoices") == 1);
  check_exact(schema, sandbox, {"invoices"});
}

TEST_CASE("verify reports exact tables as equal and names a table with a row deleted by hand with both counts and exit 1",
          "[promises][verify]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_JOBS_DIR", ""}});
  REQUIRE(run_stsync({"run", "--jobs", "invoices,employees"}, env).exit_code == 0);
  const std::int64_t before = sandbox.stat(kTenantA, "requests");
  ProcessResult equal = run_stsync({"verify", "--jobs", "invoices,employees,customer_notes"}, env);
  INFO(equal.out << equal.err);
  CHECK(equal.exit_code == 0);
  CHECK(equal.out.find("invoices                                  600        600  equal") != std::string::npos);
  CHECK(equal.out.find("employees                                 120        120  equal") != std::string::npos);
  CHECK(equal.out.find("customer_notes                              -          0  cannot count (per-parent") !=
        std::string::npos);
  CHECK(equal.out.find("verify: 3 job(s): 2 equal, 0 differ, 1 cannot count, 0 failed") != std::string::npos);
  CHECK(sandbox.stat(kTenantA, "requests") - before == 2);  // one per countable job (the token aside)
  // A row deleted by hand: named, with both numbers.
  schema.scalar("WITH d AS (DELETE FROM {s}.invoices WHERE id = (SELECT min(id) FROM {s}.invoices) RETURNING 1) "
                "SELECT count(*) FROM d");
  ProcessResult differ = run_stsync({"verify", "--jobs", "invoices,employees"}, env);
  CHECK(differ.exit_code == 1);
  CHECK(differ.out.find("invoices                                  600        599  MISMATCH") != std::string::npos);
  ProcessResult json = run_stsync({"verify", "--jobs", "invoices", "--json"}, env);
  CHECK(json.exit_code == 1);
  CHECK(json.out.find(R"("job":"invoices","verdict":"MISMATCH","source":600,"table":599)") != std::string::npos);
}

namespace {

// A fingerprint of a job's own position: token, watermark, complete_through, list cursor.
std::string job_state_digest(TestSchema& schema, const std::string& job) {
  return schema.db()
      .exec(fmt::format("SELECT md5(coalesce(export_token, '') || coalesce(watermark::text, '') || "
                        "coalesce(complete_through::text, '') || coalesce(list_cursor::text, '')) FROM {}.sync_state "
                        "WHERE job = $1",
                        schema.db().quote_ident(schema.name())),
            {job})
      .get(0, 0);
}

}  // namespace

TEST_CASE("a backfill window updates changed rows in the window and leaves token and watermark unchanged",
          "[promises][backfill]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_JOBS_DIR", ""}});
  REQUIRE(run_stsync({"run", "--jobs", "invoices,employees"}, env).exit_code == 0);
  const std::string invoices_state = job_state_digest(schema, "invoices"),
                    employees_state = job_state_digest(schema, "employees");
  auto no_backfill_left = [&](const std::string& job) {
    return schema.scalar("SELECT count(*) FROM {s}.sync_state WHERE job = $1 AND backfill IS NULL", {job}) == 1;
  };
  // Every stored row differs from the source now (same version, other content): what a read of
  // the source puts right, through the guard.
  for (const char* table : {"invoices", "employees"})
    schema.scalar(fmt::format("WITH u AS (UPDATE {{s}}.{} SET raw = raw || '{{\"tampered\": 1}}' RETURNING 1) "
                              "SELECT count(*) FROM u",
                              table));
  auto tampered = [&](const std::string& table, const std::string& where) {
    return schema.scalar(fmt::format("SELECT count(*) FROM {{s}}.{} WHERE raw ? 'tampered' AND {}", table, where));
  };
  // A window over the middle third of the employees' modifiedOn, read by their list (--mode list).
  const std::string lo = schema.db().exec(fmt::format("SELECT to_char(percentile_disc(0.33) WITHIN GROUP (ORDER BY modified_on) "
                                                      "AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM {}.employees",
                                                      schema.db().quote_ident(schema.name())))
                           .get(0, 0);
  const std::string hi = schema.db().exec(fmt::format("SELECT to_char(percentile_disc(0.66) WITHIN GROUP (ORDER BY modified_on) "
                                                      "AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM {}.employees",
                                                      schema.db().quote_ident(schema.name())))
                           .get(0, 0);
  ProcessResult window = run_stsync({"run", "--jobs", "employees", "--mode", "list", "--since", lo, "--until", hi}, env);
  INFO(window.err);
  REQUIRE(window.exit_code == 0);
  const std::string inside = fmt::format("modified_on >= '{}' AND modified_on < '{}'", lo, hi);
  CHECK(tampered("employees", inside) == 0);                              // read again: the source's version
  CHECK(tampered("employees", "NOT (" + inside + ")") > 20);              // outside the window: untouched
  CHECK(job_state_digest(schema, "employees") == employees_state);  // token, watermark, cursors as they were
  CHECK(no_backfill_left("employees"));                              // and no backfill left under way
  // The export from a date (an export job): rows changed since then are read again.
  ProcessResult from = run_stsync({"run", "--jobs", "invoices", "--since", lo}, env);
  REQUIRE(from.exit_code == 0);
  CHECK(tampered("invoices", fmt::format("modified_on >= '{}'", lo)) == 0);
  CHECK(tampered("invoices", fmt::format("modified_on < timestamptz '{}' - interval '1 hour'", lo)) > 20);
  CHECK(job_state_digest(schema, "invoices") == invoices_state);
  CHECK(no_backfill_left("invoices"));
  // What cannot be filtered is refused, saying why; nothing runs.
  ProcessResult until_export = run_stsync({"run", "--jobs", "invoices", "--since", lo, "--until", hi}, env);
  CHECK(until_export.exit_code == 2);
  CHECK(until_export.err.find("job invoices cannot be backfilled: its export feed can start at a date but not stop") !=
        std::string::npos);
  ProcessResult per_parent = run_stsync({"run", "--jobs", "customer_notes", "--since", lo}, env);
  CHECK(per_parent.exit_code == 2);
  CHECK(per_parent.err.find("a per-parent job has no date filter") != std::string::npos);
  CHECK(run_stsync({"run", "--since", lo}, env).exit_code == 2);  // name the jobs
}

TEST_CASE("an interrupted backfill resumes where it stopped and leaves the job's token and watermark as they were",
          "[promises][backfill]") {
  auto o = TestSandbox::default_options(1000, 20);
  o.export_batch = 50;
  TestSandbox sandbox(o);
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  const std::string before = job_state_digest(schema, "invoices");
  sandbox.admin("settings", "latency_ms=150");  // about 7 pages a second: a 1 s run stops after a few
  ProcessResult cut = run_stsync({"run", "--jobs", "invoices", "--since", "2000-01-01", "--max-run-time", "1s"}, env);
  INFO(cut.err);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'invoices' AND outcome = 'interrupted'") == 1);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_state WHERE job = 'invoices' AND backfill LIKE "
                      "'window=2000-01-01T00:00:00.0000000Z|%token=%'") == 1);
  CHECK(job_state_digest(schema, "invoices") == before);  // mid-backfill too: a crash now leaves the job's own state as it was
  sandbox.admin("settings", "latency_ms=0");
  const std::int64_t served = sandbox.stat(kTenantA, "records_served");
  ProcessResult rest = run_stsync({"run", "--jobs", "invoices", "--since", "2000-01-01"}, env);
  CHECK(rest.exit_code == 0);
  CHECK(rest.err.find("resuming the backfill of [2000-01-01T00:00:00.0000000Z|)") != std::string::npos);
  CHECK(sandbox.stat(kTenantA, "records_served") - served < 1000);  // not from the start again
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_state WHERE job = 'invoices' AND backfill IS NULL") == 1);
  CHECK(job_state_digest(schema, "invoices") == before);
  check_exact(schema, sandbox, {"invoices"});
}

TEST_CASE("with history = true every version an incremental run replaces is kept and chains to the next",
          "[promises][history]") {
  TestSandbox sandbox;
  TestSchema schema;
  const std::string config = write_temp_file("[jobs.invoices]\nhistory = true\n");
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_CONFIG", config}});
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices_history") == 600);  // the current versions
  sandbox.admin("changes", fmt::format("tenant={}&resource=invoices&n=40", kTenantA));
  sandbox.admin("clock", "advance_seconds=1000");
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  check_exact(schema, sandbox, {"invoices"});
  const std::int64_t updated = schema.scalar("SELECT rows_updated FROM {s}.sync_runs ORDER BY run_id DESC LIMIT 1");
  const std::int64_t inserted = schema.scalar("SELECT rows_inserted FROM {s}.sync_runs ORDER BY run_id DESC LIMIT 1");
  CHECK(updated > 10);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices_history_past") == updated);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices_history") == 600 + inserted + updated);
  // Each past version ends where the row's next version begins, and holds the older content.
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices_history_past p JOIN {s}.invoices i USING (tenant_id, id) "
                      "WHERE p.valid_to = coalesce(i.deleted_at, i.modified_on, i.synced_at) AND p.raw <> i.raw") ==
        updated);
  std::filesystem::remove(config);
}

TEST_CASE("stsync reports lists a tenant's report categories and reports and describes a report's parameters and fields",
          "[promises][reports]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  ProcessResult list = run_stsync({"reports"}, env);
  INFO(list.out << list.err);
  CHECK(list.exit_code == 0);
  CHECK(list.out.find("technician           2001  Technician performance") != std::string::npos);
  CHECK(list.out.find("operations           1001  Revenue by business unit") != std::string::npos);
  ProcessResult one = run_stsync({"reports", "--category", "marketing", "--json"}, env);
  CHECK(one.exit_code == 0);
  CHECK(one.out.find(R"("category":"marketing","category_name":"Marketing","id":3001)") != std::string::npos);
  CHECK(one.out.find("technician") == std::string::npos);
  ProcessResult described = run_stsync({"reports", "describe", "technician", "2001"}, env);
  CHECK(described.exit_code == 0);
  CHECK(described.out.find("  From                     Date     required  (From)") != std::string::npos);
  CHECK(described.out.find("  IncludeInactive          Boolean  optional  (Include inactive)") != std::string::npos);
  CHECK(described.out.find("  Revenue                  Number   (Revenue)") != std::string::npos);
  CHECK(described.out.find("[[reports]]\nname = \"technician_performance\"\ncategory = \"technician\"\nreport_id = 2001\n"
                           "from_parameter = \"From\"\nto_parameter = \"To\"\n") != std::string::npos);
  ProcessResult unknown = run_stsync({"reports", "describe", "technician", "999"}, env);
  CHECK(unknown.exit_code != 0);
  CHECK(unknown.err.find("404") != std::string::npos);
}
