#include "support.h"

#include <filesystem>

#include "embedded.h"

#include <fcntl.h>
#include <spawn.h>
#include <signal.h>
#include <simdjson.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fmt/format.h>
#include <fstream>
#include <httplib.h>
#include <sstream>

namespace stsync::test {

namespace {
// A field path for #> and #>> as ARRAY['a','b'] with quotes escaped (no '{a,b}' parsing).
std::string json_path_sql(const std::vector<std::string>& path) {
  std::string out = "ARRAY[";
  for (size_t i = 0; i < path.size(); ++i) {
    out += i ? ",'" : "'";
    for (char ch : path[i]) out += ch == '\'' ? std::string("''") : std::string(1, ch);
    out += "'";
  }
  return out + "]::text[]";
}
}  // namespace

namespace {
std::atomic<int> g_counter{0};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Typed column vs raw, per type: what a correct extraction of the path must equal.
std::string typed_mismatch_sql(const ColumnSpec& c, const std::string& col_q) {
  std::string path = "{";
  for (size_t i = 0; i < c.path.size(); ++i) path += (i ? "," : "") + c.path[i];
  path += "}";
  const std::string text = fmt::format("(raw #>> '{}')", path);
  switch (c.type) {
    case ColumnType::bigint: return fmt::format("{} IS DISTINCT FROM {}::bigint", col_q, text);
    case ColumnType::integer: return fmt::format("{} IS DISTINCT FROM {}::integer", col_q, text);
    case ColumnType::numeric: return fmt::format("{} IS DISTINCT FROM {}::numeric", col_q, text);
    case ColumnType::text: return fmt::format("{} IS DISTINCT FROM {}", col_q, text);
    case ColumnType::boolean: return fmt::format("{} IS DISTINCT FROM {}::boolean", col_q, text);
    case ColumnType::timestamptz:
      // stsync truncates the 7th fractional digit; PostgreSQL's own cast rounds it.
      return fmt::format("(({0} IS NULL) <> ({1} IS NULL) OR abs(extract(epoch FROM {0} - {1}::timestamptz)) > 0.000001)",
                         col_q, text);
    case ColumnType::date:
      return fmt::format("{} IS DISTINCT FROM ({}::timestamptz AT TIME ZONE 'UTC')::date", col_q, text);
    case ColumnType::jsonb:
      return fmt::format("{} IS DISTINCT FROM nullif(raw::jsonb #> '{}', 'null'::jsonb)", col_q, path);
  }
  return "false";
}

}  // namespace

std::string database_url() {
  const char* url = std::getenv("STSYNC_TEST_DATABASE_URL");
  return url ? url : "";
}

TestSchema::TestSchema() {
  name_ = fmt::format("stsync_test_{}_{}", getpid(), g_counter.fetch_add(1));
  db_ = std::make_unique<PgConnection>(database_url());
  db_->exec(fmt::format("DROP SCHEMA IF EXISTS {} CASCADE", db_->quote_ident(name_)));
}

TestSchema::~TestSchema() {
  try {
    if (!std::getenv("STSYNC_TEST_KEEP_SCHEMAS"))
      db_->exec(fmt::format("DROP SCHEMA IF EXISTS {} CASCADE", db_->quote_ident(name_)));
  } catch (...) {
  }
}

std::int64_t TestSchema::scalar(const std::string& sql, const Params& params) {
  std::string q = sql;
  for (size_t pos; (pos = q.find("{s}")) != std::string::npos;) q.replace(pos, 3, db_->quote_ident(name_));
  PgResult r = db_->exec(q, params);
  return r.is_null(0, 0) ? 0 : r.get_int(0, 0);
}

double TestSchema::scalar_double(const std::string& sql, const Params& params) {
  std::string q = sql;
  for (size_t pos; (pos = q.find("{s}")) != std::string::npos;) q.replace(pos, 3, db_->quote_ident(name_));
  PgResult r = db_->exec(q, params);
  return r.is_null(0, 0) ? 0 : std::stod(r.get(0, 0));
}

sandbox::ServerOptions TestSandbox::default_options(int invoices, int employees) {
  sandbox::ServerOptions o;
  o.data.seed = 7;
  for (std::int64_t t : {kTenantA, kTenantBig})
    o.data.tenants.push_back({t, {{"invoices", invoices}, {"employees", employees}}});
  o.rate_limit_per_second = 60;
  o.export_batch = 200;
  return o;
}

TestSandbox::TestSandbox(sandbox::ServerOptions options)
    : tls_(!options.tls_cert_file.empty()), server_(std::make_unique<sandbox::Server>(std::move(options))) {
  port_ = server_->start("127.0.0.1", 0);
}

std::string TestSandbox::url() const { return fmt::format("http://127.0.0.1:{}", port_); }

std::string TestSandbox::admin(const std::string& what, const std::string& query, bool post) {
  httplib::Client c(fmt::format("{}://127.0.0.1:{}", tls_ ? "https" : "http", port_));
  c.enable_server_certificate_verification(false);  // the admin side of a TLS test sandbox
  const std::string path = "/_sandbox/" + what + (query.empty() ? "" : "?" + query);
  auto r = post ? c.Post(path.c_str()) : c.Get(path.c_str());
  REQUIRE(r);
  INFO(path << " → " << r->status << " " << r->body);
  REQUIRE(r->status == 200);
  return r->body;
}

std::string TestSandbox::truth(std::int64_t tenant, const std::string& resource) {
  return admin("truth", fmt::format("tenant={}&resource={}", tenant, resource), false);
}

std::int64_t TestSandbox::stat(std::int64_t tenant, const std::string& field) {
  std::string body = admin("stats", "", false);
  simdjson::dom::parser p;
  simdjson::dom::element doc = p.parse(body);
  std::int64_t v = 0;
  auto e = doc["tenants"][std::to_string(tenant)][field].get_int64().get(v);
  (void)e;
  return v;
}

bool wait_until(const std::function<bool()>& done) {
  for (int i = 0; i < 6000; ++i) {
    if (done()) return true;
    usleep(10000);
  }
  return false;
}

int wait_for_port(const std::string& port_file) {
  int port = 0;
  REQUIRE(wait_until([&] {
    std::ifstream(port_file) >> port;
    return port > 0;
  }));
  return port;
}

namespace {
std::int64_t runs_figure(TestSchema& schema, const std::string& select) {
  if (schema.scalar("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = 'sync_runs'",
                    {schema.name()}) == 0)
    return 0;
  return schema.scalar(select);
}
}  // namespace

std::int64_t committed_pages(TestSchema& schema) {
  return runs_figure(schema, "SELECT coalesce(sum(pages), 0) FROM {s}.sync_runs");
}

std::int64_t finished_runs(TestSchema& schema) {
  return runs_figure(schema, "SELECT count(*) FROM {s}.sync_runs WHERE outcome <> 'running'");
}

bool TestSandbox::wait_for_records_served(std::int64_t tenant, std::int64_t records) {
  return wait_for_stat(tenant, "records_served", records);
}

bool TestSandbox::wait_for_stat(std::int64_t tenant, const std::string& field, std::int64_t value) {
  // Polls the event's counter; the 30 s only bound a test whose event never comes.
  for (int i = 0; i < 3000; ++i) {
    if (stat(tenant, field) >= value) return true;
    usleep(10000);
  }
  return false;
}

// The tests written for the first two resources run those two jobs: a directory holding only
// their job files (written once per process from the built-in ones).
std::string two_job_dir() {
  static const std::string dir = [] {
    const std::string d = fmt::format("/tmp/stsync-test-jobs-{}", getpid());
    std::filesystem::create_directories(d);
    for (const EmbeddedFile& f : embedded_jobs())
      if (f.name == "invoices.toml" || f.name == "employees.toml") std::ofstream(d + "/" + std::string(f.name)) << f.content;
    return d;
  }();
  return dir;
}

std::map<std::string, std::string> stsync_env(const TestSandbox& sandbox, const TestSchema& schema,
                                              std::int64_t tenant) {
  return {{"ST_CLIENT_ID", sandbox::sandbox_client_id(tenant)},
          {"STSYNC_JOBS_DIR", two_job_dir()},
          {"ST_CLIENT_SECRET", sandbox::sandbox_client_secret(tenant)},
          {"ST_APP_KEY", "sandbox-app-key"},
          {"ST_TENANT_ID", std::to_string(tenant)},
          {"ST_AUTH_URL", sandbox.url()},
          {"ST_API_URL", sandbox.url()},
          {"STSYNC_SCHEMA", schema.name()},
          {"STSYNC_REQUESTS_PER_SECOND", "50"},
          // Tests move the sandbox's clock by days (instead of waiting): its Date may then be far
          // ahead of this machine's. The tests of the clock check itself set the default back.
          {"STSYNC_MAX_CLOCK_SKEW_SECONDS", "31622400"},
          {"DATABASE_URL", database_url()}};
}

std::map<std::string, std::string> with_env(std::map<std::string, std::string> env,
                                            const std::map<std::string, std::string>& more) {
  for (const auto& [k, v] : more) env[k] = v;
  return env;
}

Process::Process(const std::vector<std::string>& args, const std::map<std::string, std::string>& env) {
  const int n = g_counter.fetch_add(1);
  out_path_ = fmt::format("/tmp/stsync-test-{}-{}.out", getpid(), n);
  err_path_ = fmt::format("/tmp/stsync-test-{}-{}.err", getpid(), n);
  std::vector<std::string> env_strings;
  for (const char* keep : {"PATH", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "ASAN_OPTIONS", "UBSAN_OPTIONS"})
    if (const char* v = std::getenv(keep)) env_strings.push_back(fmt::format("{}={}", keep, v));
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> argv, envp;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : env_strings) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  // posix_spawn, not fork: the child never holds a copy of this (large) test process, so its
  // peak memory is its own.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, 2, err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE(rc == 0);
}

