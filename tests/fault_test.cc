// Fault tests: every documented failure against the sandbox's fault modes and a real PostgreSQL.
// For each fault the end state equals the sandbox's truth after at most one rerun, and the exit
// code and message are the documented ones.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <thread>

#include "embedded.h"
#include "support.h"

using namespace stsync;
using namespace stsync::test;

namespace {

// Retries in tests back off for at most a fifth of a second.
std::map<std::string, std::string> fast_env(const TestSandbox& sandbox, const TestSchema& schema) {
  return with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_MAX_BACKOFF_SECONDS", "0.2"}});
}

void check_equal_to_truth(TestSchema& schema, TestSandbox& sandbox, const std::vector<std::string>& jobs) {
  for (const std::string& job : jobs) {
    auto problems = compare_with_truth(schema, sandbox, builtin_job(job), kTenantA);
    INFO("job " << job);
    for (const auto& p : problems) UNSCOPED_INFO(p);
    CHECK(problems.empty());
  }
}

std::string jobs_dir_with(const std::string& extra_name, const std::string& extra_text) {
  const std::string dir = fmt::format("/tmp/stsync-jobs-{}-{}", getpid(), extra_name);
  std::filesystem::create_directories(dir);
  for (const EmbeddedFile& f : embedded_jobs()) std::ofstream(dir + "/" + std::string(f.name)) << f.content;
  std::ofstream(dir + "/" + extra_name + ".toml") << extra_text;
  return dir;
}

size_t count_lines_with(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = 0; (pos = text.find(needle, pos)) != std::string::npos; ++pos) ++n;
  return n;
}

}  // namespace

TEST_CASE("every transient fault is retried and the sync still equals the truth", "[faults]") {
  // 21 pages: more than the queue's successful calls (the slow kinds succeed, slowly).
  auto o = TestSandbox::default_options(900, 120);
  o.export_batch = 50;
  o.faults.slow_ms = 200;
  TestSandbox sandbox(o);
  TestSchema schema;
  const std::vector<std::string> kinds = {"http500", "http502", "http503", "http504", "maintenance409", "throttle",
                                          "throttle_bare", "reset", "truncate", "html", "empty", "slow", "slow_body"};
  std::string queue;
  for (const std::string& k : kinds) queue += k + "," + k + ",none,";  // twice in a row, then a pass
  sandbox.admin("faults", "next=" + queue.substr(0, queue.size() - 1));
  // Two workers share the queue, so one request may meet many faults in a row: allow them all.
  ProcessResult r = run_stsync({"run"}, with_env(fast_env(sandbox, schema), {{"STSYNC_MAX_ATTEMPTS", "30"}}));
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("retry") != std::string::npos);
  CHECK(r.err.find("traceId") != std::string::npos);          // RFC 7807 bodies are described
  CHECK(r.err.find("an HTML page: 502 Bad Gateway") != std::string::npos);
  // Each injected fault that answers instead of the page (22 of the 26: slow and slow_body
  // deliver the page late) took a request of its own, besides the 21 pages (18 of invoices, 3
  // of employees, at 50 a page).
  CHECK(sandbox.stat(kTenantA, "requests") >= 22 + 21);
  INFO(sandbox.admin("stats", "", false));
  CHECK(sandbox.admin("stats", "", false).find("\"faults_injected\":26") != std::string::npos);
  check_equal_to_truth(schema, sandbox, {"invoices", "employees"});
}

TEST_CASE("a job that exhausts its retries fails with exit 1 while the other jobs go on", "[faults]") {
  TestSandbox sandbox;
  TestSchema schema;
  sandbox.admin("faults", "next=http503,http503,http503");
  auto env = with_env(fast_env(sandbox, schema), {{"STSYNC_MAX_ATTEMPTS", "3"}, {"STSYNC_PARALLEL", "1"}});
  ProcessResult r = run_stsync({"run", "--jobs", "invoices,employees"}, env);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("job invoices tenant 1001 export page 1") != std::string::npos);
  CHECK(r.err.find("gave up after 3 attempts") != std::string::npos);
  check_equal_to_truth(schema, sandbox, {"employees"});
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices") == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'invoices' AND outcome = 'failed' "
                      "AND error LIKE '%HTTP 503%'") == 1);
  // The next run converges.
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  check_equal_to_truth(schema, sandbox, {"invoices", "employees"});
}

