// Hardening: the warehouse keeps working while stsync runs, a watermark never claims more than
// is stored, one bad value never blocks a job for good, stop signals and limits, and a sandbox as
// unkind as the real API (its quirks, each tested here against a real PostgreSQL).
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <simdjson.h>
#include <chrono>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <thread>

#include "embedded.h"
#include "migrate.h"
#include "page_parser.h"
#include "store.h"
#include "support.h"

using namespace stsync;
using namespace stsync::test;

namespace {

std::map<std::string, std::string> env_for(const TestSandbox& sandbox, const TestSchema& schema,
                                           const std::map<std::string, std::string>& more = {}) {
  return with_env(with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_MAX_BACKOFF_SECONDS", "0.2"}}), more);
}

void check_equal(TestSchema& schema, TestSandbox& sandbox, const std::vector<std::string>& jobs) {
  for (const std::string& job : jobs) {
    auto problems = compare_with_truth(schema, sandbox, builtin_job(job), kTenantA);
    INFO("job " << job);
    for (const auto& p : problems) UNSCOPED_INFO(p);
    CHECK(problems.empty());
  }
}

sandbox::ServerOptions with_quirks(sandbox::ServerOptions o, const sandbox::Quirks& q) {
  o.data.quirks = q;
  return o;
}

// A jobs directory: the built-in job files, each passed through `edit` (name → text).
std::string jobs_dir(const std::string& tag, const std::function<std::string(const std::string&, std::string)>& edit) {
  const std::string dir = fmt::format("/tmp/stsync-hardening-{}-{}", getpid(), tag);
  std::filesystem::create_directories(dir);
  for (const EmbeddedFile& f : embedded_jobs())
    std::ofstream(dir + "/" + std::string(f.name)) << edit(std::string(f.name), std::string(f.content));
  return dir;
}

std::string replace_once(std::string text, const std::string& from, const std::string& to) {
  const size_t pos = text.find(from);
  REQUIRE(pos != std::string::npos);
  return text.replace(pos, from.size(), to);
}

// The ids of the export feed's first page, in page order, as the sandbox serves them.
std::vector<std::string> first_export_page_ids(TestSandbox& sandbox, int batch) {
  sandbox::ExportQuery q;
  q.batch_size = batch;
  auto page = sandbox.server().dataset().export_page(kTenantA, "invoices", q);
  REQUIRE(page);
  // Read with simdjson's DOM here, not the product's PageParser: the test's expectation must
  // not share the code it judges.
  simdjson::dom::parser parser;
  std::vector<std::string> ids;
  for (simdjson::dom::element record : parser.parse("[" + page->rows.data + "]").get_array())
    ids.push_back(std::to_string(record["id"].get_int64().value()));
  return ids;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The warehouse keeps working while stsync runs

TEST_CASE("a routine run does not wait for a reporting transaction that has read its tables", "[hardening][locks]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = env_for(sandbox, schema, {{"STSYNC_LOCK_TIMEOUT_SECONDS", "2"}});
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  // A report: an open transaction that has read both job tables (ACCESS SHARE until it ends).
  PgConnection report(database_url());
  report.exec("BEGIN");
  report.exec(fmt::format("SELECT count(*) FROM {0}.invoices, {0}.employees", report.quote_ident(schema.name())));
  sandbox.admin("changes", "tenant=1001&resource=invoices&n=40");
  sandbox.admin("changes", "tenant=1001&resource=employees&n=10");
  sandbox.admin("clock", "advance_seconds=3600");
  ProcessResult r = run_stsync({"run"}, env);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("cannot add column") == std::string::npos);
  check_equal(schema, sandbox, {"invoices", "employees"});
  // The report held its locks on both tables through the whole run (it is the same transaction,
  // and they are still granted): a run that needed a conflicting lock would have waited
  // lock_timeout and failed instead of finishing exactly.
  CHECK(report.exec(fmt::format("SELECT count(*) FROM pg_catalog.pg_locks WHERE pid = pg_backend_pid() AND granted "
                                "AND mode = 'AccessShareLock' AND relation IN ('{0}.invoices'::regclass, "
                                "'{0}.employees'::regclass)",
                                report.quote_ident(schema.name())))
            .get_int(0, 0) == 2);
  report.exec("COMMIT");
}

TEST_CASE("a column a job file gains waits at most lock_timeout behind a reader and is added by a later run",
          "[hardening][locks]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = env_for(sandbox, schema, {{"STSYNC_LOCK_TIMEOUT_SECONDS", "1"}});
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  const std::string dir = jobs_dir("gains", [](const std::string& name, std::string text) {
    if (name != "employees.toml") return text;
    return replace_once(text, "columns = [", "columns = [\n  { path = \"home.city\", type = \"text\" },");
  });
  PgConnection report(database_url());
  report.exec("BEGIN");
  report.exec(fmt::format("SELECT count(*) FROM {}.employees", report.quote_ident(schema.name())));
  ProcessResult r = run_stsync({"run"}, with_env(env, {{"STSYNC_JOBS_DIR", dir}}));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("cannot add column home_city to table") != std::string::npos);
  CHECK(r.err.find("holds a lock") != std::string::npos);
  // The other job ran; the busy one did not touch its table.
  check_equal(schema, sandbox, {"invoices"});
  CHECK(schema.scalar("SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 "
                      "AND table_name = 'employees' AND column_name = 'home_city'",
                      {schema.name()}) == 0);
  report.exec("COMMIT");
  ProcessResult again = run_stsync({"run", "--full-refresh"}, with_env(env, {{"STSYNC_JOBS_DIR", dir}}));
  CHECK(again.exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.employees WHERE home_city IS NOT NULL") > 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("a session outside UTC stores zone-less and offset timestamps of parents and children as UTC",
          "[hardening][timezone]") {
  sandbox::Quirks q;
  q.timestamp_styles = true;
  TestSandbox sandbox(with_quirks(TestSandbox::default_options(300, 60), q));
  TestSchema schema;
  // The truth is written with 'Z', '+02:00' and no zone at all.
  const std::string truth = sandbox.truth(kTenantA, "invoices");
  REQUIRE(truth.find("+02:00\"") != std::string::npos);
  REQUIRE(truth.find("T00:00:00\"") != std::string::npos);
  // Kiritimati is UTC+14: a zone-less midnight cast there lands on the previous day in UTC.
  ProcessResult r = run_stsync({"run"}, env_for(sandbox, schema, {{"PGTZ", "Pacific/Kiritimati"}}));
  REQUIRE(r.exit_code == 0);
  check_equal(schema, sandbox, {"invoices", "employees"});
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices_items WHERE raw ->> 'serviceDate' NOT LIKE '%Z' "
                      "AND raw ->> 'serviceDate' NOT LIKE '%+02:00' AND extract(hour FROM service_date AT TIME ZONE 'UTC') = 0") > 0);
}

