// Operating stsync: metrics, staleness, JSON logs, cadence, tenants from files.
#include <simdjson.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <httplib.h>

#include "support.h"

using namespace stsync;
using namespace stsync::test;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Prometheus text exposition format: HELP and TYPE lines, then samples `name{labels} value`.
// Returns sample → value; fails the test on a line that is neither.
std::map<std::string, double> parse_prometheus(const std::string& text) {
  static const std::regex help(R"(# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+)");
  static const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (gauge|counter|untyped|summary|histogram))");
  static const std::regex sample(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? (-?[0-9.eE+-]+|NaN|[+-]Inf))");
  std::map<std::string, double> out;
  std::set<std::string> typed;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    INFO(line);
    std::smatch m;
    if (std::regex_match(line, m, type)) {
      typed.insert(m[1]);
    } else if (std::regex_match(line, help)) {
    } else if (std::regex_match(line, m, sample)) {
      CHECK(typed.count(m[1]) == 1);  // every metric declares its type before its samples
      out[line.substr(0, line.rfind(' '))] = std::stod(line.substr(line.rfind(' ') + 1));
    } else {
      FAIL("not Prometheus text format");
    }
  }
  return out;
}

// `stsync daemon` listening on a free loopback port (written to a port file), with an HTTP
// client for /healthz and /metrics. `args` come after "daemon".
class ListeningDaemon {
 public:
  ListeningDaemon(const std::string& name, const std::vector<std::string>& args,
                  const std::map<std::string, std::string>& env)
      : port_file_(fmt::format("/tmp/stsync-{}-port-{}", name, getpid())),
        process_((std::filesystem::remove(port_file_), command(args, port_file_)), env),
        client_("127.0.0.1", wait_for_port(port_file_)) {}
  ~ListeningDaemon() { std::filesystem::remove(port_file_); }
  httplib::Client& client() { return client_; }
  /// Waits until /healthz reports `rounds` finished rounds.
  bool wait_rounds(int rounds) {
    return wait_until([&] {
      auto r = client_.Get("/healthz");
      return r && r->body.find(fmt::format("\"rounds\":{},", rounds)) != std::string::npos;
    });
  }
  /// SIGTERM, then the exit code.
  int stop() {
    process_.send_signal(SIGTERM);
    return process_.wait().exit_code;
  }

 private:
  static std::vector<std::string> command(const std::vector<std::string>& args, const std::string& port_file) {
    std::vector<std::string> out = {STSYNC_BINARY, "daemon", "--listen", "127.0.0.1:0", "--port-file", port_file};
    out.insert(out.end(), args.begin(), args.end());
    return out;
  }
  std::string port_file_;
  Process process_;
  httplib::Client client_;
};

}  // namespace

TEST_CASE("the metrics file parses as Prometheus text format and its figures match sync_runs and sync_state",
          "[ops][metrics]") {
  TestSandbox sandbox;
  TestSchema schema;
  const auto env = stsync_env(sandbox, schema, kTenantA);
  const std::string path = fmt::format("/tmp/stsync-metrics-{}.prom", getpid());
  REQUIRE(run_stsync({"run", "--metrics-file", path}, env).exit_code == 0);
  sandbox.admin("changes", fmt::format("tenant={}&resource=invoices&n=20", kTenantA));
  sandbox.admin("clock", "advance_seconds=1000");
  REQUIRE(run_stsync({"run", "--metrics-file", path}, env).exit_code == 0);
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
  const std::map<std::string, double> m = parse_prometheus(read_text(path));
  for (const char* job : {"invoices", "employees"}) {
    INFO(job);
    const std::string labels = fmt::format(R"({{tenant="{}",job="{}"}})", kTenantA, job);
    const std::string where = fmt::format("tenant_id = {} AND job = '{}'", kTenantA, job);
    CHECK(m.at("stsync_rows_inserted_total" + labels) ==
          schema.scalar("SELECT sum(rows_inserted) FROM {s}.sync_runs WHERE " + where));
    CHECK(m.at("stsync_rows_updated_total" + labels) ==
          schema.scalar("SELECT sum(rows_updated) FROM {s}.sync_runs WHERE " + where));
    CHECK(m.at("stsync_pages_total" + labels) == schema.scalar("SELECT sum(pages) FROM {s}.sync_runs WHERE " + where));
    CHECK(m.at("stsync_requests_total" + labels) ==
          schema.scalar("SELECT sum(requests) FROM {s}.sync_runs WHERE " + where));
    CHECK(m.at("stsync_requests_total" + labels) >= 2);
    CHECK(std::llround(m.at("stsync_last_success_timestamp_seconds" + labels)) ==
          schema.scalar("SELECT round(extract(epoch FROM last_success_at)) FROM {s}.sync_state WHERE " + where));
    CHECK(m.at("stsync_stale" + labels) == 0);
    CHECK(m.at("stsync_not_permitted" + labels) == 0);
    CHECK(m.at("stsync_runs_failed_total" + labels) == 0);
    CHECK(m.at("stsync_freshness_lag_seconds" + labels) >= 0);
  }
  CHECK(m.at(fmt::format(R"(stsync_rows_updated_total{{tenant="{}",job="invoices"}})", kTenantA)) > 0);
  // 429s and retries are counted where they happened: two throttled answers and two 503s, on
  // the invoices job alone.
  sandbox.admin("faults", "next=throttle,http503,throttle,http503");
  sandbox.admin("clock", "advance_seconds=1000");
  REQUIRE(run_stsync({"run", "--jobs", "invoices", "--metrics-file", path},
                     with_env(env, {{"STSYNC_MAX_BACKOFF_SECONDS", "0.2"}}))
              .exit_code == 0);
  const std::map<std::string, double> after = parse_prometheus(read_text(path));
  const std::string invoices = fmt::format(R"({{tenant="{}",job="invoices"}})", kTenantA);
  CHECK(after.at("stsync_throttled_total" + invoices) - m.at("stsync_throttled_total" + invoices) == 2);
  CHECK(after.at("stsync_retries_total" + invoices) - m.at("stsync_retries_total" + invoices) == 4);
  CHECK(after.at("stsync_last_run_duration_seconds" + invoices) ==
        Approx(schema.scalar_double("SELECT extract(epoch FROM finished_at - started_at) FROM {s}.sync_runs WHERE "
                                    "job = 'invoices' ORDER BY run_id DESC LIMIT 1"))
            .margin(0.01));
  std::filesystem::remove(path);
}

