// Integration tests of the core sync: the stsync binary against the sandbox (real HTTP) and the
// test PostgreSQL (a private schema per test).
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fmt/format.h>
#include <fstream>
#include <future>
#include <sstream>
#include <set>
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

// A run of a job driven by hand, page by page, for tenant 5 (or another).
struct HandRun {
  HandRun(PgConnection& db, const std::string& schema, const JobSpec& spec, std::int64_t tenant = 5)
      : store(db, schema, spec, tenant), parser(spec), tenant(tenant) {
    REQUIRE(store.try_lock());  // as every run: the lock ties the job to one server session
    state = store.load_state();
    run = store.begin_run(SyncMode::list_windows);
  }
  MergeCounts commit(std::string body, const CommitGates* gates = nullptr) {
    parser.parse(body, tenant, page);
    return store.commit_page(page, &state, run, {}, gates);
  }
  JobStore store;
  PageParser parser;
  ParsedPage page;
  JobState state;
  std::int64_t tenant;
  std::int64_t run = 0;
};

// The state tables and `spec`'s tables in a fresh schema, as a run's start leaves them.
void prepare_tables(PgConnection& db, const std::string& schema, const JobSpec& spec) {
  apply_migrations(db, schema);
  ensure_job_tables(db, schema, {spec});
}