TEST_CASE("a connection that changes server sessions between transactions is refused with the pooler named",
          "[hardening][pooler]") {
  TestSchema schema;
  PgConnection& db = schema.db();
  apply_migrations(db, schema.name());
  JobSpec spec = builtin_job("employees");
  ensure_job_tables(db, schema.name(), {spec});
  JobStore store(db, schema.name(), spec, kTenantA);
  REQUIRE(store.try_lock());
  JobState state = store.load_state();
  const std::int64_t run = store.begin_run(SyncMode::export_feed);
  // What PgBouncer in transaction mode does: the next transaction runs on another server session,
  // where neither the job's lock nor its staging table exists.
  db.reconnect();
  PageParser parser(spec);
  ParsedPage page;
  std::string body = R"({"data":[{"id":1,"modifiedOn":"2024-01-01T00:00:00Z"}]})";
  parser.parse(body, kTenantA, page);
  try {
    store.commit_page(page, state, run);
    FAIL("the commit went through on another server session");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::config);
    CHECK(std::string(e.what()).find("pool_mode = session") != std::string::npos);
  }
  CHECK(schema.scalar("SELECT count(*) FROM {s}.employees") == 0);
}

TEST_CASE("child rows left behind by a parent row deleted by hand are replaced when the parent comes back",
          "[hardening][children]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = env_for(sandbox, schema);
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  // A person removes invoices to have them loaded again, forgets their items, and resets the job.
  schema.db().exec(fmt::format("DELETE FROM {0}.invoices WHERE id IN (SELECT parent_id FROM {0}.invoices_items LIMIT 5); "
                               "UPDATE {0}.sync_state SET export_token = NULL, complete_through = NULL",
                               schema.db().quote_ident(schema.name())));
  ProcessResult r = run_stsync({"run", "--jobs", "invoices"}, env);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("child rows without their parent row are in the way") != std::string::npos);
  check_equal(schema, sandbox, {"invoices"});
}

