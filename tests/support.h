// Test support: a private schema per test in the real PostgreSQL that tests/run.sh starts, an
// in-process sandbox on a free loopback port (real HTTP), and the stsync binary as a child
// process.
#pragma once
#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "job_spec.h"
#include "pg.h"
#include "sandbox/server.h"

namespace stsync::test {

/// libpq connection string for the test cluster ($STSYNC_TEST_DATABASE_URL, else PG* env).
std::string database_url();

/// A fresh schema, dropped at the end of the test.
class TestSchema {
 public:
  TestSchema();
  ~TestSchema();
  const std::string& name() const { return name_; }
  PgConnection& db() { return *db_; }
  std::int64_t scalar(const std::string& sql, const Params& params = {});
  double scalar_double(const std::string& sql, const Params& params = {});

 private:
  std::string name_;
  std::unique_ptr<PgConnection> db_;
};

/// Polls `done` every 10 ms until it holds (true) or 60 s pass (false): tests wait for events
/// (a committed page, a finished job), the bound only ends a test whose event never comes.
bool wait_until(const std::function<bool()>& done);

/// The port a daemon started with `--port-file path` listens on, once it has written it (fails the
/// test if it never does).
int wait_for_port(const std::string& port_file);

/// The sum of `sync_runs.pages` in `schema` (0 before stsync created the table): pages committed.
std::int64_t committed_pages(TestSchema& schema);
/// Runs of `schema` that ended (succeeded, failed, interrupted, not permitted).
std::int64_t finished_runs(TestSchema& schema);

/// The sandbox, serving on 127.0.0.1 and an ephemeral port.
class TestSandbox {
 public:
  TestSandbox() : TestSandbox(default_options()) {}
  explicit TestSandbox(sandbox::ServerOptions options);
  static sandbox::ServerOptions default_options(int invoices = 600, int employees = 120);
  std::string url() const;
  int port() const { return port_; }
  /// POST /_sandbox/{what}?{query}; returns the body; fails the test on a non-200.
  std::string admin(const std::string& what, const std::string& query = "", bool post = true);
  std::string truth(std::int64_t tenant, const std::string& resource);
  std::int64_t stat(std::int64_t tenant, const std::string& field);
  /// Waits (at most 30 s) until the sandbox has served `records` records to `tenant`, so that a
  /// test can act mid-walk whatever the machine's speed. Returns false on time-out.
  bool wait_for_records_served(std::int64_t tenant, std::int64_t records);
  /// Waits (at most 30 s) until the sandbox's statistic `field` for `tenant` reaches `value`.
  bool wait_for_stat(std::int64_t tenant, const std::string& field, std::int64_t value);
  sandbox::Server& server() { return *server_; }

 private:
  bool tls_ = false;  // before server_: initialised from the options before they move
  std::unique_ptr<sandbox::Server> server_;
  int port_ = 0;
};

inline constexpr std::int64_t kTenantA = 1001;
inline constexpr std::int64_t kTenantBig = 9007199254740993LL;  // above 2^53

struct ProcessResult {
  int exit_code = -1;
  std::string out, err;
};

/// A jobs directory holding only invoices.toml and employees.toml (what stsync_env selects).
std::string two_job_dir();

/// The environment stsync needs to reach `sandbox` and `schema` for the given tenant.
std::map<std::string, std::string> stsync_env(const TestSandbox& sandbox, const TestSchema& schema,
                                              std::int64_t tenant);

/// `env` with `more` added or replaced.
std::map<std::string, std::string> with_env(std::map<std::string, std::string> env,
                                            const std::map<std::string, std::string>& more);

/// A child process with its own environment (nothing inherited but PATH and PG*).
class Process {
 public:
  Process(const std::vector<std::string>& args, const std::map<std::string, std::string>& env);
  ~Process();
  void kill_hard();  // SIGKILL
  pid_t pid() const { return pid_; }
  void send_signal(int signo);
  /// Waits for the exit. With `peak_kb`, polls the child's VmHWM (its own peak resident
  /// memory, which exec resets) until it exits.
  ProcessResult wait(long* peak_kb = nullptr);

 private:
  pid_t pid_ = -1;
  std::string out_path_, err_path_;
  std::optional<ProcessResult> result_;
};

ProcessResult run_stsync(const std::vector<std::string>& args,
                         const std::map<std::string, std::string>& env);

/// Differences between the job's table and the sandbox's truth for one tenant: rows missing,
/// extra or with a different raw document (after the documented NUL policy), and typed columns
/// that disagree with raw. Empty when they are exactly equal.
std::vector<std::string> compare_with_truth(TestSchema& schema, TestSandbox& sandbox,
                                            const JobSpec& spec, std::int64_t tenant);
JobSpec builtin_job(const std::string& name);
/// CHECKs that each of `jobs` (built-in job files) equals the sandbox's truth for `tenant`,
/// listing the differences on failure.
void check_exact(TestSchema& schema, TestSandbox& sandbox, const std::vector<std::string>& jobs,
                 std::int64_t tenant = kTenantA);

/// A stuck statement: every INSERT into `table` of `schema` first sleeps `seconds` in the
/// database (a statement-level trigger), until release_stall().
void stall_inserts(TestSchema& schema, const std::string& table, int seconds);
/// Cancels the sleeping statements of stsync sessions that write into `schema`.
void release_stall(TestSchema& schema);
/// True while an stsync session sleeps in a stalled statement of `schema`.
bool stalled(TestSchema& schema);

/// A PostgreSQL cluster of a test's own (tests/pg_cluster.sh), for tests that restart it; stopped
/// and removed at the end.
class PrivateCluster {
 public:
  PrivateCluster(const std::string& name, int port);
  ~PrivateCluster();
  const std::string& url() const { return url_; }
  /// Restarts the cluster (a fast shutdown: every session is cut); true when it is back.
  bool restart();
  /// The cluster script's own words so far (for a failing test's message).
  std::string log() const;

 private:
  std::string dir_, script_, url_;
};

/// Writes `text` to a fresh temporary file (mode 0600) and returns its path.
std::string write_temp_file(const std::string& text, const std::string& suffix = ".toml");

}  // namespace stsync::test
