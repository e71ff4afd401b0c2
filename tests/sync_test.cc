// Integration tests of the core sync: the stsync binary against the sandbox (real HTTP) and the
// test PostgreSQL (a private schema per test).
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fmt/format.h>
#include <thread>

#include "page_parser.h"
#include "store.h"
#include "migrate.h"
#include "support.h"

using namespace stsync;
using namespace stsync::test;

namespace {

void require_equal_to_truth(TestSchema& schema, TestSandbox& sandbox, std::int64_t tenant,
                            const std::vector<std::string>& jobs = {"invoices", "employees"}) {
  for (const std::string& job : jobs) {
    std::vector<std::string> problems = compare_with_truth(schema, sandbox, builtin_job(job), tenant);
    INFO("job " << job << " tenant " << tenant);
    for (const std::string& p : problems) UNSCOPED_INFO(p);
    CHECK(problems.empty());
  }
}

std::int64_t last_run_writes(TestSchema& schema, std::int64_t tenant, const std::string& job) {
  return schema.scalar("SELECT rows_inserted + rows_updated FROM {s}.sync_runs WHERE tenant_id = $1 "
                       "AND job = $2 ORDER BY run_id DESC LIMIT 1",
                       {std::to_string(tenant), job});
}

}  // namespace

TEST_CASE("a full sync of several tenants equals the sandbox's ground truth exactly", "[sync][export]") {
  TestSandbox sandbox;
  TestSchema schema;
  const std::string config = write_temp_file(fmt::format(R"(
[servicetitan]
app_key = "sandbox-app-key"
auth_url = "{0}"
api_url = "{0}"
requests_per_second = 50
[database]
schema = "{1}"
[[tenants]]
id = {2}
client_id = "{3}"
client_secret = "{4}"
[[tenants]]
id = {5}
client_id = "{6}"
client_secret = "{7}"
)",
                                                         sandbox.url(), schema.name(), kTenantA,
                                                         sandbox::sandbox_client_id(kTenantA),
                                                         sandbox::sandbox_client_secret(kTenantA), kTenantBig,
                                                         sandbox::sandbox_client_id(kTenantBig),
                                                         sandbox::sandbox_client_secret(kTenantBig)));
  ProcessResult r = run_stsync({"--config", config, "run"}, {{"DATABASE_URL", database_url()}});
  REQUIRE(r.exit_code == 0);
  require_equal_to_truth(schema, sandbox, kTenantA);
  require_equal_to_truth(schema, sandbox, kTenantBig);
  // The hard values, exactly.
  CHECK(schema.scalar("SELECT count(*) FROM {s}.employees WHERE hourly_rate = 12345678.901234567891") > 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices WHERE sales_tax_code_tax_rate = 0.08250000000000000001") > 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices WHERE id > 9007199254740992 AND tenant_id = 9007199254740993") > 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices WHERE modified_on IS NULL") > 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices WHERE NOT active") > 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices WHERE summary LIKE '%' || chr(65533) || '%'") > 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices_items WHERE quantity = 12345678901.234567891") > 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices_items") > 100);
  // Every enabled job ran for both tenants (the other resources are served empty here).
  std::int64_t enabled = 0;
  for (const JobSpec& j : load_job_specs("")) enabled += j.enabled ? 1 : 0;
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE outcome = 'succeeded'") == 2 * enabled);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE outcome <> 'succeeded'") == 0);
  ProcessResult status = run_stsync({"--config", config, "status", "--json"}, {{"DATABASE_URL", database_url()}});
  CHECK(status.exit_code == 0);
  CHECK(status.out.find("\"tenant\":9007199254740993") != std::string::npos);
  CHECK(status.out.find("\"rows\":600") != std::string::npos);
}

TEST_CASE("a second run with no changes writes nothing", "[sync][export]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  const std::int64_t served = sandbox.stat(kTenantA, "records_served");
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  CHECK(last_run_writes(schema, kTenantA, "invoices") == 0);
  CHECK(last_run_writes(schema, kTenantA, "employees") == 0);
  CHECK(sandbox.stat(kTenantA, "records_served") == served);  // the tokens asked for nothing old
  require_equal_to_truth(schema, sandbox, kTenantA);
}