TEST_CASE("pages committed on two connections never commit a token ahead of the rows it covers",
          "[hardening][connections]") {
  auto o = TestSandbox::default_options(1200, 20);
  o.export_batch = 40;
  TestSandbox sandbox(o);
  TestSchema schema;
  auto env = env_for(sandbox, schema, {{"STSYNC_PAGE_CONNECTIONS", "2"}});
  REQUIRE(run_stsync({"migrate"}, env).exit_code == 0);
  // Inside each page's transaction, when its state is written: every page counted so far must
  // be visible, i.e. committed (other pages) or its own. A first load repeats no id, so page k's
  // state needs at least 40 * k invoices. Rows may commit ahead of the token, never behind it.
  schema.db().exec(fmt::format(
      "CREATE FUNCTION {0}.token_after_rows() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
      "IF NEW.job = 'invoices' AND NEW.pages_total > OLD.pages_total AND "
      "(SELECT count(*) FROM {0}.invoices WHERE tenant_id = NEW.tenant_id) < 40 * NEW.pages_total THEN "
      "RAISE EXCEPTION 'token of page % committed ahead of its rows', NEW.pages_total; END IF; RETURN NEW; END $$; "
      "CREATE TRIGGER token_after_rows BEFORE UPDATE ON {0}.sync_state FOR EACH ROW "
      "EXECUTE FUNCTION {0}.token_after_rows()",
      schema.db().quote_ident(schema.name())));
  ProcessResult r = run_stsync({"run", "--jobs", "invoices"}, env);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("ahead of its rows") == std::string::npos);
  CHECK(schema.scalar("SELECT pages FROM {s}.sync_runs WHERE job = 'invoices'") == 30);
  check_equal(schema, sandbox, {"invoices"});
  // And the same feed on one connection gives the same table.
  TestSchema one;
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, with_env(env_for(sandbox, one), {{"STSYNC_PAGE_CONNECTIONS", "1"}})).exit_code == 0);
  check_equal(one, sandbox, {"invoices"});
}

// ---------------------------------------------------------------------------------------------
// A watermark never claims more than is stored

TEST_CASE("a partial export followed by --mode list still reads every row", "[hardening][watermark]") {
  sandbox::Quirks q;
  q.export_disorder = true;  // the first pages hold the newest rows
  auto o = with_quirks(TestSandbox::default_options(600, 20), q);
  o.export_batch = 50;
  TestSandbox sandbox(o);
  TestSchema schema;
  auto env = env_for(sandbox, schema, {{"STSYNC_PARALLEL", "1"}});
  sandbox.admin("faults", "next=none,none,none,bad_json");
  ProcessResult partial = run_stsync({"run", "--jobs", "invoices"}, env);
  REQUIRE(partial.exit_code == 1);
  REQUIRE(schema.scalar("SELECT count(*) FROM {s}.invoices") > 0);
  REQUIRE(schema.scalar("SELECT count(*) FROM {s}.invoices") < 600);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_state WHERE job = 'invoices' AND watermark IS NOT NULL "
                      "AND complete_through IS NULL") == 1);
  ProcessResult list = run_stsync({"run", "--jobs", "invoices", "--mode", "list"}, env);
  CHECK(list.exit_code == 0);
  check_equal(schema, sandbox, {"invoices"});
}

TEST_CASE("a continueFrom token rejected mid-walk is tried once more, then the walk restarts at complete-through",
          "[hardening][watermark]") {
  sandbox::Quirks q;
  q.export_disorder = true;  // a restart at the mid-walk watermark would skip most rows
  auto o = with_quirks(TestSandbox::default_options(1500, 20), q);
  o.export_batch = 30;
  TestSandbox sandbox(o);
  TestSchema schema;
  Process p({STSYNC_BINARY, "run", "--jobs", "invoices"}, env_for(sandbox, schema, {{"STSYNC_REQUESTS_PER_SECOND", "30"}}));
  REQUIRE(sandbox.wait_for_records_served(kTenantA, 300));
  sandbox.admin("invalidate-export-tokens");
  ProcessResult r = p.wait();
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("trying the last committed token again") != std::string::npos);
  CHECK(r.err.find("restarting from the beginning of the feed") != std::string::npos);
  check_equal(schema, sandbox, {"invoices"});
}