TEST_CASE("the retry budget bounds the time a job spends backing off", "[faults]") {
  TestSandbox sandbox(TestSandbox::default_options(50, 10));
  TestSchema schema;
  sandbox.admin("faults", "rate=1&kinds=http503");
  auto env = with_env(stsync_env(sandbox, schema, kTenantA),
                  {{"STSYNC_RETRY_BUDGET_SECONDS", "1"}, {"STSYNC_MAX_ATTEMPTS", "100"}, {"STSYNC_MAX_BACKOFF_SECONDS", "0.5"}});
  ProcessResult r = run_stsync({"run", "--jobs", "employees"}, env);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("retry budget of 1 s is spent") != std::string::npos);
  // The budget, not max_attempts (100), ended the job (no clock is read to tell).
  CHECK(sandbox.stat(kTenantA, "requests") < 100);
}

TEST_CASE("a token revoked mid-walk is refreshed and the walk continues where it was", "[faults][auth]") {
  auto o = TestSandbox::default_options(1500, 20);
  o.export_batch = 20;
  TestSandbox sandbox(o);
  TestSchema schema;
  Process p({STSYNC_BINARY, "run", "--jobs", "invoices"}, with_env(fast_env(sandbox, schema), {{"STSYNC_REQUESTS_PER_SECOND", "40"}}));
  REQUIRE(sandbox.wait_for_records_served(kTenantA, 300));
  sandbox.admin("revoke-tokens");
  ProcessResult r = p.wait();
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("401 from") != std::string::npos);
  CHECK(sandbox.stat(kTenantA, "token_requests") == 2);
  // Not restarted from the beginning: every record was served once, give or take a page.
  CHECK(sandbox.stat(kTenantA, "records_served") <= 1500 + 20);
  check_equal_to_truth(schema, sandbox, {"invoices"});
}

TEST_CASE("a bad page stops the job before it commits, names job, tenant, page and record, and keeps earlier pages",
          "[faults][data]") {
  auto o = TestSandbox::default_options(300, 20);
  o.export_batch = 50;
  TestSandbox sandbox(o);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"bad_json", "valid JSON"},  // "invalid JSON" for a record, "not valid JSON" for the page
      {"no_data", "no 'data' array"},
      {"no_id", "record #1: the record has no 'id'"},
      {"wrong_type", "field 'active' is a string"},
      {"bad_timestamp", "'last tuesday', not a timestamp"},
      {"huge_number", "too large for column customer_id"},
  };
  for (const auto& [kind, message] : cases) {
    SECTION(kind) {
      TestSchema schema;
      auto env = with_env(fast_env(sandbox, schema), {{"STSYNC_PARALLEL", "1"}});
      sandbox.admin("faults", "next=none,none," + kind);
      ProcessResult r = run_stsync({"run", "--jobs", "invoices"}, env);
      CHECK(r.exit_code == 1);
      CHECK(r.err.find("job invoices tenant 1001 export page 3") != std::string::npos);
      CHECK(r.err.find(message) != std::string::npos);
      if (kind != "bad_json" && kind != "no_data" && kind != "no_id") CHECK(r.err.find("(id ") != std::string::npos);
      CHECK(r.err.find("committed pages and the watermark are kept") != std::string::npos);
      // Exactly the two good pages are stored, with the token of the second.
      CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices") == 100);
      CHECK(schema.scalar("SELECT pages_total FROM {s}.sync_state WHERE job = 'invoices'") == 2);
      CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_state WHERE job = 'invoices' AND watermark = "
                          "(SELECT max(modified_on) FROM {s}.invoices)") == 1);
      ProcessResult again = run_stsync({"run", "--jobs", "invoices"}, env);
      CHECK(again.exit_code == 0);
      check_equal_to_truth(schema, sandbox, {"invoices"});
    }
  }
}