// A list job of its own ("things", an amount column), plus `more` of the job file.
JobSpec things_spec(const std::string& more = "") {
  return parse_job_spec(R"(
name = "things"
table = "things"
list_path = "x/v2/tenant/{tenant}/things"
mode = "list"
columns = [ { path = "amount", type = "numeric" } ]
)" + more, "things.toml");
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
  ProcessResult status = run_stsync({"--config", config, "status", "--by-job", "--json"}, {{"DATABASE_URL", database_url()}});
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
  JobSpec spec = things_spec();
  const std::string s = db.quote_ident(schema.name());
  db.exec(fmt::format("CREATE SCHEMA {0}; CREATE TABLE {0}.things (tenant_id bigint, id bigint, amount numeric, "
                      "modified_on timestamptz, active boolean NOT NULL, raw jsonb NOT NULL, synced_at timestamptz, deleted_at timestamptz, "
                      "change_xid xid8 DEFAULT pg_current_xact_id(), "
                      "PRIMARY KEY (tenant_id, id))", s));
  apply_migrations(db, schema.name());  // the state tables, as every run has them
  HandRun hand(db, schema.name(), spec);
  JobStore& store = hand.store;
  const std::int64_t run = hand.run;
  auto commit = [&](std::string body) { return hand.commit(std::move(body)); };
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

TEST_CASE("pages of new keys go straight into the table, and keys stored meanwhile by someone else go through the guard",
          "[sync][store]") {
  TestSchema schema;
  PgConnection& db = schema.db();
  JobSpec spec = things_spec(R"(
[[children]]
path = "parts"
table = "thing_parts"
columns = [ { path = "n", type = "integer" } ]
)");
  prepare_tables(db, schema.name(), spec);
  HandRun hand(db, schema.name(), spec);
  JobStore& store = hand.store;
  const std::int64_t run = hand.run;
  auto commit = [&](std::string body) { return hand.commit(std::move(body)); };
  auto thing = [](int id, const char* amount, const char* modified) {
    return fmt::format(R"({{"id":{},"amount":"{}","modifiedOn":"{}","parts":[{{"n":{}}},{{"n":{}}}]}})", id, amount,
                       modified, id * 10, id * 10 + 1);
  };
  // A first load: nothing of the page is stored, so it is copied in as it is.
  MergeCounts first = commit("{\"data\":[" + thing(1, "1.00", "2024-01-01T00:00:00Z") + "," +
                             thing(2, "2.00", "2024-01-01T00:00:00Z") + "]}");
  CHECK(store.last_page_direct());
  CHECK(first.inserted == 2);
  // Someone else writes keys 4 (newer than the page's) and 5 (older) in a transaction that is
  // still open when the page is probed: the probe cannot see them, the copy then waits for that
  // transaction and collides with its keys once it commits. The page is committed again through
  // the merge, whose guard keeps the newer version of each row.
  const std::string s = db.quote_ident(schema.name());
  MergeCounts merge;
  {
    // Only what used the merge counts: the page after (all new) may go straight in again.
    PgConnection other(database_url());
    other.exec("BEGIN");
    other.exec(fmt::format("INSERT INTO {}.things (tenant_id, id, amount, modified_on, active, raw) VALUES "
                           "(5, 4, 40, '2025-01-01', true, '{{\"id\":4,\"by\":\"someone\"}}'), "
                           "(5, 5, 50, '2020-01-01', true, '{{\"id\":5,\"by\":\"someone\"}}')",
                           s));
    std::string failure;  // an exception must not leave the thread
    std::thread writer([&] {
      try {
        merge = commit("{\"data\":[" + thing(4, "4.00", "2024-01-01T00:00:00Z") + "," +
                       thing(5, "5.00", "2024-01-01T00:00:00Z") + "," + thing(6, "6.00", "2024-01-01T00:00:00Z") + "]}");
      } catch (const std::exception& e) {
        failure = e.what();
      }
    });
    // The page's copy is waiting for the other transaction (seen from a third connection: the
    // store's is busy in the thread).
    PgConnection watcher(database_url());
    bool waiting = false;
    // (At most 8 s: the store's lock_timeout is 10 s; a slow sanitizer build needs more than 1.)
    for (int i = 0; i < 320 && !waiting; ++i) {
      waiting = watcher.exec("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                             "AND query LIKE 'COPY %things%'").get_int(0, 0) > 0;
      if (!waiting) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    CHECK(waiting);
    other.exec("COMMIT");
    writer.join();
    INFO(failure);
    REQUIRE(failure.empty());
  }
  CHECK_FALSE(store.last_page_direct());
  CHECK(merge.inserted == 1);
  CHECK(merge.updated == 1);
  CHECK(merge.unchanged == 1);
  CHECK(schema.scalar("SELECT amount::bigint FROM {s}.things WHERE tenant_id = 5 AND id = 4") == 40);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.things WHERE tenant_id = 5 AND id = 4 AND raw ->> 'by' = 'someone'") == 1);
  CHECK(schema.scalar("SELECT amount::bigint FROM {s}.things WHERE tenant_id = 5 AND id = 5") == 5);
  CHECK(schema.scalar("SELECT amount::bigint FROM {s}.things WHERE tenant_id = 5 AND id = 6") == 6);
  // Child rows follow the version stored: none for the row someone else wrote, the page's for
  // the others; every stored parent of the page has exactly its own.
  CHECK(schema.scalar("SELECT count(*) FROM {s}.thing_parts WHERE tenant_id = 5 AND parent_id = 4") == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.things WHERE tenant_id = 5") == 5);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.thing_parts WHERE tenant_id = 5 AND parent_id = 5 AND n IN (50, 51)") == 2);

  // After a page that was not all new, the next goes through the merge without a probe; once a
  // page is all new again, probing resumes.
  CHECK(commit("{\"data\":[" + thing(7, "7.00", "2024-01-01T00:00:00Z") + "]}").inserted == 1);
  CHECK_FALSE(store.last_page_direct());
  // A page that meets a stored key goes through staging and the guarded merge.
  MergeCounts second = commit("{\"data\":[" + thing(2, "2.50", "2024-02-01T00:00:00Z") + "," +
                              thing(3, "3.00", "2024-01-01T00:00:00Z") + "]}");
  CHECK_FALSE(store.last_page_direct());
  CHECK(second.inserted == 1);
  CHECK(second.updated == 1);
  CHECK(schema.scalar("SELECT (amount * 100)::bigint FROM {s}.things WHERE tenant_id = 5 AND id = 2") == 250);
  CHECK(commit("{\"data\":[" + thing(8, "8.00", "2024-01-01T00:00:00Z") + "]}").inserted == 1);
  CHECK_FALSE(store.last_page_direct());
  CHECK(commit("{\"data\":[" + thing(9, "9.00", "2024-01-01T00:00:00Z") + "]}").inserted == 1);
  CHECK(store.last_page_direct());
  CHECK(schema.scalar("SELECT count(*) FROM {s}.thing_parts WHERE tenant_id = 5") == 16);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.thing_parts p JOIN {s}.things t ON t.tenant_id = p.tenant_id "
                      "AND t.id = p.parent_id AND p.n / 10 = t.id") == 16);
  CHECK(schema.scalar("SELECT pages FROM {s}.sync_runs WHERE run_id = $1", {std::to_string(run)}) == 6);
}