TEST_CASE("continuation tokens that expire between runs fall back to complete-through minus the overlap",
          "[hardening][watermark]") {
  sandbox::Quirks q;
  q.export_token_ttl_seconds = 1;
  TestSandbox sandbox(with_quirks(TestSandbox::default_options(300, 20), q));
  TestSchema schema;
  auto env = env_for(sandbox, schema);
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  const std::int64_t through =
      schema.scalar("SELECT extract(epoch FROM complete_through)::bigint FROM {s}.sync_state WHERE job = 'invoices'");
  CHECK(through > 0);
  sandbox.admin("clock", "advance_seconds=86400");
  sandbox.admin("changes", "tenant=1001&resource=invoices&n=30");
  sandbox.admin("clock", "advance_seconds=3600");  // the stored token is long expired now
  ProcessResult r = run_stsync({"run", "--jobs", "invoices"}, env);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("(complete through − overlap)") != std::string::npos);
  check_equal(schema, sandbox, {"invoices"});
  CHECK(schema.scalar("SELECT extract(epoch FROM complete_through)::bigint FROM {s}.sync_state WHERE job = 'invoices'") >
        through);
}

TEST_CASE("rows repeated across pages and fed out of order are stored once, exactly", "[hardening][watermark]") {
  sandbox::Quirks q;
  q.export_disorder = true;
  q.export_repeat_rows = 7;
  auto o = with_quirks(TestSandbox::default_options(700, 120), q);
  o.export_batch = 40;
  TestSandbox sandbox(o);
  TestSchema schema;
  REQUIRE(run_stsync({"run"}, env_for(sandbox, schema)).exit_code == 0);
  check_equal(schema, sandbox, {"invoices", "employees"});
  CHECK(schema.scalar("SELECT sum(rows_unchanged) FROM {s}.sync_runs WHERE job = 'invoices'") > 0);  // the repeats
}

TEST_CASE("a future-dated record moves neither the watermark nor complete-through past the server's clock",
          "[hardening][watermark]") {
  sandbox::Quirks q;
  q.future_record = true;
  TestSandbox sandbox(with_quirks(TestSandbox::default_options(300, 20), q));
  TestSchema schema;
  ProcessResult r = run_stsync({"run", "--jobs", "invoices"}, env_for(sandbox, schema));
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("is after the server's clock") != std::string::npos);
  check_equal(schema, sandbox, {"invoices"});
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices WHERE modified_on > '2030-01-01'") == 1);
  const std::int64_t clock = sandbox.server().dataset().now() / kTicksPerSecond;
  CHECK(schema.scalar("SELECT extract(epoch FROM watermark)::bigint FROM {s}.sync_state WHERE job = 'invoices'") <= clock);
  CHECK(schema.scalar("SELECT extract(epoch FROM complete_through)::bigint FROM {s}.sync_state WHERE job = 'invoices'") <=
        clock);
}

TEST_CASE("a list walk reads a dense instant completely even when the server's order changes on every call",
          "[hardening][list]") {
  sandbox::Quirks q;
  q.unstable_list_order = true;
  TestSandbox sandbox(with_quirks(TestSandbox::default_options(600, 20), q));
  TestSchema schema;
  const std::string config = write_temp_file("[jobs.invoices]\nmode = \"list\"\npage_size = 40\n");
  auto env = env_for(sandbox, schema);
  REQUIRE(run_stsync({"run", "--jobs", "invoices", "--config", config}, env).exit_code == 0);
  // The frozen clock stamps 120 changes with one modifiedOn: pages of 40 must page that instant
  // by offset, and the server shuffles it on every call.
  sandbox.admin("changes", "tenant=1001&resource=invoices&n=120");
  sandbox.admin("clock", "advance_seconds=3600");
  ProcessResult r = run_stsync({"run", "--jobs", "invoices", "--config", config}, env);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("another pass") != std::string::npos);  // the order did move
  check_equal(schema, sandbox, {"invoices"});
  std::filesystem::remove(config);
}