TEST_CASE("after churn an incremental run fetches only what changed and equals the truth again", "[sync][export]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  sandbox.admin("changes", fmt::format("tenant={}&resource=invoices&n=40", kTenantA));
  sandbox.admin("changes", fmt::format("tenant={}&resource=employees&n=15", kTenantA));
  sandbox.admin("clock", "advance_seconds=960");  // past the export's visibility delay
  const std::int64_t served = sandbox.stat(kTenantA, "records_served");
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  require_equal_to_truth(schema, sandbox, kTenantA);
  CHECK(sandbox.stat(kTenantA, "records_served") - served <= 55);
  CHECK(last_run_writes(schema, kTenantA, "invoices") > 0);
  CHECK(last_run_writes(schema, kTenantA, "invoices") <= 40);
}

TEST_CASE("churn during an export walk loses nothing once the delay has passed", "[sync][export][churn]") {
  auto o = TestSandbox::default_options(800, 150);
  o.export_batch = 50;
  o.churn_per_request = 4;
  TestSandbox sandbox(o);
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  sandbox.admin("settings", "churn_per_request=0");
  sandbox.admin("clock", "advance_seconds=960");
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  require_equal_to_truth(schema, sandbox, kTenantA);
}

TEST_CASE("churn during a list walk loses nothing, dense instants included", "[sync][list][churn]") {
  auto o = TestSandbox::default_options(900, 150);
  o.churn_per_request = 3;
  TestSandbox sandbox(o);
  TestSchema schema;
  // Pages of 120 rows: the windows must split, and the 225 rows that share one instant must
  // be paged by offset.
  const std::string config = write_temp_file("[jobs.invoices]\npage_size = 120\n[jobs.employees]\npage_size = 40\n");
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_CONFIG", config}});
  ProcessResult first = run_stsync({"run", "--mode", "list"}, env);
  REQUIRE(first.exit_code == 0);
  CHECK(first.err.find("list window") == std::string::npos);  // no errors about windows
  // Changes keep coming while it walks; the server's clock moves on, and one more run catches up.
  sandbox.admin("settings", "churn_per_request=0");
  sandbox.admin("clock", "advance_seconds=120");
  REQUIRE(run_stsync({"run", "--mode", "list"}, env).exit_code == 0);
  require_equal_to_truth(schema, sandbox, kTenantA);
  // And a third run only re-reads the overlap.
  REQUIRE(run_stsync({"run", "--mode", "list"}, env).exit_code == 0);
  CHECK(last_run_writes(schema, kTenantA, "invoices") == 0);
}

TEST_CASE("the watermark carries over between export and list mode", "[sync][list][export]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  sandbox.admin("clock", "advance_seconds=1000");
  sandbox.admin("changes", fmt::format("tenant={}&resource=invoices&n=30", kTenantA));
  sandbox.admin("clock", "advance_seconds=120");
  const std::int64_t served = sandbox.stat(kTenantA, "records_served");
  REQUIRE(run_stsync({"run", "--jobs", "invoices", "--mode", "list"}, env).exit_code == 0);
  CHECK(sandbox.stat(kTenantA, "records_served") - served < 200);  // not a full re-read
  require_equal_to_truth(schema, sandbox, kTenantA, {"invoices"});
  sandbox.admin("changes", fmt::format("tenant={}&resource=invoices&n=30", kTenantA));
  sandbox.admin("clock", "advance_seconds=1000");
  REQUIRE(run_stsync({"run", "--jobs", "invoices", "--mode", "export"}, env).exit_code == 0);
  require_equal_to_truth(schema, sandbox, kTenantA, {"invoices"});
}