Process::~Process() {
  if (!result_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  unlink(out_path_.c_str());
  unlink(err_path_.c_str());
}

void Process::send_signal(int signo) {
  if (!result_ && pid_ > 0) ::kill(pid_, signo);
}

void Process::kill_hard() {
  if (!result_ && pid_ > 0) ::kill(pid_, SIGKILL);
}

ProcessResult Process::wait(long* peak_kb) {
  if (result_) return *result_;
  int status = 0;
  if (peak_kb) {
    const std::string status_file = fmt::format("/proc/{}/status", pid_);
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      const std::string text = read_file(status_file);
      const size_t pos = text.find("VmHWM:");
      if (pos != std::string::npos) *peak_kb = std::max(*peak_kb, std::atol(text.c_str() + pos + 6));
      usleep(2000);
    }
  } else {
    waitpid(pid_, &status, 0);
  }
  ProcessResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(out_path_);
  r.err = read_file(err_path_);
  result_ = r;
  return r;
}

ProcessResult run_stsync(const std::vector<std::string>& args,
                         const std::map<std::string, std::string>& env) {
  std::vector<std::string> full = {STSYNC_BINARY};
  full.insert(full.end(), args.begin(), args.end());
  Process p(full, env);
  ProcessResult r = p.wait();
  UNSCOPED_INFO("stsync " << (args.empty() ? "" : args[0]) << " exit " << r.exit_code << "\nstdout:\n"
                          << r.out << "\nstderr:\n" << r.err);
  return r;
}