TEST_CASE("a server that rounds its list filters gets a clear error, not an endless walk", "[hardening][list]") {
  sandbox::Quirks q;
  q.filter_rounding_seconds = 86400;
  TestSandbox sandbox(with_quirks(TestSandbox::default_options(50, 300), q));
  TestSchema schema;
  const std::string config = write_temp_file("[jobs.employees]\npage_size = 20\n");
  ProcessResult r = run_stsync({"run", "--jobs", "employees", "--mode", "list", "--config", config},
                               env_for(sandbox, schema));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("outside the window it was asked for") != std::string::npos);
  CHECK(r.err.find("job employees tenant 1001 list window created") != std::string::npos);
  std::filesystem::remove(config);
}

TEST_CASE("hasMore with the token just sent stores the page and stops instead of looping", "[hardening][export]") {
  auto o = TestSandbox::default_options(300, 20);
  o.export_batch = 50;
  TestSandbox sandbox(o);
  TestSchema schema;
  auto env = env_for(sandbox, schema, {{"STSYNC_PARALLEL", "1"}});
  sandbox.admin("faults", "next=none,stuck_token");
  ProcessResult r = run_stsync({"run", "--jobs", "invoices"}, env);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("continueFrom is the token just sent") != std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices") == 100);
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  check_equal(schema, sandbox, {"invoices"});
}

// ---------------------------------------------------------------------------------------------
// One bad value never blocks a job for good

TEST_CASE("values PostgreSQL refuses go to quarantine one record at a time and the job goes on",
          "[hardening][quarantine]") {
  auto o = TestSandbox::default_options(400, 20);
  o.export_batch = 100;
  TestSandbox sandbox(o);
  TestSchema schema;
  const std::string config = write_temp_file("[jobs.invoices]\nquarantine = true\n");
  auto env = env_for(sandbox, schema, {{"STSYNC_PARALLEL", "1"}});
  sandbox.admin("faults", "next=none,refused_values");
  ProcessResult r = run_stsync({"run", "--jobs", "invoices", "--config", config}, env);
  INFO(r.err);
  CHECK(r.exit_code == 0);
  // The lone surrogate, the number beyond numeric and year 0000 in an item are refused; the raw
  // control character is stored escaped (the same string value), with a warning.
  CHECK(r.err.find("1 raw control character(s) inside strings, stored escaped") != std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.quarantine WHERE job = 'invoices'") == 3);
  CHECK(schema.scalar("SELECT count(DISTINCT record_id) FROM {s}.quarantine WHERE error LIKE '%PostgreSQL refused%'") == 3);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.quarantine WHERE error LIKE '%SQLSTATE 22008%'") == 1);  // year 0000
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices WHERE raw ->> 'note' = 'bell ' || chr(7) || ' inside'") == 1);
  // Every other record is stored and exact; the quarantined ones are the only ones missing.
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices") == 397);
  auto problems = compare_with_truth(schema, sandbox, builtin_job("invoices"), kTenantA);
  CHECK(problems.size() == 4);
  int missing = 0;
  for (const auto& p : problems) missing += p.find("missing from the database") != std::string::npos;
  CHECK(missing == 3);  // and the record with the extra "note" the sandbox put in its page
  // `stsync quarantine` lists them; after a job-file fix (the child column that could not take
  // year 0000 is dropped from the job file), --retry stores the one that the fix cures.
  ProcessResult listed = run_stsync({"quarantine", "--config", config}, env);
  CHECK(listed.exit_code == 0);
  CHECK(listed.out.find("3 record(s)") != std::string::npos);
  const std::string dir = jobs_dir("fix", [](const std::string& name, std::string text) {
    if (name != "invoices.toml") return text;
    return replace_once(text, "  { path = \"serviceDate\", type = \"timestamptz\" },\n", "");
  });
  const std::string horizon = std::to_string(schema.scalar("SELECT {s}.change_horizon()::text::bigint"));
  ProcessResult retried = run_stsync({"quarantine", "--retry", "--config", config}, with_env(env, {{"STSYNC_JOBS_DIR", dir}}));
  CHECK(retried.out.find("1 stored, 2 still refused") != std::string::npos);
  // The record stored by the retry moves the change cursor: a reader following it gets that row.
  // (Another test's open write transaction may hold the horizon back for a moment.)
  CHECK(wait_until([&] {
    return schema.scalar("SELECT count(*) FROM {s}.changes_since(NULL::{s}.invoices, $1::text::xid8)", {horizon}) == 1;
  }));
  CHECK(retried.exit_code == 1);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices") == 398);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.quarantine WHERE stored_at IS NULL") == 2);
  ProcessResult status = run_stsync({"status", "--by-job", "--json"}, env);
  CHECK(status.out.find("\"quarantined\":2") != std::string::npos);
  std::filesystem::remove_all(dir);
  std::filesystem::remove(config);
}