TEST_CASE("the probe for stored keys reads one index entry per key, even where the statistics say the table is empty",
          "[sync][store][plans]") {
  TestSchema schema;
  PgConnection& db = schema.db();
  const std::string s = db.quote_ident(schema.name());
  JobSpec spec = builtin_job("invoices");
  prepare_tables(db, schema.name(), spec);
  const std::string table = s + ".invoices";
  auto plan_of_probe = [&] {
    std::vector<std::string> keys;
    for (int i = 0; i < 2000; ++i) keys.push_back(std::to_string(900000000 + i * 7));
    PgResult r = db.exec("EXPLAIN " + stored_keys_sql(table, spec.key_type), {"1001", pg_array_literal(keys)});
    std::string plan;
    for (int i = 0; i < r.rows(); ++i) plan += r.get(i, 0) + "\n";
    return plan;
  };
  auto fill = [&](int rows) {
    db.exec(fmt::format("INSERT INTO {} (tenant_id, id, modified_on, active, raw) SELECT 1001, g, "
                        "'2024-01-01'::timestamptz + g * interval '1 second', true, "
                        "jsonb_build_object('id', g, 'summary', repeat('x', 1500)) FROM generate_series($1::bigint, $2::bigint) g",
                        table),
            {std::to_string(1), std::to_string(rows)});
  };
  db.exec(fmt::format("ALTER TABLE {} SET (autovacuum_enabled = off)", table));
  // A first load: the table was never analysed.
  fill(30000);
  std::string plan = plan_of_probe();
  INFO(plan);
  CHECK(plan.find("Index") != std::string::npos);
  CHECK(plan.find("invoices_pkey") != std::string::npos);
  CHECK(plan.find("Seq Scan on invoices") == std::string::npos);
  CHECK(plan.find("Bitmap Heap Scan on invoices") == std::string::npos);
  // Statistics that describe the table empty while it holds 30,000 rows of the tenant.
  db.exec(fmt::format("TRUNCATE {0}; ANALYZE {0}", table));
  fill(30000);
  plan = plan_of_probe();
  INFO(plan);
  CHECK(plan.find("invoices_pkey") != std::string::npos);
  CHECK(plan.find("Seq Scan on invoices") == std::string::npos);
  CHECK(plan.find("Bitmap Heap Scan on invoices") == std::string::npos);
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
    // The event: this process committed two pages (read from the database, not guessed from
    // what the sandbox served); the delay after it only varies the instant of the kill.
    const std::int64_t committed = committed_pages(schema);
    Process p({STSYNC_BINARY, "run"}, env);
    REQUIRE(wait_until([&] { return committed_pages(schema) >= committed + 2; }));
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

TEST_CASE("check authenticates and connects without writing", "[sync][cli]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  ProcessResult ok = run_stsync({"check", "--verbose"}, env);
  CHECK(ok.exit_code == 0);
  CHECK(ok.out.find("credentials accepted") != std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1", {schema.name()}) == 0);
  ProcessResult help = run_stsync({"run", "--help"}, env);
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("--full-refresh") != std::string::npos);
}

TEST_CASE("wrong credentials exit 3 from check and run and the secret is never printed", "[sync][cli]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto bad = with_env(stsync_env(sandbox, schema, kTenantA), {{"ST_CLIENT_SECRET", "wrong-secret-value"}});
  ProcessResult check = run_stsync({"check"}, bad);
  CHECK(check.exit_code == 3);
  CHECK(check.out.find("wrong-secret-value") == std::string::npos);
  CHECK(check.err.find("wrong-secret-value") == std::string::npos);
  ProcessResult run = run_stsync({"run"}, bad);
  CHECK(run.exit_code == 3);
  CHECK(run.err.find("rejected the client credentials") != std::string::npos);
  CHECK(run.err.find("wrong-secret-value") == std::string::npos);
}

TEST_CASE("an unknown job or an unknown command exits 2", "[sync][cli]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  ProcessResult job = run_stsync({"run", "--jobs", "nonsense"}, env);
  CHECK(job.exit_code == 2);
  CHECK(job.err.find("nonsense") != std::string::npos);
  CHECK(run_stsync({"frobnicate"}, env).exit_code == 2);
}

TEST_CASE("a PostgreSQL that refuses connections exits 4 and names the refusal", "[sync][cli]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = with_env(stsync_env(sandbox, schema, kTenantA),
                      {{"DATABASE_URL", "host=127.0.0.1 port=1 user=x dbname=x"}, {"STSYNC_DB_RECONNECT_ATTEMPTS", "0"}});
  ProcessResult run = run_stsync({"run"}, env);
  CHECK(run.exit_code == 4);
  CHECK(run.err.find("refused") != std::string::npos);
}