TEST_CASE("permanent API errors give a clear message and exit 1", "[faults][api]") {
  TestSandbox sandbox(TestSandbox::default_options(50, 10));
  TestSchema schema;
  auto env = fast_env(sandbox, schema);
  SECTION("a wrong app key is a 403 naming the job and endpoint") {
    ProcessResult r = run_stsync({"run", "--jobs", "employees"}, with_env(env, {{"ST_APP_KEY", "wrong-app-key"}}));
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("job employees tenant 1001") != std::string::npos);
    CHECK(r.err.find("HTTP 403") != std::string::npos);
    CHECK(r.err.find("/settings/v2/tenant/1001/export/employees") != std::string::npos);
  }
  SECTION("an unknown tenant is refused even with a fresh token") {
    ProcessResult r = run_stsync({"run", "--jobs", "employees"}, with_env(env, {{"ST_TENANT_ID", "424242"}}));
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("do not grant this tenant") != std::string::npos);
  }
  SECTION("a 404 endpoint fails that job only") {
    const std::string dir = jobs_dir_with("ghosts", R"(
name = "ghosts"
list_path = "accounting/v2/tenant/{tenant}/ghosts"
export_path = "accounting/v2/tenant/{tenant}/export/ghosts"
columns = []
)");
    ProcessResult r = run_stsync({"run", "--jobs", "ghosts,employees"}, with_env(env, {{"STSYNC_JOBS_DIR", dir}}));
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("job ghosts tenant 1001") != std::string::npos);
    CHECK(r.err.find("HTTP 404") != std::string::npos);
    check_equal_to_truth(schema, sandbox, {"employees"});
    std::filesystem::remove_all(dir);
  }
  SECTION("a 400 with an RFC 7807 body shows its message and traceId") {
    const std::string dir = jobs_dir_with("invoices", R"(
name = "invoices"
list_path = "accounting/v2/tenant/{tenant}/invoices"
export_path = "accounting/v2/tenant/{tenant}/export/invoices"
mode = "list"
inactive_filter = "activeState=Bogus"
columns = []
)");
    ProcessResult r = run_stsync({"run", "--jobs", "invoices"}, with_env(env, {{"STSYNC_JOBS_DIR", dir}}));
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("HTTP 400") != std::string::npos);
    CHECK(r.err.find("[activeState: The value 'Bogus' is not valid.]") != std::string::npos);
    CHECK(r.err.find("traceId 00-") != std::string::npos);
    std::filesystem::remove_all(dir);
  }
}

TEST_CASE("the request budget per tenant holds under retries with several jobs at once", "[faults][rate]") {
  auto o = TestSandbox::default_options(400, 100);
  o.export_batch = 40;
  TestSandbox sandbox(o);
  TestSchema schema;
  sandbox.admin("faults", "rate=0.25&seed=3&kinds=http503,throttle,reset");
  auto env = with_env(fast_env(sandbox, schema), {{"STSYNC_REQUESTS_PER_SECOND", "6"}, {"STSYNC_PARALLEL", "2"}});
  ProcessResult r = run_stsync({"run"}, env);
  CHECK(r.exit_code == 0);
  CHECK(sandbox.stat(kTenantA, "requests") >= 14);
  CHECK(sandbox.stat(kTenantA, "max_per_second") <= 6);
  CHECK(sandbox.stat(kTenantA, "throttled") == 0);
  check_equal_to_truth(schema, sandbox, {"invoices", "employees"});
}

TEST_CASE("PostgreSQL restarted mid-run: the job reconnects and the end state equals the truth", "[faults][db]") {
  PrivateCluster cluster("restart", 26100);
  const std::string& url = cluster.url();

  auto o = TestSandbox::default_options(2000, 20);
  o.export_batch = 25;
  TestSandbox sandbox(o);
  TestSchema naming;  // only for its unique name; the data lives in the private cluster
  auto env = with_env(fast_env(sandbox, naming), {{"DATABASE_URL", url}, {"STSYNC_REQUESTS_PER_SECOND", "40"}});
  Process p({STSYNC_BINARY, "run", "--jobs", "invoices"}, env);
  REQUIRE(sandbox.wait_for_records_served(kTenantA, 400));
  const bool restarted = cluster.restart();
  ProcessResult r = p.wait();
  INFO("cluster script: " << cluster.log());
  REQUIRE(restarted);
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("reconnecting") != std::string::npos);
  PgConnection db(url);
  const std::string s = db.quote_ident(naming.name());
  CHECK(db.exec(fmt::format("SELECT count(*) FROM {}.invoices", s)).get_int(0, 0) == 2000);
  CHECK(db.exec(fmt::format("SELECT count(*) FROM {}.sync_runs WHERE outcome = 'succeeded'", s)).get_int(0, 0) == 1);
}