TEST_CASE("without quarantine a refused value fails the job naming the right record, and earlier pages stay",
          "[hardening][quarantine]") {
  auto o = TestSandbox::default_options(400, 20);
  o.export_batch = 100;
  TestSandbox sandbox(o);
  TestSchema schema;
  // The second page's second record carries the lone surrogate.
  const std::vector<std::string> ids = first_export_page_ids(sandbox, 200);
  sandbox.admin("faults", "next=none,refused_values");
  ProcessResult r = run_stsync({"run", "--jobs", "invoices"}, env_for(sandbox, schema, {{"STSYNC_PARALLEL", "1"}}));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find(fmt::format("export page 2 (from token): record #2 (id {}): PostgreSQL refused a value", ids[101])) !=
        std::string::npos);
  CHECK(r.err.find("fix or report the record") != std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices") == 100);  // page 1 only
  // The token and watermark are page 1's: the next run reads pages 2 to 4 once, and is exact.
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_state WHERE job = 'invoices' AND export_token IS NOT NULL AND "
                      "watermark IS NOT NULL") == 1);
  const std::int64_t served = sandbox.stat(kTenantA, "records_served");
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env_for(sandbox, schema)).exit_code == 0);
  CHECK(sandbox.stat(kTenantA, "records_served") - served == 300);
  check_equal(schema, sandbox, {"invoices"});
}

TEST_CASE("disk full is a fault of the server: the job fails without blaming a record and the next run resumes",
          "[hardening][faults]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = env_for(sandbox, schema, {{"STSYNC_PARALLEL", "1"}});
  REQUIRE(run_stsync({"migrate"}, env).exit_code == 0);
  const std::string s = schema.db().quote_ident(schema.name());
  // What a full disk answers to an INSERT, without filling one.
  schema.db().exec(fmt::format("CREATE FUNCTION {0}.disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                               "RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; "
                               "END $$; CREATE TRIGGER disk_full BEFORE INSERT ON {0}.invoices FOR EACH ROW EXECUTE FUNCTION {0}.disk_full()",
                               s));
  const std::string config = write_temp_file("[jobs.invoices]\nquarantine = true\n");
  ProcessResult r = run_stsync({"run", "--config", config}, env);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("SQLSTATE 53100") != std::string::npos);
  CHECK(r.err.find("not of the data") != std::string::npos);
  CHECK(r.err.find("record #") == std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.quarantine") == 0);
  check_equal(schema, sandbox, {"employees"});  // the other job went on
  schema.db().exec(fmt::format("DROP TRIGGER disk_full ON {}.invoices", s));
  REQUIRE(run_stsync({"run", "--config", config}, env).exit_code == 0);
  check_equal(schema, sandbox, {"invoices", "employees"});
  std::filesystem::remove(config);
}