JobSpec builtin_job(const std::string& name) {
  for (JobSpec& j : load_job_specs(""))
    if (j.name == name) return j;
  FAIL("no built-in job " << name);
  return {};
}

std::vector<std::string> compare_with_truth(TestSchema& schema, TestSandbox& sandbox,
                                            const JobSpec& spec, std::int64_t tenant) {
  PgConnection& db = schema.db();
  const std::string table = db.quote_ident(schema.name()) + "." + db.quote_ident(spec.table);
  std::string truth = sandbox.truth(tenant, spec.name);
  const bool by_id = spec.key.size() == 1 && spec.key[0] == std::vector<std::string>{"id"} &&
                     spec.key_type == ColumnType::bigint;
  // The oracle's own code, not the product's parser or COPY encoder: PostgreSQL splits the truth
  // (jsonb keeps 20-digit decimals exact) after the documented NUL policy, applied here by a scan
  // of this file's own (a JSON \u0000 escape, not an escaped backslash before "u0000", becomes
  // \ufffd: PostgreSQL's jsonb cannot hold NUL).
  std::string json;
  json.reserve(truth.size());
  for (size_t i = 0; i < truth.size(); ++i) {
    if (truth[i] != '\\' || i + 1 >= truth.size()) {
      json += truth[i];
      continue;
    }
    if (truth.compare(i, 6, "\\u0000") == 0) {
      json += "\\ufffd";
      i += 5;
    } else {
      json += truth[i];
      json += truth[++i];
    }
  }
  db.exec("DROP TABLE IF EXISTS pg_temp.truth");
  db.exec("CREATE TEMP TABLE truth (id bigint, raw jsonb NOT NULL)");
  db.exec(by_id ? "INSERT INTO pg_temp.truth SELECT (e ->> 'id')::bigint, e FROM jsonb_array_elements($1::jsonb) e"
                : "INSERT INTO pg_temp.truth SELECT 0, e FROM jsonb_array_elements($1::jsonb) e",
          {json});
  std::vector<std::string> problems;
  if (by_id) {
    PgResult diff = db.exec(
        fmt::format("SELECT coalesce(t.id, x.id), t.id IS NULL, x.id IS NULL, "
                    "(SELECT string_agg(coalesce(a.key, b.key) || ': stored ' || left(coalesce(a.value::text, '-'), 120) || "
                    "' truth ' || left(coalesce(b.value::text, '-'), 120), '; ') FROM jsonb_each(x.raw) a "
                    "FULL JOIN jsonb_each(t.raw) b ON a.key = b.key WHERE a.value IS DISTINCT FROM b.value) "
                    "FROM pg_temp.truth t "
                    "FULL JOIN (SELECT id, raw::jsonb AS raw FROM {} WHERE tenant_id = $1 AND deleted_at IS NULL) x "
                    "ON x.id = t.id WHERE x.raw IS DISTINCT FROM t.raw ORDER BY 1 LIMIT 20",
                    table),
        {std::to_string(tenant)});
    for (int i = 0; i < diff.rows(); ++i)
      problems.push_back(fmt::format("id {}: {}", diff.get(i, 0),
                                     diff.get(i, 1) == "t"   ? "extra row in the database"
                                     : diff.get(i, 2) == "t" ? "missing from the database"
                                                             : "raw differs: " + diff.get(i, 3)));
  } else {
    // Keys that are text, several fields or none: the live rows' records, as a multiset, are the
    // truth's records; and each row's key is the one its record gives.
    for (const auto& [label, sql] : std::vector<std::pair<std::string, std::string>>{
             {"missing from the database", "SELECT raw FROM pg_temp.truth EXCEPT ALL SELECT raw::jsonb FROM {} "
                                           "WHERE tenant_id = $1 AND deleted_at IS NULL"},
             {"extra row in the database", "SELECT raw::jsonb FROM {} WHERE tenant_id = $1 AND deleted_at IS NULL "
                                           "EXCEPT ALL SELECT raw FROM pg_temp.truth"}}) {
      PgResult diff = db.exec(fmt::format("SELECT left(x.raw::text, 200) FROM ({}) x(raw) LIMIT 5", fmt::format(fmt::runtime(sql), table)),
                              {std::to_string(tenant)});
      for (int i = 0; i < diff.rows(); ++i) problems.push_back(fmt::format("{}: {}", label, diff.get(i, 0)));
    }
    std::string key_sql;
    auto path_text = [](const std::vector<std::string>& path) {
      std::string p = "{";
      for (size_t i = 0; i < path.size(); ++i) p += (i ? "," : "") + path[i];
      return "(raw::jsonb #>> '" + p + "}')";
    };
    if (spec.key.size() == 1) {
      key_sql = fmt::format("id::text IS DISTINCT FROM {}", path_text(spec.key[0]));
    } else if (spec.key.size() > 1) {
      std::string parts;
      for (const auto& k : spec.key) parts += (parts.empty() ? "" : ", ") + path_text(k);
      key_sql = fmt::format("id::jsonb IS DISTINCT FROM jsonb_build_array({})", parts);
    }
    if (!key_sql.empty()) {
      PgResult bad = db.exec(fmt::format("SELECT id::text FROM {} WHERE tenant_id = $1 AND ({}) LIMIT 3", table, key_sql),
                             {std::to_string(tenant)});
      for (int i = 0; i < bad.rows(); ++i) problems.push_back(fmt::format("key {}: not the record's key", bad.get(i, 0)));
    }
  }
  std::vector<std::string> checks;
  for (const ColumnSpec& c : spec.columns) checks.push_back(typed_mismatch_sql(c, db.quote_ident(c.name)));
  checks.push_back("active IS DISTINCT FROM coalesce((raw ->> 'active')::boolean, true)");
  checks.push_back(
      "((modified_on IS NULL) <> (raw ->> 'modifiedOn' IS NULL) OR "
      "abs(extract(epoch FROM modified_on - (raw ->> 'modifiedOn')::timestamptz)) > 0.000001)");
  for (const std::string& check : checks) {
    PgResult bad = db.exec(fmt::format("SELECT id FROM {} WHERE tenant_id = $1 AND deleted_at IS NULL AND ({}) LIMIT 3",
                                       table, check),
                           {std::to_string(tenant)});
    for (int i = 0; i < bad.rows(); ++i)
      problems.push_back(fmt::format("id {}: typed column disagrees with raw: {}", bad.get(i, 0), check));
  }
  // Child tables mirror the arrays in the parents' raw: same count, same elements, typed columns
  // that agree with each element.
  for (const ChildSpec& child : spec.children) {
    const std::string child_table = db.quote_ident(schema.name()) + "." + db.quote_ident(child.table);
    const std::string array = "t.raw::jsonb #> " + json_path_sql(child.path);
    std::vector<std::string> child_checks = {
        fmt::format("SELECT t.id FROM {0} t WHERE t.tenant_id = $1 AND coalesce(jsonb_array_length(CASE WHEN "
                    "jsonb_typeof({2}) = 'array' THEN {2} END), 0) <> (SELECT count(*) FROM {1} c WHERE "
                    "c.tenant_id = t.tenant_id AND c.parent_id = t.id) LIMIT 3",
                    table, child_table, array),
        fmt::format("SELECT c.parent_id FROM {1} c LEFT JOIN {0} t ON t.tenant_id = c.tenant_id AND t.id = c.parent_id "
                    "WHERE c.tenant_id = $1 AND c.raw IS DISTINCT FROM ({2}) -> (c.position - 1) LIMIT 3",
                    table, child_table, array)};
    for (const ColumnSpec& c : child.columns)
      child_checks.push_back(fmt::format("SELECT parent_id FROM {} WHERE tenant_id = $1 AND ({}) LIMIT 3", child_table,
                                         typed_mismatch_sql(c, db.quote_ident(c.name))));
    for (const std::string& check : child_checks) {
      PgResult bad = db.exec(check, {std::to_string(tenant)});
      for (int i = 0; i < bad.rows(); ++i)
        problems.push_back(fmt::format("parent id {}: child table {} disagrees: {}", bad.get(i, 0), child.table, check));
    }
  }
  return problems;
}

