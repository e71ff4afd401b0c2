// What a round costs (issue 18): properties that keep a job's cost from growing with the number
// of jobs before it, checked without timing.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <chrono>
#include <thread>

#include "config.h"
#include "migrate.h"
#include "page_parser.h"
#include "scheduler.h"
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
      JobRun runner(settings, spec, session, transport, store, real_clock(), options);
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

TEST_CASE("deleting the children of a page's updated parents reads only their rows whatever the statistics say",
          "[round][store]") {
  // Statistics that describe an empty table (analysed empty, autovacuum off) and 20,000 child
  // rows of the tenant: written plainly, the delete of 300 parents' children becomes a scan of
  // every child row of the tenant (an index condition on tenant_id alone), per page.
  TestSchema schema;
  PgConnection& db = schema.db();
  apply_migrations(db, schema.name());
  const JobSpec spec = builtin_job("invoices");
  ensure_job_tables(db, schema.name(), {spec});
  const std::string s = db.quote_ident(schema.name());
  db.exec(fmt::format("ANALYZE {0}.invoices; ANALYZE {0}.invoices_items; "
                      "ALTER TABLE {0}.invoices SET (autovacuum_enabled = off); "
                      "ALTER TABLE {0}.invoices_items SET (autovacuum_enabled = off)",
                      s));
  db.exec(fmt::format("INSERT INTO {}.invoices (tenant_id, id, modified_on, active, raw) SELECT $1, g, "
                      "'2024-01-01'::timestamptz + g * interval '1 second', true, '{{}}' FROM generate_series(1, 10000) g",
                      s),
          {std::to_string(kTenantA)});
  db.exec(fmt::format("INSERT INTO {}.invoices_items (tenant_id, parent_id, position, raw) SELECT $1, g, p, "
                      "'{{\"id\":1}}' FROM generate_series(1, 10000) g, generate_series(1, 2) p",
                      s),
          {std::to_string(kTenantA)});
  // A page of 300 of those invoices in a later version, two items each.
  std::string body = R"({"data":[)";
  for (int id = 1; id <= 300; ++id)
    body += fmt::format(R"({}{{"id":{},"modifiedOn":"2025-06-01T00:00:00Z","active":true,"items":[{{"id":{}1,"description":"new"}},{{"id":{}2,"description":"new"}}]}})",
                        id > 1 ? "," : "", id * 5 % 10000 + 1, id, id);
  body += R"(],"hasMore":false})";
  body.reserve(body.size() + 64);
  PageParser parser(spec);
  ParsedPage page;
  parser.parse(body, kTenantA, page);
  REQUIRE(page.records == 300);
  auto pkey_entries_read = [&] {
    db.exec("SELECT pg_stat_clear_snapshot()");
    return schema.scalar("SELECT idx_tup_read FROM pg_catalog.pg_stat_user_indexes WHERE indexrelid = to_regclass($1)",
                         {s + ".invoices_items_pkey"});
  };
  const std::int64_t before = pkey_entries_read();
  {
    PgConnection store_db(database_url());
    JobStore store(store_db, schema.name(), spec, kTenantA);
    REQUIRE(store.try_lock());
    const JobState state = store.load_state();
    const std::int64_t run = store.begin_run(SyncMode::export_feed);
    const MergeCounts counts = store.commit_page(page, state, run);
    CHECK(counts.updated == 300);
    store.end_run();
  }  // the session ends: its statistics are flushed as it exits
  std::int64_t read = 0;
  for (int i = 0; i < 100 && (read = pkey_entries_read() - before) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(read >= 600);    // each updated parent's two children were found...
  CHECK(read < 2000);    // ...by their keys, not by reading the tenant's 20,000 child rows
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices_items WHERE raw ->> 'description' = 'new'") == 600);
  CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices_items") == 20000);
}