TEST_CASE("bad configuration is one line and exit 2", "[faults][config]") {
  TestSandbox sandbox(TestSandbox::default_options(10, 5));
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  SECTION("an unknown key") {
    const std::string cfg = write_temp_file("[servicetitan]\nrequests_per_secnd = 5\n");
    ProcessResult r = run_stsync({"--config", cfg, "run"}, env);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("unknown key 'requests_per_secnd'") != std::string::npos);
    CHECK(count_lines_with(r.err, "\n") == 1);
  }
  SECTION("missing credentials") {
    auto no_secret = env;
    no_secret.erase("ST_CLIENT_SECRET");
    ProcessResult r = run_stsync({"run"}, no_secret);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("tenant 1001: client secret missing: set ST_CLIENT_SECRET, or the [[tenants]] entry's") !=
          std::string::npos);
  }
  SECTION("an unreadable file") {
    ProcessResult r = run_stsync({"--config", "/nonexistent/stsync.toml", "run"}, env);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("/nonexistent/stsync.toml") != std::string::npos);
    CHECK(count_lines_with(r.err, "\n") == 1);
  }
  SECTION("a config file with secrets that others can read is a warning") {
    const std::string cfg = write_temp_file("[[tenants]]\nid = 1001\nclient_id = 'sandbox-client-1001'\n"
                                            "client_secret = 'sandbox-secret-1001'\n");
    chmod(cfg.c_str(), 0644);
    auto file_env = env;
    file_env.erase("ST_CLIENT_SECRET");
    ProcessResult r = run_stsync({"--config", cfg, "run", "--jobs", "employees"}, file_env);
    CHECK(r.exit_code == 0);
    CHECK(r.err.find("other users can read it: run chmod 600") != std::string::npos);
  }
}

TEST_CASE("secrets never appear in logs, messages, status output or the database", "[faults][security]") {
  TestSandbox sandbox(TestSandbox::default_options(100, 20));
  TestSchema schema;
  const std::string db_password = "db-pass-Xy7Qw9Zk";
  auto env = with_env(stsync_env(sandbox, schema, kTenantA),
                  {{"STSYNC_LOG_LEVEL", "debug"}, {"STSYNC_MAX_BACKOFF_SECONDS", "0.1"},
                   {"DATABASE_URL", database_url() + " password=" + db_password}});
  std::string everything;
  sandbox.admin("faults", "next=http500,html,none,bad_json");
  for (const auto& args : std::vector<std::vector<std::string>>{{"run"}, {"run"}, {"check"}, {"status"}, {"status", "--json"}}) {
    ProcessResult r = run_stsync(args, env);
    everything += r.out + r.err;
  }
  for (auto failing : std::vector<std::map<std::string, std::string>>{
           {{"ST_CLIENT_SECRET", "wrong-secret-3b9f"}},
           {{"ST_APP_KEY", "wrong-app-key-77c1"}},
           {{"DATABASE_URL", "postgresql://stsync:" + db_password + "@127.0.0.1:1/x"}}}) {
    ProcessResult r = run_stsync({"run"}, with_env(env, failing));
    CHECK(r.exit_code != 0);
    everything += r.out + r.err;
  }
  CHECK(everything.find("job invoices") != std::string::npos);  // the logs were written
  for (const std::string secret : {sandbox::sandbox_client_secret(kTenantA), std::string("sandbox-app-key"),
                                   std::string("wrong-secret-3b9f"), std::string("wrong-app-key-77c1"), db_password,
                                   std::string("eyJhbGci")}) {
    INFO("secret " << secret);
    CHECK(everything.find(secret) == std::string::npos);
    CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_state WHERE row_to_json(sync_state)::text LIKE '%' || $1 || '%'",
                        {secret}) == 0);
    CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE row_to_json(sync_runs)::text LIKE '%' || $1 || '%'",
                        {secret}) == 0);
  }
  // No command takes a secret as an argument, so none can show in `ps`.
  for (const std::string cmd : {"run", "status", "migrate", "check"}) {
    std::string help = run_stsync({cmd, "--help"}, env).out;
    for (char& c : help) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    CHECK(help.find("secret") == std::string::npos);
    CHECK(help.find("password") == std::string::npos);
    CHECK(help.find("app-key") == std::string::npos);
  }
}