std::string write_temp_file(const std::string& text, const std::string& suffix) {
  const std::string path = fmt::format("/tmp/stsync-test-{}-{}{}", getpid(), g_counter.fetch_add(1), suffix);
  std::ofstream(path) << text;
  chmod(path.c_str(), 0600);
  return path;
}

void check_exact(TestSchema& schema, TestSandbox& sandbox, const std::vector<std::string>& jobs,
                 std::int64_t tenant) {
  for (const std::string& job : jobs) {
    const std::vector<std::string> problems = compare_with_truth(schema, sandbox, builtin_job(job), tenant);
    INFO("job " << job << " tenant " << tenant);
    for (const std::string& p : problems) UNSCOPED_INFO(p);
    CHECK(problems.empty());
  }
}

void stall_inserts(TestSchema& schema, const std::string& table, int seconds) {
  const std::string s = schema.db().quote_ident(schema.name());
  schema.db().exec(fmt::format("CREATE OR REPLACE FUNCTION {0}.stall() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN "
                               "PERFORM pg_sleep({2}); RETURN NEW; END'; CREATE TRIGGER stall BEFORE INSERT ON {0}.{1} "
                               "FOR EACH STATEMENT EXECUTE FUNCTION {0}.stall()",
                               s, schema.db().quote_ident(table), seconds));
}