TEST_CASE("a reader following the change cursor misses no committed change while two writers commit out of order",
          "[sync][cursor]") {
  TestSchema schema;
  PgConnection& db = schema.db();
  const JobSpec spec = things_spec();
  prepare_tables(db, schema.name(), spec);
  const std::string s = db.quote_ident(schema.name());
  auto things = [](std::initializer_list<int> ids, const char* modified) {
    std::string body = "{\"data\":[";
    for (int id : ids)
      body += fmt::format(R"({}{{"id":{},"amount":"{}.00","modifiedOn":"{}"}})", body.size() > 9 ? "," : "", id, id,
                          modified);
    return body + "]}";
  };
  // The reader: one remembered number; each poll one REPEATABLE READ transaction that reads the
  // changes since it and the next horizon, as the README documents.
  PgConnection reader(database_url());
  std::string last = "0";
  std::multiset<std::string> seen;  // "tenant:id:deleted"
  auto poll = [&] {
    reader.exec("BEGIN ISOLATION LEVEL REPEATABLE READ");
    PgResult rows = reader.exec(fmt::format("SELECT tenant_id::text || ':' || id::text || ':' || (deleted_at IS NOT NULL)::text "
                                            "FROM {0}.changes_since(NULL::{0}.things, $1::xid8)",
                                            s),
                                {last});
    std::vector<std::string> got;
    for (int i = 0; i < rows.rows(); ++i) got.push_back(rows.get(i, 0));
    last = reader.exec(fmt::format("SELECT {}.change_horizon()::text", s)).get(0, 0);
    reader.exec("COMMIT");
    seen.insert(got.begin(), got.end());
    return got;
  };
  // Other writers in the cluster (other tests) hold the horizon back for a moment: rows come on a
  // later poll, never lost. Polls until `n` rows came, returns them.
  auto poll_for = [&](size_t n) {
    std::vector<std::string> got;
    wait_until([&] {
      const std::vector<std::string> more = poll();
      got.insert(got.end(), more.begin(), more.end());
      return got.size() >= n;
    });
    return got;
  };
  PgConnection db_a(database_url()), db_b(database_url());
  HandRun a(db_a, schema.name(), spec, 5), b(db_b, schema.name(), spec, 6);
  a.commit(things({1, 2}, "2025-01-01T00:00:00Z"));
  b.commit(things({1, 2}, "2025-01-01T00:00:00Z"));
  CHECK(poll_for(4).size() == 4);
  CHECK(poll().empty());  // nothing new: nothing read twice

  // Writer A merges (its transaction takes its id first) and stays open; writer B starts later,
  // commits first. A cursor on "the largest id seen" would now pass A's id, and miss A's rows.
  std::promise<void> merged, release;
  std::shared_future<void> released = release.get_future().share();
  CommitGates gates;
  gates.after_merge = [&] { merged.set_value(); };
  gates.before_state = [&] { released.wait(); };
  std::string failure;  // an exception must not leave the thread
  std::thread writer_a([&] {
    try {
      a.commit(things({2, 3}, "2025-02-01T00:00:00Z"), &gates);
    } catch (const std::exception& e) {
      failure = e.what();
    }
  });
  merged.get_future().wait();
  b.commit(things({2, 3}, "2025-02-01T00:00:00Z"));
  const std::vector<std::string> while_a_open = poll();
  CHECK(while_a_open.empty());  // B's transaction is newer than A's, which may still commit
  CHECK(schema.scalar(fmt::format("SELECT count(*) FROM {}.things WHERE tenant_id = 6 AND id = 3", s)) == 1);
  release.set_value();
  writer_a.join();
  REQUIRE(failure.empty());
  const std::vector<std::string> after = poll_for(4);
  CHECK(std::multiset<std::string>(after.begin(), after.end()) ==
        std::multiset<std::string>{"5:2:false", "5:3:false", "6:2:false", "6:3:false"});

  // A hard delete moves the row's cursor: the reader sees the deletion.
  REQUIRE(a.store.mark_deleted({"1"}, &a.state, a.run) == 1);
  CHECK(poll_for(1) == std::vector<std::string>{"5:1:true"});
  // Every committed version was read exactly once per change.
  CHECK(seen.count("5:2:false") == 2);
  CHECK(seen.count("6:1:false") == 1);
  CHECK(seen.size() == 9);
}