TEST_CASE("HTTPS is verified by default, a custom CA works, and turning verification off warns", "[faults][tls]") {
  const std::string dir = fmt::format("/tmp/stsync-tls-sync-{}", getpid());
  REQUIRE(std::system(("mkdir -p " + dir + " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
                       "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " + dir + "/key.pem -out " + dir +
                       "/cert.pem 2>/dev/null").c_str()) == 0);
  auto o = TestSandbox::default_options(30, 10);
  o.tls_cert_file = dir + "/cert.pem";
  o.tls_key_file = dir + "/key.pem";
  TestSandbox sandbox(o);
  TestSchema schema;
  const std::string https = fmt::format("https://127.0.0.1:{}", sandbox.port());
  auto env = with_env(stsync_env(sandbox, schema, kTenantA),
                  {{"ST_AUTH_URL", https}, {"ST_API_URL", https}, {"STSYNC_MAX_ATTEMPTS", "1"}});
  ProcessResult untrusted = run_stsync({"run"}, env);
  CHECK(untrusted.exit_code != 0);
  CHECK(untrusted.err.find("certificate") != std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices") == 0);
  ProcessResult with_ca = run_stsync({"run"}, with_env(env, {{"STSYNC_CA_FILE", dir + "/cert.pem"}}));
  CHECK(with_ca.exit_code == 0);
  CHECK(with_ca.err.find("verification is OFF") == std::string::npos);
  check_equal_to_truth(schema, sandbox, {"invoices", "employees"});
  ProcessResult insecure = run_stsync({"run"}, with_env(env, {{"STSYNC_TLS_VERIFY", "false"}}));
  CHECK(insecure.exit_code == 0);
  CHECK(insecure.err.find("TLS certificate verification is OFF") != std::string::npos);
  std::system(("rm -rf " + dir).c_str());
}

TEST_CASE("a hostile schema name cannot inject SQL", "[faults][security]") {
  TestSandbox sandbox(TestSandbox::default_options(30, 10));
  TestSchema schema;
  const std::string hostile = schema.name() + "\"; DROP TABLE pg_temp.x; --";
  TestSchema canary;
  canary.db().exec(fmt::format("CREATE SCHEMA {0}; CREATE TABLE {0}.keep (v int)", canary.db().quote_ident(canary.name())));
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_SCHEMA", hostile}});
  ProcessResult r = run_stsync({"run"}, env);
  CHECK(r.exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1", {hostile}) == 1);
  PgConnection& db = schema.db();
  CHECK(db.exec(fmt::format("SELECT count(*) FROM {}.invoices", db.quote_ident(hostile))).get_int(0, 0) == 30);
  CHECK(canary.scalar("SELECT count(*) FROM {s}.keep") == 0);  // still there
  CHECK(run_stsync({"status"}, env).exit_code == 0);
  db.exec(fmt::format("DROP SCHEMA {} CASCADE", db.quote_ident(hostile)));
}

TEST_CASE("a soak with every transient fault and churn ends equal to the truth", "[faults][soak]") {
  auto o = TestSandbox::default_options(1500, 200);
  o.export_batch = 60;
  o.churn_per_request = 2;
  o.faults.slow_ms = 300;
  TestSandbox sandbox(o);
  TestSchema schema;
  sandbox.admin("faults", "rate=0.05&seed=11");
  auto env = with_env(fast_env(sandbox, schema), {{"STSYNC_REQUESTS_PER_SECOND", "30"}});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int runs = 0, failures = 0;
  while (std::chrono::steady_clock::now() < deadline && runs < 100) {
    const bool list = runs % 3 == 2;
    ProcessResult r = run_stsync(list ? std::vector<std::string>{"run", "--mode", "list"} : std::vector<std::string>{"run"}, env);
    failures += r.exit_code != 0;
    CHECK((r.exit_code == 0 || r.exit_code == 1));
    ++runs;
    sandbox.admin("clock", "advance_seconds=300");
  }
  CHECK(runs >= 3);
  sandbox.admin("faults", "clear=1");
  sandbox.admin("settings", "churn_per_request=0");
  sandbox.admin("clock", "advance_seconds=960");
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  check_equal_to_truth(schema, sandbox, {"invoices", "employees"});
  CHECK(sandbox.admin("stats", "", false).find("\"faults_injected\":0") == std::string::npos);
  UNSCOPED_INFO(runs << " runs, " << failures << " ended with a failed job");
}

TEST_CASE("a job configured to quarantine keeps the bad record with its error and goes on", "[faults][data]") {
  auto o = TestSandbox::default_options(300, 20);
  o.export_batch = 50;
  TestSandbox sandbox(o);
  TestSchema schema;
  const std::string cfg = write_temp_file("[jobs.invoices]\nquarantine = true\n");
  auto env = with_env(fast_env(sandbox, schema), {{"STSYNC_CONFIG", cfg}, {"STSYNC_PARALLEL", "1"}});
  sandbox.admin("faults", "next=none,wrong_type,none,huge_number");
  ProcessResult r = run_stsync({"run", "--jobs", "invoices"}, env);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("quarantined") != std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.quarantine WHERE job = 'invoices' AND tenant_id = 1001") == 2);
  // The record as it was served (the string "yes" where a boolean belongs), with its error and page.
  CHECK(schema.scalar("SELECT count(*) FROM {s}.quarantine WHERE error LIKE '%field ''active'' is a string%' "
                      "AND page LIKE '%export page 2%' AND raw::jsonb ->> 'active' = 'yes' AND "
                      "raw::jsonb ->> 'id' = record_id") == 1);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.quarantine WHERE error LIKE '%too large for column customer_id%'") == 1);
  // Every other record of those pages is stored, and nothing quarantined is in the table.
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices") == 298);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices i JOIN {s}.quarantine q ON q.record_id = i.id::text") == 0);
  ProcessResult status = run_stsync({"status", "--by-job", "--json"}, env);
  CHECK(status.out.find("\"job\":\"invoices\",\"token_present\":true,\"watermark\"") != std::string::npos);
  CHECK(status.out.find("\"rows\":298,\"quarantined\":2") != std::string::npos);
}