TEST_CASE("run records older than keep_runs_days are pruned, a job's last run is kept, and the metrics' totals do not "
          "go down",
          "[ops][retention]") {
  TestSandbox sandbox;
  TestSchema schema;
  const auto env = stsync_env(sandbox, schema, kTenantA);
  const std::string path = fmt::format("/tmp/stsync-retention-{}.prom", getpid());
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  sandbox.admin("changes", fmt::format("tenant={}&resource=invoices&n=20", kTenantA));
  sandbox.admin("clock", "advance_seconds=1000");
  REQUIRE(run_stsync({"run", "--metrics-file", path}, env).exit_code == 0);
  const std::map<std::string, double> before = parse_prometheus(read_text(path));
  REQUIRE(schema.scalar("SELECT count(*) FROM {s}.sync_runs") == 4);
  // Every run finished 40 days ago; the next run keeps its own and the jobs' last runs only.
  schema.db().exec(fmt::format("UPDATE {}.sync_runs SET finished_at = now() - interval '40 days'",
                               schema.db().quote_ident(schema.name())));
  ProcessResult kept = run_stsync({"run"}, with_env(env, {{"STSYNC_KEEP_RUNS_DAYS", "0"}}));  // 0: keep every run
  REQUIRE(kept.exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs") == 6);
  schema.db().exec(fmt::format("UPDATE {}.sync_runs SET finished_at = now() - interval '40 days'",
                               schema.db().quote_ident(schema.name())));
  ProcessResult pruned = run_stsync({"run", "--metrics-file", path}, env);
  REQUIRE(pruned.exit_code == 0);
  CHECK(pruned.err.find("pruned 6 run record(s) older than 30 day(s)") != std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs") == 2);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs r JOIN {s}.sync_state st ON st.last_run_id = r.run_id") == 2);
  CHECK(schema.scalar("SELECT sum(runs) FROM {s}.sync_run_totals") == 6);
  const std::map<std::string, double> after = parse_prometheus(read_text(path));
  for (const char* job : {"invoices", "employees"}) {
    INFO(job);
    const std::string labels = fmt::format(R"({{tenant="{}",job="{}"}})", kTenantA, job);
    // Totals over every run, pruned ones included: nothing was lost, the last runs added a little.
    for (const char* counter : {"stsync_rows_inserted_total", "stsync_pages_total", "stsync_requests_total"})
      CHECK(after.at(counter + labels) >= before.at(counter + labels));
    CHECK(after.at("stsync_requests_total" + labels) > before.at("stsync_requests_total" + labels));
    CHECK(after.at("stsync_rows_inserted_total" + labels) ==
          schema.scalar(fmt::format("SELECT (SELECT sum(rows_inserted) FROM {{s}}.sync_runs WHERE job = '{0}') + "
                                    "(SELECT rows_inserted FROM {{s}}.sync_run_totals WHERE job = '{0}')",
                                    job)));
  }
  // The jobs' last runs are kept however old, so status still shows them.
  schema.db().exec(fmt::format("UPDATE {}.sync_runs SET finished_at = now() - interval '400 days'",
                               schema.db().quote_ident(schema.name())));
  REQUIRE(run_stsync({"run", "--jobs", "employees"}, env).exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'invoices'") == 1);
  CHECK(run_stsync({"run"}, with_env(env, {{"STSYNC_KEEP_RUNS_DAYS", "-1"}})).exit_code == 2);
  std::filesystem::remove(path);
}

TEST_CASE("status shows lag and stale jobs, and --fail-if-stale exits 1 naming them", "[ops][status]") {
  TestSandbox sandbox;
  TestSchema schema;
  const auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  ProcessResult fresh = run_stsync({"status", "--by-job", "--fail-if-stale", "1h"}, env);
  CHECK(fresh.exit_code == 0);
  CHECK(fresh.out.find("LAG") != std::string::npos);
  CHECK(fresh.out.find("STALE") == std::string::npos);
  ProcessResult json = run_stsync({"status", "--by-job", "--json"}, env);
  CHECK(json.out.find(R"("stale":false)") != std::string::npos);
  CHECK(json.out.find(R"("lag_seconds":)") != std::string::npos);
  // A job whose last success is older than twice its cadence is stale.
  schema.db().exec(fmt::format("UPDATE {}.sync_state SET last_success_at = now() - interval '3 days' WHERE job = 'employees'",
                               schema.db().quote_ident(schema.name())));
  ProcessResult old = run_stsync({"status", "--by-job", "--fail-if-stale", "1h"}, env);
  CHECK(old.exit_code == 1);
  CHECK(old.err.find("stale: tenant 1001 job employees: last success") != std::string::npos);
  CHECK(old.err.find("job invoices") == std::string::npos);
  CHECK(old.out.find("STALE") != std::string::npos);
  CHECK(run_stsync({"status", "--fail-if-stale", "soon"}, env).exit_code == 2);
}

TEST_CASE("logs in JSON format (--log-format json) are one object per line with time, level, event, job, tenant, page "
          "and counts as fields",
          "[ops][logs]") {
  auto o = TestSandbox::default_options(600, 20);
  o.export_batch = 200;
  TestSandbox sandbox(o);
  TestSchema schema;
  const std::string config = write_temp_file("[jobs.invoices]\nquarantine = true\n");
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_CONFIG", config}, {"STSYNC_PARALLEL", "1"}});
  sandbox.admin("faults", "next=none,none,refused_values");  // a later page of invoices holds refused records
  ProcessResult r = run_stsync({"run", "--log-format", "json"}, env);
  REQUIRE(r.exit_code == 0);
  simdjson::dom::parser parser;
  int lines = 0;
  std::map<std::string, int> events;
  std::istringstream in(r.err);
  for (std::string line; std::getline(in, line); ++lines) {
    INFO(line);
    simdjson::dom::object obj;
    REQUIRE(parser.parse(line).get(obj) == simdjson::SUCCESS);
    std::string_view time, level, message, event, job;
    CHECK(obj["time"].get(time) == simdjson::SUCCESS);
    CHECK(obj["level"].get(level) == simdjson::SUCCESS);
    CHECK(obj["message"].get(message) == simdjson::SUCCESS);
    REQUIRE(obj["event"].get(event) == simdjson::SUCCESS);
    ++events[std::string(event)];
    std::int64_t tenant = 0, page = 0, n = 0;
    if (event.substr(0, 4) == "job_" || event == "record_quarantined") {
      // The job's lines carry the job and the tenant as fields, whatever their words.
      CHECK(obj["job"].get(job) == simdjson::SUCCESS);
      CHECK(message.find(std::string(job)) != std::string_view::npos);
      CHECK(obj["tenant"].get(tenant) == simdjson::SUCCESS);
      CHECK(tenant == kTenantA);
    }
    if (event == "record_quarantined") {
      REQUIRE(obj["page"].get(page) == simdjson::SUCCESS);
      CHECK(page == 2);
      CHECK(message.find(fmt::format("export page {} ", page)) != std::string_view::npos);  // the field is the page
      CHECK(job == "invoices");
    }
    if (event == "job_succeeded" && job == "invoices") {
      CHECK(obj["pages"].get(n) == simdjson::SUCCESS);
      CHECK(n == 3);
      CHECK(obj["inserted"].get(n) == simdjson::SUCCESS);
      CHECK(n == 597);  // three records quarantined
      CHECK(obj["requests"].get(n) == simdjson::SUCCESS);
      CHECK(n >= 3);
    }
    if (event == "run_finished") {
      CHECK(obj["jobs"].get(n) == simdjson::SUCCESS);
      CHECK(n == 2);
      CHECK(obj["succeeded"].get(n) == simdjson::SUCCESS);
      CHECK(n == 2);
      CHECK(obj["inserted"].get(n) == simdjson::SUCCESS);
      CHECK(n == 617);
      CHECK(obj["exit_code"].get(n) == simdjson::SUCCESS);
      CHECK(n == 0);
    }
  }
  CHECK(lines > 4);
  CHECK(events["job_started"] == 2);
  CHECK(events["job_succeeded"] == 2);
  CHECK(events["record_quarantined"] == 3);
  CHECK(events["run_finished"] == 1);
  CHECK(r.err.find(R"("message":"job invoices tenant 1001: done)") != std::string::npos);
}

TEST_CASE("run --due runs only the jobs whose cadence has passed since their last success", "[ops][schedule]") {
  TestSandbox sandbox;
  TestSchema schema;
  const auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);
  REQUIRE(run_stsync({"run", "--due"}, env).exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs") == 2);  // nothing was due
  // invoices' cadence (the default, 1h) has passed; employees' has not.
  schema.db().exec(fmt::format("UPDATE {}.sync_state SET last_success_at = now() - interval '2 hours' WHERE job = 'invoices'",
                               schema.db().quote_ident(schema.name())));
  REQUIRE(run_stsync({"run", "--due"}, env).exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'invoices'") == 2);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'employees'") == 1);
  // A config can shorten a job's cadence.
  schema.db().exec(fmt::format("UPDATE {}.sync_state SET last_success_at = now() - interval '3 minutes' WHERE job = 'employees'",
                               schema.db().quote_ident(schema.name())));
  const std::string config = write_temp_file("[jobs.employees]\nevery = \"2m\"\n");
  REQUIRE(run_stsync({"--config", config, "run", "--due"}, env).exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'employees'") == 2);
}

TEST_CASE("tenants come from a tenants directory with secrets in files (as systemd credentials) and their own jobs",
          "[ops][tenants]") {
  TestSandbox sandbox;
  TestSchema schema;
  const std::string dir = fmt::format("/tmp/stsync-tenants-{}", getpid());
  const std::string creds = dir + "-credentials";
  std::filesystem::create_directories(dir);
  std::filesystem::create_directories(creds);
  std::ofstream(dir + "/a.toml") << fmt::format("[[tenants]]\nid = {}\nclient_id = \"{}\"\nclient_secret_file = \"secret-a\"\n"
                                                "jobs = [\"employees\"]\n",
                                                kTenantA, sandbox::sandbox_client_id(kTenantA));
  std::ofstream(creds + "/secret-a") << sandbox::sandbox_client_secret(kTenantA) << "\n";
  auto env = stsync_env(sandbox, schema, kTenantA);
  for (const char* k : {"ST_TENANT_ID", "ST_CLIENT_ID", "ST_CLIENT_SECRET"}) env.erase(k);
  env["STSYNC_TENANTS_FILE"] = dir;
  env["CREDENTIALS_DIRECTORY"] = creds;
  ProcessResult r = run_stsync({"run"}, env);
  CHECK(r.exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'employees' AND outcome = 'succeeded'") == 1);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'invoices'") == 0);
  CHECK(r.err.find(sandbox::sandbox_client_secret(kTenantA)) == std::string::npos);
  // A missing secret file is a clear configuration error.
  std::filesystem::remove(creds + "/secret-a");
  ProcessResult missing = run_stsync({"run"}, env);
  CHECK(missing.exit_code == 2);
  CHECK(missing.err.find("client_secret_file secret-a cannot be read") != std::string::npos);
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(creds);
}

TEST_CASE("the daemon runs due jobs on their cadence, honours --max-run-time, serves /metrics and /healthz, and "
          "stops on SIGTERM with its runs recorded",
          "[ops][daemon]") {
  auto o = TestSandbox::default_options(1000, 20);
  o.export_batch = 50;
  o.latency_ms = 100;
  TestSandbox sandbox(o);
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  // employees every 2 s; invoices hourly, but at most 1 s per run: it walks its 20 pages over
  // several rounds, resuming each time after the last committed page.
  const std::string config = write_temp_file("[jobs.employees]\nevery = \"2s\"\n");
  const std::string port_file = fmt::format("/tmp/stsync-daemon-port-{}", getpid());
  std::filesystem::remove(port_file);
  Process daemon({STSYNC_BINARY, "--config", config, "daemon", "--interval", "0.5", "--listen", "127.0.0.1:0",
                  "--port-file", port_file, "--max-run-time", "1s"},
                 env);
  const int port = wait_for_port(port_file);
  // Wait (at most 40 s) until invoices completed and employees ran on its cadence a few times.
  for (int i = 0; i < 400; ++i) {
    if (schema.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1", {schema.name()}) == 1 &&
        schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'employees' AND outcome = 'succeeded'") >= 3 &&
        schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'invoices' AND outcome = 'succeeded'") >= 1)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'employees' AND outcome = 'succeeded'") >= 3);
  // invoices was cut by --max-run-time at page boundaries, resumed, and finished exactly once.
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'invoices' AND outcome = 'interrupted' "
                      "AND error LIKE '%max-run-time%'") >= 1);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'invoices' AND outcome = 'succeeded'") == 1);
  // Not yet due again: invoices runs hourly.
  httplib::Client client("127.0.0.1", port);
  auto health = client.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(health->body.find("\"status\":\"ok\"") != std::string::npos);
  auto metrics = client.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->status == 200);
  const auto m = parse_prometheus(metrics->body);
  CHECK(m.count(fmt::format(R"(stsync_last_success_timestamp_seconds{{tenant="{}",job="employees"}})", kTenantA)) == 1);
  // The figures agree with what the runs recorded: invoices is not stale, it committed its pages,
  // and the requests it sent are counted.
  CHECK(m.at(fmt::format(R"(stsync_stale{{tenant="{}",job="invoices"}})", kTenantA)) == 0);
  CHECK(m.at(fmt::format(R"(stsync_pages_total{{tenant="{}",job="invoices"}})", kTenantA)) ==
        schema.scalar("SELECT sum(pages) FROM {s}.sync_runs WHERE job = 'invoices'"));
  CHECK(m.at(fmt::format(R"(stsync_requests_total{{tenant="{}",job="invoices"}})", kTenantA)) >=
        m.at(fmt::format(R"(stsync_pages_total{{tenant="{}",job="invoices"}})", kTenantA)));

  daemon.send_signal(SIGTERM);
  ProcessResult r = daemon.wait();
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("daemon: stopped by SIGTERM") != std::string::npos);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE outcome = 'running'") == 0);
  const auto problems = compare_with_truth(schema, sandbox, builtin_job("invoices"), kTenantA);
  CHECK(problems.empty());
  std::filesystem::remove(port_file);
}

