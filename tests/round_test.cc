// What a round costs (issue 18): properties that keep a job's cost from growing with the number
// of jobs before it, checked without timing.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "config.h"
#include "runner.h"
#include "store.h"
#include "connect.h"
#include "support.h"

using namespace stsync;
using namespace stsync::test;

TEST_CASE("a connection that ran several jobs holds no temporary table of a finished job", "[round][store]") {
  TestSandbox sandbox;
  TestSchema schema;
  const auto env = stsync_env(sandbox, schema, kTenantA);
  REQUIRE(run_stsync({"run"}, env).exit_code == 0);  // the tables exist, as in any routine round
  std::vector<std::string> warnings;
  const Settings settings = load_settings(
      std::nullopt,
      [&](const char* name) -> std::optional<std::string> {
        auto it = env.find(name);
        return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
      },
      warnings);
  TenantSession session(settings.tenants.at(0), settings.requests_per_second, real_clock());
  CurlTransport transport(curl_options(settings));
  PgConnection db(settings.database_url, session_options(settings));
  RunOptions options;
  options.full_refresh = true;  // every page through the staging table
  int jobs = 0;
  for (int round = 0; round < 3; ++round) {
    for (const JobSpec& spec : resolve_jobs(settings)) {
      JobStore store(db, settings.schema, spec, session.tenant().id, options.full_refresh);
      JobRunner runner(settings, spec, session, transport, store, real_clock(), options);
      CHECK(runner.run().outcome == JobOutcome::succeeded);
      ++jobs;
    }
  }
  REQUIRE(jobs == 6);
  // At every COMMIT PostgreSQL truncates each ON COMMIT DELETE ROWS table of the session: a
  // session that kept one per finished job paid for all of them on every page of the next.
  CHECK(db.exec("SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_my_temp_schema() AND relkind = 'r'")
            .get_int(0, 0) == 0);
}

TEST_CASE("a full refresh whose keys are all new deletes no child row and scans no child table", "[round][store]") {
  TestSandbox sandbox;
  TestSchema schema;
  const auto env = stsync_env(sandbox, schema, kTenantA);
  auto child_scans = [&] {
    // The run's process has exited: its statistics are flushed; a fresh snapshot reads them.
    schema.db().exec("SELECT pg_stat_clear_snapshot()");
    return schema.scalar("SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_catalog.pg_stat_user_tables "
                         "WHERE relid = to_regclass($1)",
                         {schema.db().quote_ident(schema.name()) + ".invoices_items"});
  };
  // The tables exist first (building their indexes reads them once).
  REQUIRE(run_stsync({"migrate"}, env).exit_code == 0);
  const std::int64_t before = child_scans();
  REQUIRE(run_stsync({"run", "--jobs", "invoices", "--full-refresh"}, env).exit_code == 0);
  CHECK(child_scans() == before);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices_items") > 0);
  // A second full refresh meets every parent: it must rebuild their children (the counter moves).
  REQUIRE(run_stsync({"run", "--jobs", "invoices", "--full-refresh"}, env).exit_code == 0);
  CHECK(child_scans() > before);
  check_exact(schema, sandbox, {"invoices"});
}