TEST_CASE("a rejected continueFrom token falls back to the watermark and converges", "[sync][export]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  sandbox.admin("changes", fmt::format("tenant={}&resource=invoices&n=20", kTenantA));
  sandbox.admin("clock", "advance_seconds=960");
  sandbox.admin("invalidate-export-tokens");
  ProcessResult r = run_stsync({"run"}, env);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("token was rejected") != std::string::npos);
  require_equal_to_truth(schema, sandbox, kTenantA);
}

TEST_CASE("a full refresh re-reads everything and drops nothing", "[sync][export]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"run", "--jobs", "employees"}, env).exit_code == 0);
  const std::int64_t served = sandbox.stat(kTenantA, "records_served");
  REQUIRE(run_stsync({"run", "--jobs", "employees", "--full-refresh"}, env).exit_code == 0);
  CHECK(sandbox.stat(kTenantA, "records_served") - served == 120);
  CHECK(last_run_writes(schema, kTenantA, "employees") == 0);
  require_equal_to_truth(schema, sandbox, kTenantA, {"employees"});
}

TEST_CASE("a replayed page never overwrites a newer row", "[sync][store]") {
  TestSchema schema;
  PgConnection& db = schema.db();
  JobSpec spec = parse_job_spec(R"(
name = "things"
table = "things"
list_path = "x/v2/tenant/{tenant}/things"
mode = "list"
columns = [ { path = "amount", type = "numeric" } ]
)", "things.toml");
  const std::string s = db.quote_ident(schema.name());
  db.exec(fmt::format("CREATE SCHEMA {0}; CREATE TABLE {0}.things (tenant_id bigint, id bigint, amount numeric, "
                      "modified_on timestamptz, active boolean NOT NULL, raw jsonb NOT NULL, synced_at timestamptz, deleted_at timestamptz, "
                      "PRIMARY KEY (tenant_id, id))", s));
  apply_migrations(db, schema.name());  // the state tables, as every run has them
  JobStore store(db, schema.name(), spec, 5);
  REQUIRE(store.try_lock());  // as every run: the lock ties the job to one server session
  JobState state = store.load_state();
  const std::int64_t run = store.begin_run(SyncMode::list_windows);
  PageParser parser(spec);
  ParsedPage page;
  auto commit = [&](std::string body) {
    parser.parse(body, 5, page);
    return store.commit_page(page, state, run);
  };
  const std::string old_page = R"({"data":[{"id":1,"amount":"1.00","modifiedOn":"2024-01-01T00:00:00Z"},
                                          {"id":2,"amount":"2.00","modifiedOn":"2024-01-01T00:00:00Z"}]})";
  const std::string new_page = R"({"data":[{"id":1,"amount":"1.50","modifiedOn":"2024-02-01T00:00:00.1234567Z","active":false}]})";
  MergeCounts first = commit(old_page);
  CHECK(first.inserted == 2);
  MergeCounts newer = commit(new_page);
  CHECK(newer.updated == 1);
  MergeCounts replay = commit(old_page);
  CHECK(replay.inserted == 0);
  CHECK(replay.updated == 0);
  CHECK(replay.unchanged == 2);
  CHECK(schema.scalar("SELECT (amount * 100)::bigint FROM {s}.things WHERE id = 1") == 150);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.things WHERE id = 1 AND NOT active") == 1);
  // One page holding two versions of a row keeps the newer, whatever their order.
  MergeCounts both = commit(R"({"data":[{"id":2,"amount":"9.00","modifiedOn":"2024-03-01T00:00:00Z"},
                                        {"id":2,"amount":"3.00","modifiedOn":"2024-02-01T00:00:00Z"}]})");
  CHECK(both.updated == 1);
  CHECK(schema.scalar("SELECT amount::bigint FROM {s}.things WHERE id = 2") == 9);
  CHECK(schema.scalar("SELECT pages FROM {s}.sync_runs WHERE run_id = $1", {std::to_string(run)}) == 4);
}