TEST_CASE("a table from before the change cursor gains it without a rewrite and rows written later carry it",
          "[sync][cursor]") {
  TestSchema schema;
  PgConnection& db = schema.db();
  const JobSpec spec = things_spec();
  prepare_tables(db, schema.name(), spec);
  const std::string s = db.quote_ident(schema.name());
  // As an older stsync left it: no change_xid, no index on it, a row already stored.
  db.exec(fmt::format("ALTER TABLE {}.things DROP COLUMN change_xid", s));
  db.exec(fmt::format("INSERT INTO {}.things (tenant_id, id, amount, modified_on, active, raw) VALUES "
                      "(5, 1, 1, '2024-01-01', true, '{{\"id\":1}}')",
                      s));
  const std::int64_t file_before = schema.scalar(fmt::format("SELECT pg_relation_filenode('{}.things')", s));
  ensure_job_tables(db, schema.name(), {spec});
  CHECK(schema.scalar(fmt::format("SELECT pg_relation_filenode('{}.things')", s)) == file_before);  // not rewritten
  CHECK(schema.scalar(fmt::format("SELECT count(*) FROM {}.things WHERE change_xid IS NULL", s)) == 1);
  CHECK(schema.scalar("SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = 'things_change_idx'",
                      {schema.name()}) == 1);
  HandRun run(db, schema.name(), spec);
  run.commit(R"({"data":[{"id":2,"amount":"2.00","modifiedOn":"2025-01-01T00:00:00Z"}]})");
  // (Another test's open write transaction may hold the horizon back for a moment.)
  CHECK(wait_until([&] {
    return schema.scalar(fmt::format("SELECT count(*) FROM {0}.changes_since(NULL::{0}.things, '0')", s)) == 1;
  }));
}