TEST_CASE("429s from a server limit below the client's budget are waited out", "[faults][rate]") {
  auto o = TestSandbox::default_options(600, 50);
  o.export_batch = 30;
  o.rate_limit_per_second = 4;
  TestSandbox sandbox(o);
  TestSchema schema;
  ProcessResult r = run_stsync({"run"}, with_env(fast_env(sandbox, schema), {{"STSYNC_REQUESTS_PER_SECOND", "30"}}));
  CHECK(r.exit_code == 0);
  CHECK(sandbox.stat(kTenantA, "throttled") > 0);
  CHECK(r.err.find("HTTP 429") != std::string::npos);
  check_equal_to_truth(schema, sandbox, {"invoices", "employees"});
}

TEST_CASE("a response slower than the timeout is abandoned and retried", "[faults]") {
  auto o = TestSandbox::default_options(60, 10);
  o.faults.slow_ms = 2500;
  TestSandbox sandbox(o);
  TestSchema schema;
  sandbox.admin("faults", "next=slow");
  ProcessResult r = run_stsync({"run", "--jobs", "employees"},
                               with_env(fast_env(sandbox, schema), {{"STSYNC_TIMEOUT_SECONDS", "1"}}));
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("timed out") != std::string::npos);
  check_equal_to_truth(schema, sandbox, {"employees"});
}

TEST_CASE("a refused connection is retried, then the job fails with exit 1", "[faults]") {
  TestSandbox sandbox(TestSandbox::default_options(10, 5));
  TestSchema schema;
  auto env = with_env(fast_env(sandbox, schema), {{"ST_API_URL", "http://127.0.0.1:1"}, {"STSYNC_MAX_ATTEMPTS", "3"}});
  ProcessResult r = run_stsync({"run", "--jobs", "employees"}, env);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("retry 2") != std::string::npos);
  CHECK(r.err.find("gave up after 3 attempts") != std::string::npos);
}

TEST_CASE("a new job file needs no C++ and no migration: its table is created and grows columns", "[sync][jobs]") {
  TestSandbox sandbox(TestSandbox::default_options(40, 30));
  TestSchema schema;
  const std::string job = R"(
name = "staff"
table = "staff"
list_path = "settings/v2/tenant/{tenant}/employees"
export_path = "settings/v2/tenant/{tenant}/export/employees"
columns = [ { path = "email", type = "text" } ]
)";
  const std::string dir = jobs_dir_with("staff", job);
  auto env = with_env(fast_env(sandbox, schema), {{"STSYNC_JOBS_DIR", dir}});
  REQUIRE(run_stsync({"run", "--jobs", "staff"}, env).exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.staff WHERE email LIKE 'employee%@example.com'") == 30);
  // A column added to the job file is added to the table; a full refresh fills it.
  std::ofstream(dir + "/staff.toml") << job.substr(0, job.rfind("columns")) +
                                            "columns = [ { path = \"email\", type = \"text\" }, "
                                            "{ path = \"hourlyRate\", type = \"numeric\" } ]\n"
                                            "[[children]]\npath = \"permissions\"\ntable = \"staff_permissions\"\n"
                                            "columns = [ { path = \"id\", type = \"bigint\" } ]\n";
  REQUIRE(run_stsync({"run", "--jobs", "staff", "--full-refresh"}, env).exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.staff WHERE hourly_rate IS NOT NULL") == 30);
  // …and a child table added to the job file is created and filled by the full refresh.
  CHECK(schema.scalar("SELECT count(*) FROM {s}.staff_permissions WHERE id IS NOT NULL") == 30);
  std::filesystem::remove_all(dir);
}