TEST_CASE("kill -9 at several points of a run, then a rerun, equals the truth", "[sync][crash]") {
  auto o = TestSandbox::default_options(1500, 300);
  o.export_batch = 40;
  o.churn_per_request = 1;
  TestSandbox sandbox(o);
  TestSchema schema;
  // One connection per job, and two (pages committed on alternate connections).
  const std::string connections = GENERATE(as<std::string>{}, "1", "2");
  INFO("page connections " << connections);
  auto env = with_env(stsync_env(sandbox, schema, kTenantA),
                      {{"STSYNC_PARALLEL", "2"}, {"STSYNC_PAGE_CONNECTIONS", connections}});
  int killed = 0;
  for (int delay_ms : {60, 150, 250, 400, 600}) {
    // Each kill comes some pages into the run (whatever the machine's speed: under ASan and load
    // the start alone can take longer than these delays), then after a delay that varies.
    const std::int64_t served = sandbox.stat(kTenantA, "records_served");
    Process p({STSYNC_BINARY, "run"}, env);
    sandbox.wait_for_records_served(kTenantA, served + 120);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms / 3));
    p.kill_hard();
    killed += p.wait().exit_code == 128 + SIGKILL;
  }
  CHECK(killed >= 3);  // most of them died mid-run rather than finishing first
  // Some pages were committed before the kills, and they left runs marked 'running'.
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices") > 0);
  sandbox.admin("settings", "churn_per_request=0");
  sandbox.admin("clock", "advance_seconds=960");
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  require_equal_to_truth(schema, sandbox, kTenantA);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE outcome = 'running'") == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE outcome = 'interrupted'") >= 1);
}

TEST_CASE("two runs started together never write the same job and both exit cleanly", "[sync][lock]") {
  auto o = TestSandbox::default_options(1500, 300);
  o.export_batch = 100;
  TestSandbox sandbox(o);
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"migrate"}, env).exit_code == 0);
  Process a({STSYNC_BINARY, "run"}, env);
  Process b({STSYNC_BINARY, "run"}, env);
  ProcessResult ra = a.wait();
  ProcessResult rb = b.wait();
  INFO(ra.err << "\n----\n" << rb.err);
  CHECK(ra.exit_code == 0);
  CHECK(rb.exit_code == 0);
  // No two runs of one job overlap in time.
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs x JOIN {s}.sync_runs y ON x.job = y.job AND "
                      "x.tenant_id = y.tenant_id AND x.run_id < y.run_id AND "
                      "tstzrange(x.started_at, x.finished_at) && tstzrange(y.started_at, y.finished_at)") == 0);
  const bool skipped = (ra.err + rb.err).find("skipped, another run holds it") != std::string::npos;
  const std::int64_t runs = schema.scalar("SELECT count(*) FROM {s}.sync_runs");
  CHECK((skipped || runs == 4));
  require_equal_to_truth(schema, sandbox, kTenantA);
}

TEST_CASE("check authenticates and connects without writing; wrong credentials exit 3", "[sync][cli]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  ProcessResult ok = run_stsync({"check"}, env);
  CHECK(ok.exit_code == 0);
  CHECK(ok.out.find("credentials accepted") != std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1", {schema.name()}) == 0);
  auto bad = with_env(env, {{"ST_CLIENT_SECRET", "wrong-secret-value"}});
  CHECK(run_stsync({"check"}, bad).exit_code == 3);
  ProcessResult run = run_stsync({"run"}, bad);
  CHECK(run.exit_code == 3);
  CHECK(run.err.find("rejected the client credentials") != std::string::npos);
  CHECK(run.err.find("wrong-secret-value") == std::string::npos);
  CHECK(run_stsync({"run", "--jobs", "nonsense"}, env).exit_code == 2);
  CHECK(run_stsync({"frobnicate"}, env).exit_code == 2);
  CHECK(run_stsync({"run"}, with_env(env, {{"DATABASE_URL", "host=127.0.0.1 port=1 user=x dbname=x"}})).exit_code == 4);
  ProcessResult help = run_stsync({"run", "--help"}, env);
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("--full-refresh") != std::string::npos);
}