TEST_CASE("a statement that outlives statement_timeout fails the job as a server condition, and the next run resumes",
          "[hardening][faults]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = env_for(sandbox, schema, {{"STSYNC_PARALLEL", "1"}, {"STSYNC_STATEMENT_TIMEOUT_SECONDS", "1"}});
  REQUIRE(run_stsync({"migrate"}, env).exit_code == 0);
  const std::string s = schema.db().quote_ident(schema.name());
  // A merge that hangs (a stuck trigger, a saturated disk): stsync's statement must not hang with it.
  schema.db().exec(fmt::format("CREATE FUNCTION {0}.stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                               "PERFORM pg_sleep(30); RETURN NEW; END $$; CREATE TRIGGER stall BEFORE INSERT ON "
                               "{0}.employees FOR EACH ROW EXECUTE FUNCTION {0}.stall()",
                               s));
  ProcessResult r = run_stsync({"run", "--jobs", "employees"}, env);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("SQLSTATE 57014") != std::string::npos);
  CHECK(r.err.find("job employees tenant 1001 export page 1") != std::string::npos);  // where it happened
  CHECK(r.err.find("not of the data") != std::string::npos);
  schema.db().exec(fmt::format("DROP TRIGGER stall ON {}.employees", s));
  REQUIRE(run_stsync({"run", "--jobs", "employees"}, env).exit_code == 0);
  check_equal(schema, sandbox, {"employees"});
}

// ---------------------------------------------------------------------------------------------
// Stop signals and limits

TEST_CASE("SIGTERM mid-page stops the run without waiting for the page, records it as interrupted, and the next run completes",
          "[hardening][signals]") {
  auto o = TestSandbox::default_options(2000, 20);
  o.export_batch = 100;
  o.faults.slow_ms = 20000;  // each page trickles out over 20 s
  TestSandbox sandbox(o);
  TestSchema schema;
  auto env = env_for(sandbox, schema, {{"STSYNC_PARALLEL", "1"}});
  sandbox.admin("faults", "next=none,none,slow_body,slow_body,slow_body");
  Process p({STSYNC_BINARY, "run", "--jobs", "invoices"}, env);
  REQUIRE(sandbox.wait_for_stat(kTenantA, "slow_bodies_started", 1));  // the third page is trickling in
  p.send_signal(SIGTERM);
  ProcessResult r = p.wait();
  INFO(r.err);
  // The page takes 20 s to arrive: the run ended before it did (no clock is read to tell).
  CHECK(sandbox.stat(kTenantA, "slow_bodies_finished") == 0);
  CHECK(r.exit_code == 143);
  CHECK(r.err.find("stopped by SIGTERM") != std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'invoices' AND outcome = 'interrupted' "
                      "AND error LIKE '%SIGTERM%' AND finished_at IS NOT NULL") == 1);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices") == 200);  // the committed pages
  // A deliberate stop is not an error: status says interrupted, and no error stands.
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_state WHERE job = 'invoices' AND last_error IS NOT NULL") == 0);
  ProcessResult shown = run_stsync({"status", "--job", "invoices"}, env);
  CHECK(shown.out.find("INTERRUPTED") != std::string::npos);
  CHECK(shown.out.find("ERROR:") == std::string::npos);
  CHECK(run_stsync({"status", "--failed"}, env).out.find("invoices") == std::string::npos);
  sandbox.admin("faults", "clear=1");
  REQUIRE(run_stsync({"run", "--jobs", "invoices"}, env).exit_code == 0);
  check_equal(schema, sandbox, {"invoices"});
}

TEST_CASE("a response larger than max_response_mb is an error naming the endpoint", "[hardening][limits]") {
  TestSandbox sandbox;
  TestSchema schema;
  ProcessResult r = run_stsync({"run", "--jobs", "invoices"}, env_for(sandbox, schema, {{"STSYNC_MAX_RESPONSE_MB", "0.05"}}));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("accounting/v2/tenant/1001/export/invoices: the response body exceeds max_response_mb") !=
        std::string::npos);
}

TEST_CASE("a page nested deeper than the JSON depth limit is refused clearly", "[hardening][limits]") {
  TestSandbox sandbox;
  TestSchema schema;
  sandbox.admin("faults", "next=deep_json");
  ProcessResult r = run_stsync({"run", "--jobs", "invoices"}, env_for(sandbox, schema, {{"STSYNC_PARALLEL", "1"}}));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("job invoices tenant 1001 export page 1") != std::string::npos);
  CHECK(r.err.find("nests JSON 203 levels deep, beyond max_json_depth (64)") != std::string::npos);
}