TEST_CASE("every table and column of every default job has a comment from the specs and migrations keep them current",
          "[sync][comments]") {
  TestSchema schema;
  PgConnection& db = schema.db();
  std::vector<JobSpec> specs = load_job_specs("");
  apply_migrations(db, schema.name());
  REQUIRE(ensure_job_tables(db, schema.name(), specs).empty());
  std::vector<std::string> tables;
  for (const JobSpec& spec : specs) {
    tables.push_back(spec.table);
    for (const ChildSpec& child : spec.children) tables.push_back(child.table);
  }
  const std::string list = fmt::format("{}", fmt::join(tables, ","));
  CHECK(schema.scalar("SELECT count(*) FROM unnest(string_to_array($1, ',')) AS t(name) "
                      "WHERE obj_description(to_regclass(quote_ident($2) || '.' || quote_ident(t.name)), 'pg_class') IS NULL",
                      {list, schema.name()}) == 0);
  const std::int64_t columns = schema.scalar(
      "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 AND table_name = ANY(string_to_array($2, ','))",
      {schema.name(), list});
  CHECK(columns > 2000);
  CHECK(schema.scalar("SELECT count(*) FROM information_schema.columns c WHERE c.table_schema = $1 AND "
                      "c.table_name = ANY(string_to_array($2, ',')) AND col_description(to_regclass(quote_ident($1) || '.' "
                      "|| quote_ident(c.table_name)), c.ordinal_position) IS NULL",
                      {schema.name(), list}) == 0);
  // The spec's own words where it has them.
  auto comment = [&](const std::string& table, const std::string& column) {
    return db.exec("SELECT col_description(to_regclass(quote_ident($1) || '.' || quote_ident($2)), a.attnum) FROM "
                   "pg_attribute a WHERE a.attrelid = to_regclass(quote_ident($1) || '.' || quote_ident($2)) AND a.attname = $3",
                   {schema.name(), table, column})
        .get(0, 0);
  };
  CHECK(comment("customers", "name") == "Name of the customer (from raw: name)");
  CHECK(comment("invoices", "change_xid").find("changes_since") != std::string::npos);
  // A job file whose description changed: the next run's migration writes the new one.
  for (JobSpec& spec : specs)
    if (spec.name == "customers") spec.columns.front().description = "Who the customer is";
  REQUIRE(ensure_job_tables(db, schema.name(), specs).empty());
  CHECK(comment("customers", "name") == "Who the customer is (from raw: name)");
}

TEST_CASE("the committed data dictionary and dbt sources are what stsync docs and stsync dbt write for the default jobs",
          "[sync][comments]") {
  auto read = [](const std::string& path) {
    std::ifstream in(std::string(STSYNC_SOURCE_DIR) + "/" + path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  const std::map<std::string, std::string> env = {{"STSYNC_SCHEMA", "servicetitan"}};
  ProcessResult docs = run_stsync({"docs"}, env);
  REQUIRE(docs.exit_code == 0);
  CHECK(docs.out.find("| `invoice_date` |") != std::string::npos);
  CHECK(docs.out == read("docs/data-dictionary.md"));  // else: build/stsync docs --out docs/data-dictionary.md
  ProcessResult dbt = run_stsync({"dbt"}, env);
  REQUIRE(dbt.exit_code == 0);
  CHECK(dbt.out.find("loaded_at_field: synced_at") != std::string::npos);
  CHECK(dbt.out == read("docs/dbt/sources.yml"));  // else: build/stsync dbt --out docs/dbt/sources.yml
}

TEST_CASE("a month query in a non-UTC session counts an invoice in its own month and no column name needs quoting",
          "[sync][types]") {
  TestSandbox sandbox;
  TestSchema schema;
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, stsync_env(sandbox, schema, kTenantA)).exit_code == 0);
  PgConnection& db = schema.db();
  const std::string s = db.quote_ident(schema.name());
  db.exec("SET TIME ZONE 'America/Chicago'");
  // The calendar date the API sent ("2025-03-01T00:00:00Z" means 1 March), by month.
  const std::int64_t first_of_month = std::stoll(
      db.exec(fmt::format("SELECT count(*) FROM {}.invoices WHERE raw ->> 'invoiceDate' LIKE '%-01T%'", s)).get(0, 0));
  CHECK(first_of_month > 0);  // the dates a time-zone trap would move to the month before
  CHECK(db.exec(fmt::format("SELECT count(*) FROM {}.invoices WHERE to_char(invoice_date, 'YYYY-MM') <> "
                            "left(raw ->> 'invoiceDate', 7) OR to_char(due_date, 'YYYY-MM') <> left(raw ->> 'dueDate', 7)",
                            s))
            .get(0, 0) == "0");
  CHECK(db.exec(fmt::format("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '{}.invoices'::regclass "
                            "AND attname = 'invoice_date'",
                            s))
            .get(0, 0) == "date");
  db.exec("SET TIME ZONE 'UTC'");
  // A field named like a reserved word is stored under a name that needs no quotes.
  CHECK(db.exec(fmt::format("SELECT count(*) FROM {}.invoices_items WHERE order_value = (raw ->> 'order')::int", s))
            .get(0, 0) == db.exec(fmt::format("SELECT count(*) FROM {}.invoices_items", s)).get(0, 0));
  CHECK(db.exec("SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON "
                "n.oid = c.relnamespace JOIN pg_get_keywords() k ON k.word = a.attname AND k.catcode IN ('R', 'T') "
                "WHERE n.nspname = $1 AND a.attnum > 0",
                {schema.name()})
            .get(0, 0) == "0");
}