TEST_CASE("the version flag names the release", "[ops][cli]") {
  ProcessResult r = run_stsync({"--version"}, {});
  CHECK(r.exit_code == 0);
  CHECK(r.out.rfind("stsync 0.", 0) == 0);
}

TEST_CASE("the deploy files refer only to files in the repository, their configs load, and the systemd units "
          "pass systemd-analyze verify",
          "[ops][deploy]") {
  const std::string root = STSYNC_SOURCE_DIR;
  namespace fs = std::filesystem;
  // Every file a manifest or the Dockerfile names is in the repository.
  for (const char* f : {"deploy/kubernetes/stsync.toml", "deploy/kubernetes/daemon.yaml", "deploy/kubernetes/cronjob.yaml",
                        "deploy/package/postinst", "deploy/systemd/stsync.sysusers.conf", "deploy/stsync.toml.example",
                        "deploy/systemd/stsync.env.example", "CMakeLists.txt", "cmake", "src", "schema", "jobs"})
    CHECK(fs::exists(root + "/" + f));
  const std::string kustomization = read_text(root + "/deploy/kubernetes/kustomization.yaml");
  for (const char* f : {"daemon.yaml", "stsync.toml"}) CHECK(kustomization.find(f) != std::string::npos);
  // The configurations load: the Kubernetes one with its secrets as files in CREDENTIALS_DIRECTORY.
  const std::string creds = fmt::format("/tmp/stsync-deploy-creds-{}", getpid());
  fs::create_directories(creds);
  for (const char* s : {"client-secret-1234567", "client-secret-7654321"}) std::ofstream(creds + "/" + s) << "x-secret\n";
  for (const char* config : {"deploy/kubernetes/stsync.toml", "deploy/stsync.toml.example"}) {
    INFO(config);
    ProcessResult r = run_stsync({"--config", root + "/" + config, "jobs"},
                                 {{"CREDENTIALS_DIRECTORY", creds}, {"DATABASE_URL", "host=127.0.0.1 port=1"}});
    CHECK(r.exit_code == 0);
  }
  // The example is valid with its comments removed: every commented-out key, uncommented, loads
  // (its two example paths pointed at folders that exist here).
  {
    std::string uncommented;
    std::istringstream lines(read_text(root + "/deploy/stsync.toml.example"));
    int keys = 0;
    for (std::string line; std::getline(lines, line);) {
      if (std::regex_match(line, std::regex("# [a-z_]+ = .*"))) {
        line = line.substr(2);
        ++keys;
      }
      uncommented += line + "\n";
    }
    CHECK(keys >= 8);
    const std::string tenants_dir = creds + "-tenants";
    fs::create_directories(tenants_dir);
    for (auto [from, to] : std::vector<std::pair<std::string, std::string>>{
             {"\"/etc/stsync/jobs\"", "\"" + root + "/jobs\""}, {"\"/etc/stsync/tenants\"", "\"" + tenants_dir + "\""}}) {
      const size_t at = uncommented.find(from);
      REQUIRE(at != std::string::npos);
      uncommented.replace(at, from.size(), to);
    }
    const std::string config = write_temp_file(uncommented);
    ProcessResult r = run_stsync({"--config", config, "jobs"},
                                 {{"CREDENTIALS_DIRECTORY", creds}, {"DATABASE_URL", "host=127.0.0.1 port=1"}});
    INFO(uncommented << r.err);
    CHECK(r.exit_code == 0);
    fs::remove_all(tenants_dir);
    fs::remove(config);
  }
  fs::remove_all(creds);
  // tests/run.sh installs systemd (for systemd-analyze): a machine without it fails here instead
  // of passing with the units unverified.
  REQUIRE(std::system("command -v systemd-analyze >/dev/null 2>&1") == 0);
  // The units as installed, but starting this build's binary (verify checks that it exists).
  const std::string dir = fmt::format("/tmp/stsync-units-{}", getpid());
  fs::create_directories(dir);
  std::string names;
  for (const char* unit : {"stsync.service", "stsync-daemon.service", "stsync.timer"}) {
    std::string text = read_text(root + "/deploy/systemd/" + unit);
    for (size_t pos; (pos = text.find("/usr/bin/stsync ")) != std::string::npos;)
      text.replace(pos, 16, std::string(STSYNC_BINARY) + " ");
    std::ofstream(dir + "/" + unit) << text;
    names += " " + dir + "/" + unit;
  }
  const std::string out = dir + "/verify.out";
  const int rc = std::system(("systemd-analyze verify" + names + " >" + out + " 2>&1").c_str());
  INFO(read_text(out));
  CHECK(rc == 0);
  CHECK(read_text(out).find(".service") == std::string::npos);  // no warnings about the units
  // And their exposure, as `systemd-analyze security` rates it (0 safest, 10 worst), stays low.
  for (const char* unit : {"stsync.service", "stsync-daemon.service"}) {
    INFO(unit);
    const std::string security = dir + "/security.out";
    CHECK(std::system(("systemd-analyze security --offline=yes --threshold=20 " + dir + "/" + unit + " >" + security +
                       " 2>&1").c_str()) == 0);
    CHECK(read_text(security).find("Overall exposure level for " + std::string(unit)) != std::string::npos);
  }
  fs::remove_all(dir);
}