TEST_CASE("global options work after the subcommand and bad values are still refused", "[hardening][cli]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = env_for(sandbox, schema);
  ProcessResult ok = run_stsync({"run", "--jobs", "employees", "--log-level", "debug"}, env);
  CHECK(ok.exit_code == 0);
  CHECK(ok.err.find(" debug ") != std::string::npos);
  CHECK(run_stsync({"status", "--log-level", "bogus"}, env).exit_code == 2);
  ProcessResult bad_env = run_stsync({"run"}, with_env(env, {{"STSYNC_TIMEOUT_SECONDS", "2m"}}));
  CHECK(bad_env.exit_code == 2);
  CHECK(bad_env.err.find("STSYNC_TIMEOUT_SECONDS must be a number of seconds, not '2m'") != std::string::npos);
}

TEST_CASE("a job whose raw column is json stores the same records, compares versions as text, and replays as no-ops",
          "[performance][raw]") {
  TestSandbox sandbox;
  TestSchema schema;
  // The invoices feed into tables of its own, created with raw as json (raw_type applies when a
  // table is created; the built-in invoices table is jsonb).
  auto as_json = [](std::string text) {
    text = replace_once(text, "name = \"invoices\"", "name = \"invoices_json\"");
    text = replace_once(text, "table = \"invoices\"", "table = \"invoices_json\"\nraw_type = \"json\"");
    return replace_once(text, "table = \"invoices_items\"", "table = \"invoices_items_json\"");
  };
  const std::string dir = jobs_dir("json-raw", [&](const std::string& name, std::string text) {
    return name == "invoices.toml" ? as_json(text) : text;
  });
  JobSpec spec = builtin_job("invoices");
  spec.table = "invoices_json";  // the sandbox's invoices, compared with the json table
  spec.children[0].table = "invoices_items_json";
  auto env = env_for(sandbox, schema, {{"STSYNC_JOBS_DIR", dir}});
  auto equal = [&] {
    auto problems = compare_with_truth(schema, sandbox, spec, kTenantA);
    for (const auto& p : problems) UNSCOPED_INFO(p);
    CHECK(problems.empty());
  };
  REQUIRE(run_stsync({"run", "--jobs", "invoices_json"}, env).exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 AND "
                      "table_name = 'invoices_json' AND column_name = 'raw' AND data_type = 'json'",
                      {schema.name()}) == 1);
  equal();
  // The same records again (a full refresh re-reads every page): nothing is rewritten.
  REQUIRE(run_stsync({"run", "--jobs", "invoices_json", "--full-refresh"}, env).exit_code == 0);
  CHECK(schema.scalar("SELECT rows_inserted + rows_updated FROM {s}.sync_runs WHERE job = 'invoices_json' "
                      "ORDER BY run_id DESC LIMIT 1") == 0);
  sandbox.admin("changes", "tenant=1001&resource=invoices&n=50");
  sandbox.admin("clock", "advance_seconds=3600");
  REQUIRE(run_stsync({"run", "--jobs", "invoices_json"}, env).exit_code == 0);
  CHECK(schema.scalar("SELECT rows_updated FROM {s}.sync_runs WHERE job = 'invoices_json' ORDER BY run_id DESC LIMIT 1") > 0);
  equal();
  std::filesystem::remove_all(dir);
}

TEST_CASE("reading past the end of a query's result or a NULL as a number is an error and not undefined behaviour",
          "[hardening][db]") {
  TestSchema schema;
  PgConnection& db = schema.db();
  PgResult empty = db.exec("SELECT 1 WHERE false");
  CHECK(empty.rows() == 0);
  CHECK_THROWS_WITH(empty.get(0, 0), Catch::Contains("has 0 row(s) of 1 column(s); row 0, column 0 was read"));
  PgResult one = db.exec("SELECT 42, NULL::bigint, '7 apples'");
  CHECK(one.get_int(0, 0) == 42);
  CHECK_THROWS_WITH(one.get(0, 3), Catch::Contains("has 1 row(s) of 3 column(s)"));
  CHECK_THROWS_WITH(one.get_int(0, 1), Catch::Contains("holds 'NULL' in row 0, column 1"));
  CHECK_THROWS_WITH(one.get_int(0, 2), Catch::Contains("holds '7 apples'"));
  CHECK(db.exec("SELECT -9007199254740993").get_int(0, 0) == -9007199254740993LL);
}