void release_stall(TestSchema& schema) {
  schema.db().exec("SELECT pg_cancel_backend(pid) FROM pg_catalog.pg_stat_activity WHERE application_name = 'stsync' "
                   "AND wait_event = 'PgSleep' AND strpos(query, $1) > 0",
                   {schema.name()});
}

bool stalled(TestSchema& schema) {
  return schema.scalar("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE application_name = 'stsync' AND "
                       "wait_event = 'PgSleep' AND strpos(query, $1) > 0",
                       {schema.name()}) > 0;
}

}  // namespace stsync::test

namespace stsync::test {

PrivateCluster::PrivateCluster(const std::string& name, int port)
    : dir_(fmt::format("/tmp/stsync-{}-pg-{}", name, getpid())),
      script_(std::string(STSYNC_SOURCE_DIR) + "/tests/pg_cluster.sh") {
  FILE* f = popen(fmt::format("{} start {} {} 2>{}.log", script_, dir_, port, dir_).c_str(), "r");
  REQUIRE(f);
  char buf[32] = {};
  const bool started = std::fgets(buf, sizeof buf, f) != nullptr;
  pclose(f);
  INFO("cluster script: " << log());
  REQUIRE(started);
  url_ = fmt::format("host=127.0.0.1 port={} user=stsync dbname=stsync", std::atoi(buf));
}

PrivateCluster::~PrivateCluster() {
  std::system(fmt::format("{} stop {}; rm -f {}.log", script_, dir_, dir_).c_str());
}

bool PrivateCluster::restart() {
  return std::system(fmt::format("{} restart {} 2>>{}.log >&2", script_, dir_, dir_).c_str()) == 0;
}

std::string PrivateCluster::log() const {
  std::ifstream in(dir_ + ".log");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace stsync::test