TEST_CASE("history keeps three versions of a row changed twice and marks its deletion", "[sync][history]") {
  TestSchema schema;
  PgConnection& db = schema.db();
  JobSpec spec = things_spec("history = true\n");
  prepare_tables(db, schema.name(), spec);
  HandRun run(db, schema.name(), spec);
  auto thing = [](int id, const char* amount, const char* modified) {
    return fmt::format(R"({{"data":[{{"id":{},"amount":"{}","modifiedOn":"{}"}}]}})", id, amount, modified);
  };
  run.commit(thing(1, "1.00", "2025-01-01T00:00:00Z"));  // a first load: copied straight in
  run.commit(thing(1, "2.00", "2025-02-01T00:00:00Z"));  // a new version, through the merge
  run.commit(thing(1, "2.00", "2025-02-01T00:00:00Z"));  // the same version again: no new one
  run.commit(thing(1, "1.00", "2025-01-01T00:00:00Z"));  // an older one replayed: refused by the guard
  run.commit(thing(1, "3.00", "2025-03-01T00:00:00Z"));
  REQUIRE(run.store.mark_deleted({"1"}, &run.state, run.run) == 1);
  PgResult versions = db.exec(fmt::format("SELECT amount::text, valid_from::text, coalesce(valid_to::text, '-'), "
                                          "deleted_at IS NOT NULL, change_xid IS NOT NULL FROM {}.things_history "
                                          "WHERE tenant_id = 5 AND id = 1 ORDER BY valid_from, valid_to NULLS LAST",
                                          db.quote_ident(schema.name())));
  REQUIRE(versions.rows() == 4);
  CHECK(versions.get(0, 0) == "1.00");
  CHECK(versions.get(0, 1) == "2025-01-01 00:00:00+00");
  CHECK(versions.get(0, 2) == "2025-02-01 00:00:00+00");  // closed by the next version
  CHECK(versions.get(1, 0) == "2.00");
  CHECK(versions.get(1, 2) == "2025-03-01 00:00:00+00");
  CHECK(versions.get(2, 0) == "3.00");
  CHECK(versions.get(2, 3) == "f");
  CHECK(versions.get(3, 0) == "3.00");  // the deletion: the last version, marked
  CHECK(versions.get(3, 3) == "t");
  CHECK(versions.get(3, 2) == "-");     // current
  CHECK(versions.get(2, 2) == versions.get(3, 1));  // the last live version ends where the deletion begins
  for (int i = 0; i < versions.rows(); ++i) CHECK(versions.get(i, 4) == "t");
  // A history switched on for a table that has rows starts from their current versions.
  JobSpec plain = things_spec();
  plain.name = plain.table = "others";
  ensure_job_tables(db, schema.name(), {plain});
  HandRun other(db, schema.name(), plain, 6);
  other.commit(thing(7, "7.00", "2025-01-01T00:00:00Z"));
  plain.history = true;
  ensure_job_tables(db, schema.name(), {plain});
  CHECK(schema.scalar("SELECT count(*) FROM {s}.others_history WHERE id = 7 AND valid_to IS NULL") == 1);
}