TEST_CASE("500 tenants cost neither 500 connections nor 500 threads", "[ops][tenants]") {
  sandbox::ServerOptions o = TestSandbox::default_options(0, 0);
  o.data.tenants.clear();
  std::string tenants;
  for (int i = 0; i < 500; ++i) {
    o.data.tenants.push_back({20000 + i, {}});
    tenants += fmt::format("[[tenants]]\nid = {}\nclient_id = \"{}\"\nclient_secret = \"{}\"\n", 20000 + i,
                           sandbox::sandbox_client_id(20000 + i), sandbox::sandbox_client_secret(20000 + i));
  }
  TestSandbox sandbox(o);
  TestSchema schema;
  const std::string tenants_file = write_temp_file(tenants);
  const std::string app = fmt::format("stsync-many-{}", getpid());
  auto env = stsync_env(sandbox, schema, kTenantA);
  for (const char* k : {"ST_TENANT_ID", "ST_CLIENT_ID", "ST_CLIENT_SECRET"}) env.erase(k);
  env["STSYNC_TENANTS_FILE"] = tenants_file;
  env["DATABASE_URL"] = database_url() + " application_name=" + app;
  env["STSYNC_PARALLEL"] = "2";
  Process p({STSYNC_BINARY, "run", "--jobs", "employees"}, env);
  std::int64_t max_connections = 0, max_threads = 0;
  for (int i = 0; i < 600; ++i) {
    max_connections = std::max(max_connections,
                               schema.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", {app}));
    std::ifstream status("/proc/" + std::to_string(p.pid()) + "/status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind("Threads:", 0) == 0) max_threads = std::max<std::int64_t>(max_threads, std::stoll(line.substr(8)));
    if (schema.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1", {schema.name()}) == 1 &&
        schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE outcome <> 'running'") == 500)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ProcessResult r = p.wait();
  CHECK(r.exit_code == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE outcome = 'succeeded'") == 500);
  // Two workers' connections, the fleet's and the due-check's (and the migration's, briefly).
  CHECK(max_connections <= 5);
  CHECK(max_threads <= 6);
}

TEST_CASE("/healthz answers 503 while a round has not come round within --health-timeout", "[ops][daemon]") {
  TestSandbox sandbox;
  TestSchema schema;
  auto env = with_env(stsync_env(sandbox, schema, kTenantA), {{"STSYNC_STATEMENT_TIMEOUT_SECONDS", "120"}});
  REQUIRE(run_stsync({"migrate"}, env).exit_code == 0);
  stall_inserts(schema, "employees", 90);  // the first round hangs: the loop does not come round
  const std::string port_file = fmt::format("/tmp/stsync-health-port-{}", getpid());
  std::filesystem::remove(port_file);
  Process daemon({STSYNC_BINARY, "daemon", "--interval", "0.5", "--listen", "127.0.0.1:0", "--port-file", port_file,
                  "--health-timeout", "2s", "--jobs", "employees"},
                 env);
  const int port = wait_for_port(port_file);
  httplib::Client client("127.0.0.1", port);
  std::string body;
  CHECK(wait_until([&] {
    auto r = client.Get("/healthz");
    if (!r || r->status != 503) return false;
    body = r->body;
    return true;
  }));
  CHECK(body.find("\"status\":\"stuck\"") != std::string::npos);
  release_stall(schema);
  daemon.send_signal(SIGTERM);
  CHECK(daemon.wait().exit_code == 0);
  std::filesystem::remove(port_file);
}

TEST_CASE("/healthz stays 200 through a first load longer than --health-timeout, as long as pages commit",
          "[ops][daemon]") {
  auto o = TestSandbox::default_options(3000, 20);
  o.export_batch = 100;
  o.latency_ms = 300;  // 30 pages of 0.3 s and more: a round far longer than the timeout
  TestSandbox sandbox(o);
  TestSchema schema;
  const auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"migrate"}, env).exit_code == 0);
  ListeningDaemon daemon("beat", {"--interval", "0.5", "--health-timeout", "3s", "--jobs", "invoices"}, env);
  httplib::Client& client = daemon.client();
  int polls = 0, unhealthy = 0;
  const auto started = std::chrono::steady_clock::now();
  REQUIRE(wait_until([&] {
    auto r = client.Get("/healthz");
    ++polls;
    if (!r || r->status != 200) ++unhealthy;
    return schema.scalar("SELECT count(*) FROM {s}.sync_runs WHERE job = 'invoices' AND outcome = 'succeeded'") == 1;
  }));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  INFO(polls << " polls over " << seconds << " s");
  CHECK(seconds > 6);  // the round did outlast the timeout twice over
  CHECK(unhealthy == 0);
  CHECK(daemon.stop() == 0);
  check_exact(schema, sandbox, {"invoices"});
}

TEST_CASE("the daemon answers /metrics with one query per scrape, without reading the job files again",
          "[ops][daemon][metrics]") {
  TestSandbox sandbox;
  TestSchema schema;
  // A copy of the two job files, removed once the daemon has started: a scrape that read them
  // again would fail.
  const std::string jobs = fmt::format("/tmp/stsync-metrics-jobs-{}", getpid());
  std::filesystem::remove_all(jobs);
  std::filesystem::copy(two_job_dir(), jobs);
  const std::string app = fmt::format("stsync-scrape-{}", getpid());
  const auto env = with_env(stsync_env(sandbox, schema, kTenantA),
                            {{"STSYNC_JOBS_DIR", jobs}, {"DATABASE_URL", database_url() + " application_name=" + app}});
  ListeningDaemon daemon("scrape", {"--interval", "3600"}, env);
  httplib::Client& client = daemon.client();
  REQUIRE(daemon.wait_rounds(1));  // the first round is over
  std::filesystem::remove_all(jobs);
  auto scans = [&] {
    schema.db().exec("SELECT pg_stat_clear_snapshot()");
    return schema.scalar("SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_catalog.pg_stat_user_tables "
                         "WHERE schemaname = $1 AND relname = 'sync_state'",
                         {schema.name()});
  };
  auto r = client.Get("/metrics");  // the first scrape reads the schema's shape, once
  REQUIRE(r);
  REQUIRE(r->status == 200);
  // Statistics arrive late: an idle session that flushed less than a second ago waits up to 10 s
  // (PostgreSQL's PGSTAT_IDLE_INTERVAL) before it flushes again; the first round's sessions too.
  usleep(11000000);
  const std::int64_t before = scans();
  // After the round only the metrics connection is left, kept from scrape to scrape.
  auto metrics_backend = [&] {
    return schema.scalar("SELECT coalesce(min(pid), 0) * 1000 + count(*) FROM pg_stat_activity WHERE application_name = $1",
                         {app});
  };
  const std::int64_t backend = metrics_backend();
  CHECK(backend % 1000 == 1);
  const std::string inserted = fmt::format(R"(stsync_rows_inserted_total{{tenant="1001",job="invoices"}} {})",
                                           schema.scalar("SELECT count(*) FROM {s}.invoices"));
  for (int i = 0; i < 5; ++i) {
    auto m = client.Get("/metrics");
    REQUIRE(m);
    CHECK(m->status == 200);
    CHECK(m->body.find(inserted) != std::string::npos);
    CHECK(m->body.find(R"(stsync_stale{tenant="1001",job="employees"} 0)") != std::string::npos);
  }
  CHECK(metrics_backend() == backend);  // the same one connection
  usleep(11000000);
  CHECK(scans() - before == 5);  // one read of sync_state per scrape, and nothing else reads it
  CHECK(daemon.stop() == 0);
}

TEST_CASE("metrics_by = tenant or job aggregates the series: counters summed, lag and duration the largest, stale "
          "counted",
          "[ops][metrics]") {
  TestSandbox sandbox;
  TestSchema schema;
  const auto env = stsync_env(sandbox, schema, kTenantA);
  const std::string path = fmt::format("/tmp/stsync-by-{}.prom", getpid());
  REQUIRE(run_stsync({"run", "--metrics-file", path}, env).exit_code == 0);
  schema.db().exec(fmt::format("UPDATE {}.sync_state SET last_success_at = now() - interval '3 days' WHERE job = 'employees'",
                               schema.db().quote_ident(schema.name())));
  REQUIRE(run_stsync({"run", "--jobs", "invoices", "--metrics-file", path}, env).exit_code == 0);
  const std::map<std::string, double> each = parse_prometheus(read_text(path));
  REQUIRE(run_stsync({"run", "--jobs", "invoices", "--metrics-file", path},
                     with_env(env, {{"STSYNC_METRICS_BY", "tenant"}})).exit_code == 0);
  const std::string by_tenant_text = read_text(path);
  const std::map<std::string, double> by_tenant = parse_prometheus(by_tenant_text);
  CHECK(by_tenant_text.find("job=") == std::string::npos);
  const std::string a = R"({tenant="1001"})";
  const std::string inv = R"({tenant="1001",job="invoices"})", emp = R"({tenant="1001",job="employees"})";
  // The last run of invoices added its requests: compare against sync_runs and sync_state.
  CHECK(by_tenant.at("stsync_rows_inserted_total" + a) == each.at("stsync_rows_inserted_total" + inv) +
                                                           each.at("stsync_rows_inserted_total" + emp));
  CHECK(by_tenant.at("stsync_requests_total" + a) ==
        schema.scalar("SELECT sum(requests) FROM {s}.sync_runs"));
  CHECK(by_tenant.at("stsync_stale" + a) == 1);  // employees
  CHECK(by_tenant.at("stsync_freshness_lag_seconds" + a) >=
        std::max(each.at("stsync_freshness_lag_seconds" + inv), each.at("stsync_freshness_lag_seconds" + emp)));
  CHECK(by_tenant.at("stsync_last_success_timestamp_seconds" + a) ==
        Approx(each.at("stsync_last_success_timestamp_seconds" + emp)).margin(1));  // the oldest
  REQUIRE(run_stsync({"run", "--jobs", "invoices", "--metrics-file", path},
                     with_env(env, {{"STSYNC_METRICS_BY", "job"}})).exit_code == 0);
  const std::map<std::string, double> by_job = parse_prometheus(read_text(path));
  CHECK(by_job.at(R"(stsync_stale{job="employees"})") == 1);
  CHECK(by_job.at(R"(stsync_stale{job="invoices"})") == 0);
  CHECK(by_job.count("stsync_stale" + emp) == 0);
  ProcessResult bad = run_stsync({"run"}, with_env(env, {{"STSYNC_METRICS_BY", "tenants"}}));
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("STSYNC_METRICS_BY must be \"tenant_job\", \"tenant\" or \"job\"") != std::string::npos);
  std::filesystem::remove(path);
}

TEST_CASE("a daemon checks migrations and tables once, and its later rounds send no migration check",
          "[ops][daemon]") {
  TestSandbox sandbox;
  TestSchema schema;
  const auto env = stsync_env(sandbox, schema, kTenantA);
  ListeningDaemon daemon("idle", {"--interval", "0.2"}, env);
  // Ten rounds: the first syncs both jobs (hourly), the others find nothing due.
  REQUIRE(daemon.wait_rounds(10));
  REQUIRE(daemon.stop() == 0);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.sync_runs") == 2);
  // schema_migrations is read by a scan twice in the daemon's life, both in its first round:
  // building its primary key, and the check of the applied migrations; a migration check per
  // round would add one per round. (The daemon's sessions have ended: their statistics are in.)
  schema.db().exec("SELECT pg_stat_clear_snapshot()");
  CHECK(schema.scalar("SELECT seq_scan FROM pg_catalog.pg_stat_user_tables WHERE schemaname = $1 AND relname = "
                      "'schema_migrations'",
                      {schema.name()}) == 2);
}

TEST_CASE("the shipped deploys work unedited: readable secrets in Kubernetes, no tenant in the units, a cron path "
          "for the stsync user, a timer that catches up, a lean image context",
          "[ops][deploy]") {
  const std::string root = STSYNC_SOURCE_DIR;
  auto field = [](const std::string& text, const std::string& key) {
    std::smatch m;
    const std::regex re(key + R"(:\s*([0-9]+))");
    return std::regex_search(text, m, re) ? std::optional<long>(std::stol(m[1].str(), nullptr, 0)) : std::nullopt;
  };
  for (const char* manifest : {"deploy/kubernetes/daemon.yaml", "deploy/kubernetes/cronjob.yaml"}) {
    INFO(manifest);
    const std::string text = read_text(root + "/" + manifest);
    // The container user must be able to read its client_secret_file: the Secret's files belong to
    // fsGroup, so the user's group must be it and the mode must let the group read.
    const auto user = field(text, "runAsUser"), group = field(text, "runAsGroup"), fs_group = field(text, "fsGroup");
    const auto mode = field(text, "defaultMode");  // octal in the manifest: 0440
    REQUIRE(user);
    REQUIRE(group);
    REQUIRE(fs_group);
    REQUIRE(mode);
    CHECK(*fs_group == *group);
    CHECK((*mode & 040) != 0);   // group-readable
    CHECK((*mode & 0222) == 0);  // and nobody writes
    // Every key the manifest takes from the Secret is one the example Secret has.
    const std::string secret = read_text(root + "/deploy/kubernetes/secret.example.yaml");
    const std::regex key_re(R"(secretKeyRef:\s*\{name:\s*stsync-secrets,\s*key:\s*([A-Z_]+)\})");
    for (auto it = std::sregex_iterator(text.begin(), text.end(), key_re); it != std::sregex_iterator(); ++it)
      CHECK(secret.find((*it)[1].str() + ":") != std::string::npos);
  }
  // The client_secret_file names of the Kubernetes config are keys of the example Secret.
  const std::string k8s_config = read_text(root + "/deploy/kubernetes/stsync.toml");
  const std::string secret = read_text(root + "/deploy/kubernetes/secret.example.yaml");
  const std::regex file_re(R"re(client_secret_file\s*=\s*"([^"]+)")re");
  for (auto it = std::sregex_iterator(k8s_config.begin(), k8s_config.end(), file_re); it != std::sregex_iterator(); ++it)
    CHECK(secret.find((*it)[1].str() + ":") != std::string::npos);
  // No packaged unit names a tenant: credentials come from the config's files or a drop-in.
  for (const char* unit : {"deploy/systemd/stsync.service", "deploy/systemd/stsync-daemon.service"}) {
    INFO(unit);
    const std::string text = read_text(root + "/" + unit);
    CHECK(text.find("\nLoadCredential") == std::string::npos);
  }
  // Persistent= only means something with calendar times.
  const std::string timer = read_text(root + "/deploy/systemd/stsync.timer");
  CHECK(timer.find("Persistent=true") != std::string::npos);
  CHECK(timer.find("OnCalendar=") != std::string::npos);
  CHECK(timer.find("OnUnitInactiveSec=") == std::string::npos);
  // The cron line runs as stsync: what it writes is in directories the package gives that user.
  const std::string cron = read_text(root + "/deploy/cron/stsync.cron");
  const std::string postinst = read_text(root + "/deploy/package/postinst");
  CHECK(cron.find(" stsync flock") != std::string::npos);
  CHECK(postinst.find("-o stsync -g stsync /var/lib/stsync /var/log/stsync") != std::string::npos);
  for (const char* path : {"/var/lib/stsync/", "/var/log/stsync/"}) CHECK(cron.find(path) != std::string::npos);
  CHECK(cron.find("/tmp/") == std::string::npos);
  CHECK(cron.find(">>/var/log/stsync.log") == std::string::npos);
  CHECK(read_text(root + "/deploy/systemd/stsync.env.example").find("640") != std::string::npos);
  // The image's build context leaves the local database and the build folders out.
  const std::string ignore = read_text(root + "/.dockerignore");
  for (const char* entry : {".stsync-local", "build", ".git"}) CHECK(ignore.find(entry) != std::string::npos);
  // build.sh tells a docker CLI without a daemon apart, and goes on (the .deb is built).
  const std::string build = read_text(root + "/deploy/package/build.sh");
  CHECK(build.find("docker info") != std::string::npos);
  CHECK(build.find("no docker daemon: image skipped") != std::string::npos);
}
