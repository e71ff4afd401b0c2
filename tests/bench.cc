// Benchmarks (not part of CTest; run with tests/bench.sh). Every figure is measured in this run,
// side by side with its yardstick: stsync against PostgreSQL's own limit for the same rows, a
// full table against an empty one, a hand-written script on the same feed, many pages against a
// few. Printed as ratios, never asserted as timings.
#define CATCH_CONFIG_MAIN  // the support helpers report through Catch
#include <sys/resource.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>
#include <memory>
#include <optional>
#include <set>
#include <tuple>
#include <cstring>
#include <thread>
#include <fmt/format.h>

#include "copy_text.h"
#include "embedded.h"
#include "http.h"
#include "migrate.h"
#include "page_parser.h"
#include "rate_limiter.h"
#include "sandbox/dataset.h"
#include "sandbox/server.h"
#include "store.h"
#include "support.h"

using namespace stsync;
using namespace stsync::test;
using WallClock = std::chrono::steady_clock;

namespace {

// Line by line: a long benchmark's figures are on the terminal (or in its log) as they come.
[[maybe_unused]] const int stdout_line_buffered = std::setvbuf(stdout, nullptr, _IOLBF, 0);

constexpr int kInvoices = 40000;  // the feed: 40,000 invoices, 2,000 per export page
constexpr int kBatch = 2000;

double seconds_since(WallClock::time_point t0) { return std::chrono::duration<double>(WallClock::now() - t0).count(); }

std::string token_for(CurlTransport& http, const std::string& url, std::int64_t tenant = kTenantA) {
  HttpRequest req;
  req.method = "POST";
  req.url = url + "/connect/token";
  req.headers = {"Content-Type: application/x-www-form-urlencoded"};
  req.body = fmt::format("grant_type=client_credentials&client_id={}&client_secret={}",
                         sandbox::sandbox_client_id(tenant), sandbox::sandbox_client_secret(tenant));
  HttpResponse r = http.perform(req);
  const size_t a = r.body.find("\"access_token\":\"") + 16;
  return r.body.substr(a, r.body.find('"', a) - a);
}

sandbox::ServerOptions options(int invoices, int batch) {
  auto o = TestSandbox::default_options(invoices, 10);
  o.data.tenants.resize(1);
  o.rate_limit_per_second = 100000;
  o.export_batch = batch;
  return o;
}

// The whole export feed, parsed by stsync's own parser: the very rows stsync stores.
std::vector<ParsedPage> parsed_feed(TestSandbox& sandbox, long& json_bytes) {
  CurlTransport http(CurlOptions{});
  const std::string token = token_for(http, sandbox.url());
  JobSpec spec = builtin_job("invoices");
  PageParser parser(spec);
  std::vector<ParsedPage> pages;
  std::string from;
  json_bytes = 0;
  for (;;) {
    HttpRequest req;
    req.url = sandbox.url() + fmt::format("/accounting/v2/tenant/{}/export/invoices", kTenantA) +
              (from.empty() ? "" : "?from=" + url_encode(from));
    req.headers = {"ST-App-Key: sandbox-app-key", "Authorization: Bearer " + token};
    HttpResponse r = http.perform(req);
    json_bytes += static_cast<long>(r.body.size());
    pages.emplace_back();
    parser.parse(r.body, kTenantA, pages.back());
    if (!pages.back().has_more) break;
    from = *pages.back().continue_from;
  }
  return pages;
}

// PostgreSQL's own way to store the invoices feed, written by hand: a staging table, the merge
// (optionally guarded by modifiedOn, as a re-read must be), the child rows, the state row.
struct LimitSql {
  std::string create_stage, copy_stage, insert, guarded_update, delete_children, copy_children, state;
  LimitSql(PgConnection& db, const std::string& schema_name) {
    const JobSpec spec = builtin_job("invoices");
    const std::string s = db.quote_ident(schema_name);
    std::string cols, typed, set;
    for (const std::string& c : staging_columns(spec)) cols += (cols.empty() ? "" : ", ") + db.quote_ident(c);
    for (const ColumnSpec& c : spec.columns) {
      typed += db.quote_ident(c.name) + " " + std::string(column_type_sql(c.type)) + ", ";
      set += fmt::format("{0} = EXCLUDED.{0}, ", db.quote_ident(c.name));
    }
    const std::string targets = cols.substr(0, cols.rfind(", "));  // without ordinal
    create_stage = fmt::format("CREATE TEMP TABLE limit_stage (tenant_id bigint, id bigint, {}modified_on timestamptz, "
                               "active boolean, raw jsonb, ordinal integer) ON COMMIT DELETE ROWS",
                               typed);
    std::string child_cols;
    for (const ColumnSpec& c : spec.children[0].columns) child_cols += db.quote_ident(c.name) + ", ";
    copy_stage = fmt::format("COPY limit_stage ({}) FROM STDIN", cols);
    const std::string upsert = fmt::format(
        "INSERT INTO {0}.invoices AS t ({1}) SELECT {1} FROM limit_stage ON CONFLICT (tenant_id, id) DO UPDATE SET "
        "{2}modified_on = EXCLUDED.modified_on, active = EXCLUDED.active, raw = EXCLUDED.raw",
        s, targets, set);
    insert = upsert;
    guarded_update = upsert + " WHERE EXCLUDED.modified_on > t.modified_on RETURNING id";
    delete_children = fmt::format("DELETE FROM {}.invoices_items WHERE tenant_id = 1001 AND parent_id = ANY($1::bigint[])", s);
    copy_children = fmt::format("COPY {}.invoices_items (tenant_id, parent_id, position, {}raw) FROM STDIN", s, child_cols);
    state = fmt::format("UPDATE {}.sync_state SET export_token = $1 WHERE tenant_id = 1001 AND job = 'limit'", s);
  }
};

// PostgreSQL's own limit for the same rows into the same table shape: per page, COPY into a
// staging table, one INSERT … ON CONFLICT, COPY of the child rows, a state UPDATE, COMMIT; one
// connection; the COPY text prepared beforehand.
double limit_seconds(const std::vector<ParsedPage>& pages, int connections = 1) {
  TestSchema schema;
  PgConnection& first = schema.db();
  apply_migrations(first, schema.name());
  JobSpec spec0 = builtin_job("invoices");
  ensure_job_tables(first, schema.name(), {spec0});
  first.exec(fmt::format("INSERT INTO {}.sync_state (tenant_id, job) VALUES (1001, 'limit')", first.quote_ident(schema.name())));
  // With two connections, pages alternate between them (a first load: no id is in two pages, so
  // no ordering is needed for this measurement).
  std::vector<std::unique_ptr<PgConnection>> extra;
  for (int c = 1; c < connections; ++c) extra.push_back(std::make_unique<PgConnection>(database_url()));
  std::vector<PgConnection*> conns = {&first};
  for (auto& c : extra) conns.push_back(c.get());
  auto load = [&](PgConnection& db, size_t offset, size_t step) {
  const LimitSql sql(db, schema.name());
  db.exec(sql.create_stage);
  for (size_t i = offset; i < pages.size(); i += step) {
    const ParsedPage& page = pages[i];
    db.exec("BEGIN");
    db.copy_in(sql.copy_stage, page.copy_rows);
    db.exec(sql.insert);
    db.copy_in(sql.copy_children, page.children[0].copy_rows);
    db.exec(sql.state, {page.continue_from});
    db.exec("COMMIT");
  }
  };
  const auto t0 = WallClock::now();
  std::vector<std::thread> threads;
  for (size_t c = 1; c < conns.size(); ++c) threads.emplace_back(load, std::ref(*conns[c]), c, conns.size());
  load(*conns[0], 0, conns.size());
  for (std::thread& t : threads) t.join();
  return seconds_since(t0);
}

struct Run {
  double seconds = 0;
  double cpu_seconds = 0;  // stsync's own user + system time
  long peak_kb = 0;
  int exit_code = 0;
};

Run run_stsync_timed(const std::vector<std::string>& args, const std::map<std::string, std::string>& env) {
  std::vector<std::string> full = {STSYNC_BINARY};
  full.insert(full.end(), args.begin(), args.end());
  struct rusage before {}, after {};
  getrusage(RUSAGE_CHILDREN, &before);
  const auto t0 = WallClock::now();
  Process p(full, env);
  Run run;
  ProcessResult r = p.wait(&run.peak_kb);
  run.seconds = seconds_since(t0);
  getrusage(RUSAGE_CHILDREN, &after);
  auto secs = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
  run.cpu_seconds = secs(after.ru_utime) - secs(before.ru_utime) + secs(after.ru_stime) - secs(before.ru_stime);
  run.exit_code = r.exit_code;
  if (r.exit_code != 0) fmt::print(stderr, "stsync failed:\n{}\n", r.err);
  return run;
}

std::map<std::string, std::string> bench_env(const TestSandbox& sandbox, const TestSchema& schema) {
  auto env = stsync_env(sandbox, schema, kTenantA);
  env["STSYNC_REQUESTS_PER_SECOND"] = "60";
  return env;
}

// Fills the job tables with `rows` invoices of the benchmark tenant (ids from 10^13, far from the
// feed's), each with a realistic raw record and two items. `deleted`: rows an earlier sweep
// marked deleted (deleted_at set), so that a listing sweep has nothing new to mark; no statement
// of a page reads deleted_at of rows other than its own.
void prefill(TestSchema& schema, int rows, const std::string& sample_raw, bool deleted = false) {
  PgConnection& db = schema.db();
  const std::string s = db.quote_ident(schema.name());
  db.exec(fmt::format("INSERT INTO {}.invoices (tenant_id, id, modified_on, active, raw, deleted_at) SELECT 1001, "
                      "10000000000000 + g, '2024-01-01'::timestamptz + g * interval '1 second', true, $1::jsonb, {} "
                      "FROM generate_series(1, {}) g",
                      s, deleted ? "'2024-06-01'::timestamptz" : "NULL", rows),
           {sample_raw});
  db.exec(fmt::format("INSERT INTO {}.invoices_items (tenant_id, parent_id, position, raw) SELECT 1001, "
                      "10000000000000 + g, p, '{{\"id\":1,\"description\":\"prefilled\"}}' FROM generate_series(1, {}) g, "
                      "generate_series(1, 2) p",
                      s, rows));
}

// The job tables in one of three states: empty; holding 320,000 rows of the tenant with fresh
// statistics; or holding them with statistics that describe an empty table (analysed empty,
// autovacuum off: a first large load before autovacuum got to it).
enum class Fill { empty, fresh, stale };
constexpr int kPrefilled = 320000;

void prepare_tables(TestSchema& schema, Fill fill, const std::string& sample, bool deleted) {
  const std::string s = schema.db().quote_ident(schema.name());
  if (fill == Fill::stale) {
    schema.db().exec(fmt::format("ANALYZE {0}.invoices; ANALYZE {0}.invoices_items", s));
    schema.db().exec(fmt::format("ALTER TABLE {0}.invoices SET (autovacuum_enabled = off); "
                                 "ALTER TABLE {0}.invoices_items SET (autovacuum_enabled = off)",
                                 s));
  }
  if (fill != Fill::empty) prefill(schema, kPrefilled, sample, deleted);
  if (fill == Fill::fresh) schema.db().exec(fmt::format("ANALYZE {0}.invoices; ANALYZE {0}.invoices_items", s));
  schema.db().exec("CHECKPOINT");
}

// PostgreSQL's log of this cluster (tests/pg_cluster.sh and deploy/lib.sh start it with
// `-l DATA/server.log`), read from where it ends now: the plans auto_explain writes there.
struct ServerLog {
  std::string path;
  std::uintmax_t start = 0;
  explicit ServerLog(PgConnection& db) : path(db.exec("SHOW data_directory").get(0, 0) + "/server.log") {
    std::error_code ec;
    start = std::filesystem::file_size(path, ec);
    if (ec) path.clear();
  }
  std::string since_start() const {
    std::ifstream in(path);
    in.seekg(static_cast<std::streamoff>(start));
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
};

// From auto_explain's plans: per statement that reads or writes a job table (its first words), the
// scans of the job tables in its plan, each with its index condition. A scan that is not driven by
// a key — a sequential scan, or an index or bitmap scan whose condition is the tenant alone — is
// what statistics that describe a smaller table turn a statement into.
struct PlannedScan {
  std::string node, condition;
  bool keyed() const {
    if (node.find("Seq Scan") != std::string::npos) return false;
    if (node.find("Tid Scan") != std::string::npos) return true;  // rows found by keyed probes, by their ctid
    return condition.find("id") != std::string::npos &&
           condition.find("AND") != std::string::npos;  // tenant_id and a key column
  }
  bool operator<(const PlannedScan& o) const { return std::tie(node, condition) < std::tie(o.node, o.condition); }
};

std::string without_schema(const std::string& text, const std::string& schema, size_t limit) {
  std::string out;
  for (size_t i = 0; i < text.size() && out.size() < limit;) {
    if (text.compare(i, schema.size() + 2, "\"" + schema + "\"") == 0) {
      out += 'S';
      i += schema.size() + 2;
    } else if (text.compare(i, schema.size(), schema) == 0) {
      out += 'S';
      i += schema.size();
    } else {
      out += text[i++];
    }
  }
  return out;
}

std::map<std::string, std::set<PlannedScan>> job_table_scans(const std::string& log, const std::string& schema) {
  std::map<std::string, std::set<PlannedScan>> out;
  std::vector<std::string> lines;
  {
    std::istringstream in(log);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  }
  std::string statement;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if (line.find("Query Text:") != std::string::npos) {
      statement = without_schema(line.substr(line.find("Query Text:") + 12), schema, 90);
      continue;
    }
    if (statement.empty() || line.find("Scan") == std::string::npos || line.find("Bitmap Index Scan") != std::string::npos)
      continue;
    const std::string padded = line + " ";
    for (const char* table : {" on invoices ", " on invoices_items ", " on invoices t ", " on invoices_items c ",
                              " on invoices_items invoices_items_1 "}) {
      const size_t at = padded.find(table);
      if (at == std::string::npos) continue;
      PlannedScan scan;
      scan.node = padded.substr(0, padded.find(" (", at));
      scan.node = scan.node.substr(scan.node.find_first_not_of(" \t->"));
      // The condition: the next lines' Index Cond (or a bitmap's Recheck Cond), long arrays cut.
      for (size_t j = i + 1; j < lines.size() && j < i + 4; ++j) {
        const size_t c = lines[j].find(" Cond: ");
        if (c == std::string::npos) continue;
        scan.condition = lines[j].substr(c + 7, 70);
        break;
      }
      out[statement].insert(scan);
      break;
    }
  }
  return out;
}

// Every kind of run, in sequence on one schema: export of new rows, of unchanged rows (the state
// forgotten: a re-read), full refresh of unchanged rows, export of updated rows (the stored
// versions a day older), full refresh of new rows, list of new rows, list with the sweep.
std::map<std::string, double> kinds_once(TestSandbox& sandbox, Fill fill, const std::string& sample,
                                         std::map<std::string, std::set<PlannedScan>>* plans) {
  TestSchema schema;
  auto env = bench_env(sandbox, schema);
  run_stsync_timed({"migrate"}, env);
  prepare_tables(schema, fill, sample, true);
  std::optional<ServerLog> log;
  if (plans) {
    // Every statement's plan into the server's log, as executed (parameters bound).
    env["PGOPTIONS"] = "-c session_preload_libraries=auto_explain -c auto_explain.log_min_duration=0";
    log.emplace(schema.db());
  }
  const std::string s = schema.db().quote_ident(schema.name());
  auto sql = [&](const std::string& text) { schema.db().exec(fmt::format(fmt::runtime(text), fmt::arg("s", s))); };
  auto forget_state = [&] { sql("DELETE FROM {s}.sync_state WHERE job = 'invoices'"); };
  auto drop_feed = [&] {
    sql("DELETE FROM {s}.invoices_items WHERE parent_id < 10000000000000; "
        "DELETE FROM {s}.invoices WHERE id < 10000000000000");
    forget_state();
  };
  std::map<std::string, double> seconds;
  auto timed = [&](const std::string& kind, std::vector<std::string> args) {
    schema.db().exec("CHECKPOINT");
    args.insert(args.begin(), {"run", "--jobs", "invoices"});
    Run r = run_stsync_timed(args, env);
    seconds[kind] = r.exit_code == 0 ? r.seconds : -1;
  };
  timed("export, new rows", {});
  forget_state();
  timed("export, unchanged rows", {});
  timed("full refresh, unchanged rows", {"--full-refresh"});
  sql("UPDATE {s}.invoices SET modified_on = modified_on - interval '1 day' WHERE id < 10000000000000");
  forget_state();
  timed("export, updated rows", {});
  drop_feed();
  timed("full refresh, new rows", {"--full-refresh"});
  drop_feed();
  timed("list, new rows", {"--mode", "list"});
  timed("list with the sweep, unchanged rows", {"--mode", "list", "--reconcile"});
  if (plans && log && !log->path.empty()) *plans = job_table_scans(log->since_start(), schema.name());
  return seconds;
}

void statement_kinds(TestSandbox& sandbox, const std::string& sample) {
  std::map<std::string, double> best[3];
  std::map<std::string, std::set<PlannedScan>> plans;
  // Best of two each, alternating (the machine is shared); the plans from the last stale round.
  for (int round = 0; round < 2; ++round)
    for (Fill fill : {Fill::empty, Fill::fresh, Fill::stale})
      for (const auto& [kind, secs] : kinds_once(sandbox, fill, sample, round == 1 && fill == Fill::stale ? &plans : nullptr)) {
        double& b = best[static_cast<int>(fill)][kind];
        b = b == 0 || secs < 0 ? secs : std::min(b, secs);
      }
  fmt::print("40,000 invoices, every kind of run, into a table holding 320,000 of the tenant vs an empty one, best of two "
             "each (target <= 1.2):\n");
  fmt::print("  {:<38} {:>9} {:>15} {:>8} {:>19} {:>8}\n", "kind", "empty", "320k, fresh", "ratio", "320k, stale stats",
             "ratio");
  for (const auto& [kind, empty] : best[0]) {
    const double fresh = best[1][kind], stale = best[2][kind];
    auto ratio = [&](double full) { return empty > 0 && full > 0 ? fmt::format("{:.2f}", full / empty) : "FAILED"; };
    fmt::print("  {:<38} {:>8.2f}s {:>14.2f}s {:>8} {:>18.2f}s {:>8}\n", kind, empty, fresh, ratio(fresh), stale,
               ratio(stale));
  }
  if (plans.empty()) {
    fmt::print("  (no plans read: the server's log is not DATA/server.log)\n\n");
    return;
  }
  fmt::print("  the job tables' scans in every statement's plan (auto_explain), 360,000 rows, statistics of an empty table:\n");
  // Statements that run once per run or per sweep, not per page: their scans read the tenant's
  // rows by nature (the sweep's anti-join), or stop at the first rows found (a sample of 50
  // parents with children; whether the tenant has rows at all, on a job's first run).
  auto once_per_run = [](const std::string& statement) {
    for (const char* prefix : {"SELECT EXISTS (SELECT 1 FROM S.", "SELECT count(*), count(*) FILTER", "SELECT t.id::text FROM"})
      if (statement.rfind(prefix, 0) == 0) return true;
    return false;
  };
  int unkeyed = 0;
  for (const auto& [statement, scans] : plans) {
    const bool per_run = once_per_run(statement);
    fmt::print("    {}{}\n", statement, per_run ? "  (once per run or sweep)" : "  (per page)");
    for (const PlannedScan& scan : scans) {
      unkeyed += scan.keyed() || per_run ? 0 : 1;
      fmt::print("        {}{}{}\n", scan.node, scan.condition.empty() ? "" : " [" + scan.condition + "]",
                 scan.keyed() ? "" : "  NOT BY KEY");
    }
  }
  fmt::print("  scans of a page's statements not driven by a key: {}\n\n", unkeyed);
}

// A page of 2,000 updated invoices with their items (the feed's second page, the stored versions
// a day older), committed by stsync's own JobStore into a table holding 40,000 invoices and into
// one holding 360,000, and the same rows through the limit's statements (COPY, the guarded merge,
// the child rebuild, the state row) on one connection; best of five each. The two sizes are
// measured in alternation, round by round, so that background work of the cluster (autovacuum,
// a checkpoint after the preceding benchmark) weighs on both alike instead of on one.
struct UpdateTarget {
  TestSchema schema;
  std::string s;
  std::unique_ptr<PgConnection> store_db, limit_db;
  std::unique_ptr<JobStore> store;
  std::unique_ptr<LimitSql> limit;
  JobState state;
  std::int64_t run = 0;
  double stsync_best = 1e9, limit_best = 1e9;
};

void updates_at_scale(TestSandbox& sandbox, const std::vector<ParsedPage>& pages, const std::string& sample) {
  const ParsedPage& page = pages.at(1);
  std::string ids = "{";
  for (const std::string& id : page.ids) {
    if (ids.size() > 1) ids += ',';
    ids += id;
  }
  ids += "}";
  const JobSpec spec = builtin_job("invoices");
  UpdateTarget targets[2];  // [0]: 40,000 rows, [1]: 360,000 rows
  for (int big = 0; big < 2; ++big) {
    UpdateTarget& t = targets[big];
    auto env = bench_env(sandbox, t.schema);
    run_stsync_timed({"migrate"}, env);
    if (big) prefill(t.schema, kPrefilled, sample);
    run_stsync_timed({"run", "--jobs", "invoices"}, env);
    PgConnection& db = t.schema.db();
    t.s = db.quote_ident(t.schema.name());
    db.exec(fmt::format("ANALYZE {0}.invoices; ANALYZE {0}.invoices_items", t.s));
    db.exec(fmt::format("INSERT INTO {}.sync_state (tenant_id, job) VALUES (1001, 'limit')", t.s));
    t.store_db = std::make_unique<PgConnection>(database_url());
    t.store = std::make_unique<JobStore>(*t.store_db, t.schema.name(), spec, kTenantA);
    REQUIRE(t.store->try_lock());
    t.state = t.store->load_state();
    t.run = t.store->begin_run(SyncMode::export_feed);
    t.limit_db = std::make_unique<PgConnection>(database_url());
    t.limit = std::make_unique<LimitSql>(*t.limit_db, t.schema.name());
    t.limit_db->exec(t.limit->create_stage);
  }
  auto age = [&](UpdateTarget& t) {
    t.schema.db().exec(fmt::format("UPDATE {}.invoices SET modified_on = modified_on - interval '1 day' "
                                   "WHERE tenant_id = 1001 AND id = ANY($1::bigint[])",
                                   t.s),
                       {ids});
    t.schema.db().exec("CHECKPOINT");
  };
  for (int round = 0; round < 5; ++round) {
    for (UpdateTarget& t : targets) {
      age(t);
      auto t0 = WallClock::now();
      MergeCounts counts = t.store->commit_page(page, t.state, t.run);
      t.stsync_best = std::min(t.stsync_best, seconds_since(t0));
      REQUIRE(counts.updated == static_cast<std::int64_t>(page.ids.size()));
      age(t);
      PgConnection& limit_db = *t.limit_db;
      t0 = WallClock::now();
      limit_db.exec("BEGIN");
      limit_db.copy_in(t.limit->copy_stage, page.copy_rows);
      PgResult updated = limit_db.exec(t.limit->guarded_update);
      std::string written = "{";
      for (int i = 0; i < updated.rows(); ++i) {
        if (i) written += ',';
        written += updated.get(i, 0);
      }
      limit_db.exec(t.limit->delete_children, {written + "}"});
      limit_db.copy_in(t.limit->copy_children, page.children[0].copy_rows);
      limit_db.exec(t.limit->state, {page.continue_from});
      limit_db.exec("COMMIT");
      t.limit_best = std::min(t.limit_best, seconds_since(t0));
      REQUIRE(updated.rows() == static_cast<int>(page.ids.size()));
    }
  }
  for (UpdateTarget& t : targets) {
    t.store->finish_run(t.run, "succeeded", "");
    t.store->drop_temporary_tables();
    t.store->unlock();
  }
  const UpdateTarget &small = targets[0], &large = targets[1];
  fmt::print("a page of {} updated invoices with their items, committed by stsync's JobStore, best of five "
             "(the sizes alternating):\n"
             "  into 360,000 rows {:.3f} s vs into 40,000 rows {:.3f} s = {:.2f} (target <= 1.2)\n"
             "  the limit (COPY, guarded merge, child rebuild, state; one connection): {:.3f} s and {:.3f} s; limit / "
             "stsync = {:.2f} and {:.2f} (target >= 0.8)\n\n",
             page.ids.size(), large.stsync_best, small.stsync_best, large.stsync_best / small.stsync_best,
             large.limit_best, small.limit_best, large.limit_best / large.stsync_best,
             small.limit_best / small.stsync_best);
}

// N tenants with every catalogued resource (a few rows each, 200 invoices), every default job:
// the routine round of an agency, where the cost is per job, not per row.
struct FleetBench {
  int tenants;
  TestSandbox sandbox;
  TestSchema schema;
  std::string config;
  static constexpr std::int64_t kFirstTenant = 7000;
  FleetBench(int n, int rows, int parallel) : tenants(n), sandbox(options(n, rows)) {
    std::string list;
    for (int i = 0; i < n; ++i)
      list += fmt::format("[[tenants]]\nid = {}\nclient_id = \"{}\"\nclient_secret = \"{}\"\n", kFirstTenant + i,
                          sandbox::sandbox_client_id(kFirstTenant + i), sandbox::sandbox_client_secret(kFirstTenant + i));
    config = write_temp_file(fmt::format("[servicetitan]\napp_key = \"sandbox-app-key\"\nauth_url = \"{0}\"\n"
                                         "api_url = \"{0}\"\nrequests_per_second = 60\n[database]\nschema = \"{1}\"\n"
                                         "[run]\nparallel = {2}\n{3}",
                                         sandbox.url(), schema.name(), parallel, list));
  }
  static sandbox::ServerOptions options(int n, int rows) {
    sandbox::ServerOptions o;
    o.data.seed = 7;
    for (int i = 0; i < n; ++i) {
      sandbox::TenantSetup t{kFirstTenant + i, {}};
      for (const sandbox::ResourceDef& r : sandbox::builtin_resources()) t.counts[r.name] = rows;
      t.counts["invoices"] = 200;
      o.data.tenants.push_back(std::move(t));
    }
    o.rate_limit_per_second = 100000;  // the client's own budget (60/s per tenant) is what limits
    o.data.clock_frozen = false;       // minutes pass: the API's clock must pass with them
    o.export_batch = 200;
    return o;
  }
  Run run(std::vector<std::string> args = {}) {
    std::vector<std::string> full = {"--config", config, "run"};
    full.insert(full.end(), args.begin(), args.end());
    return run_stsync_timed(full, {{"DATABASE_URL", database_url()}});
  }
  std::int64_t requests() {
    std::int64_t n = 0;
    for (int i = 0; i < tenants; ++i)
      n += sandbox.stat(kFirstTenant + i, "requests") + sandbox.stat(kFirstTenant + i, "token_requests");
    return n;
  }
};

// The cheapest way to do what a no-op round does for the same (tenant, job) pairs: per pair one
// GET of the job's endpoint (per-parent jobs: none, as in a no-op round) and one small
// transaction (lock the state row, insert a run row, update the state row), on `parallel`
// connections, within the same per-tenant budget of 60 requests per second. A token per tenant.
double floor_seconds(FleetBench& f, const std::vector<JobSpec>& jobs, int parallel) {
  PgConnection& setup = f.schema.db();
  const std::string s = setup.quote_ident(f.schema.name());
  setup.exec(fmt::format("CREATE SCHEMA IF NOT EXISTS {0}; CREATE TABLE {0}.floor_state (tenant_id bigint, job text, "
                         "last_success_at timestamptz, runs bigint NOT NULL DEFAULT 0, PRIMARY KEY (tenant_id, job)); "
                         "CREATE TABLE {0}.floor_runs (run_id bigserial PRIMARY KEY, tenant_id bigint, job text, "
                         "started_at timestamptz DEFAULT now())",
                         s));
  struct Pair {
    std::int64_t tenant;
    const JobSpec* job;
  };
  std::vector<Pair> pairs;
  // Interleaved over tenants, so that the threads draw on different tenants' budgets.
  for (const JobSpec& j : jobs)
    for (int i = 0; i < f.tenants; ++i) pairs.push_back({FleetBench::kFirstTenant + i, &j});
  setup.exec(fmt::format("INSERT INTO {}.floor_state (tenant_id, job) SELECT t, j FROM generate_series({}, {}) t, "
                         "unnest($1::text[]) j",
                         s, FleetBench::kFirstTenant, FleetBench::kFirstTenant + f.tenants - 1),
             {[&] {
               std::string a = "{";
               for (const JobSpec& j : jobs) a += (a.size() > 1 ? "," : "") + j.name;
               return a + "}";
             }()});
  std::map<std::int64_t, std::string> tokens;
  std::map<std::int64_t, std::unique_ptr<RateLimiter>> budgets;
  {
    CurlTransport http(CurlOptions{});
    for (int i = 0; i < f.tenants; ++i) {
      tokens[FleetBench::kFirstTenant + i] = token_for(http, f.sandbox.url(), FleetBench::kFirstTenant + i);
      budgets[FleetBench::kFirstTenant + i] = std::make_unique<RateLimiter>(60, real_clock());
    }
  }
  std::atomic<size_t> next{0};
  const auto t0 = WallClock::now();
  auto worker = [&] {
    CurlTransport http(CurlOptions{});
    PgConnection db(database_url());
    for (size_t k; (k = next++) < pairs.size();) {
      const Pair& p = pairs[k];
      if (p.job->parent.empty()) {
        budgets[p.tenant]->acquire();
        HttpRequest req;
        std::string path = tenant_path(p.job->list_path.empty() ? p.job->export_path : p.job->list_path, p.tenant);
        req.url = f.sandbox.url() + "/" + path + (p.job->list_path.empty() ? "?includeRecentChanges=false" : "");
        req.headers = {"ST-App-Key: sandbox-app-key", "Authorization: Bearer " + tokens[p.tenant]};
        http.perform(req);
      }
      const std::string t = std::to_string(p.tenant);
      db.exec("BEGIN");
      db.exec(fmt::format("SELECT 1 FROM {}.floor_state WHERE tenant_id = $1 AND job = $2 FOR UPDATE", s),
              {t, p.job->name});
      db.exec(fmt::format("INSERT INTO {}.floor_runs (tenant_id, job) VALUES ($1, $2)", s), {t, p.job->name});
      db.exec(fmt::format("UPDATE {}.floor_state SET last_success_at = now(), runs = runs + 1 WHERE tenant_id = $1 "
                          "AND job = $2",
                          s),
              {t, p.job->name});
      db.exec("COMMIT");
    }
  };
  std::vector<std::thread> threads;
  for (int i = 1; i < parallel; ++i) threads.emplace_back(worker);
  worker();
  for (std::thread& t : threads) t.join();
  return seconds_since(t0);
}

// CPU seconds of the PostgreSQL server this benchmark talks to: its postmaster and every process
// under it (backends that ended are in the postmaster's children's time). Linux /proc.
double postgres_cpu_seconds(PgConnection& db) {
  const std::string checkpointer =
      db.exec("SELECT pid FROM pg_catalog.pg_stat_activity WHERE backend_type = 'checkpointer'").get(0, 0);
  auto stat_fields = [](const std::string& pid) {
    std::ifstream in("/proc/" + pid + "/stat");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> fields;
    std::istringstream rest(text.substr(text.rfind(')') + 2));  // after "pid (comm) "
    for (std::string f; rest >> f;) fields.push_back(f);
    return fields;  // fields[0] is the state (field 3 of proc(5))
  };
  const std::string postmaster = stat_fields(checkpointer).at(1);  // ppid
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  auto cpu = [&](const std::vector<std::string>& f, bool children) {
    double t = std::stod(f.at(11)) + std::stod(f.at(12));  // utime, stime
    if (children) t += std::stod(f.at(13)) + std::stod(f.at(14));  // cutime, cstime
    return t / tick;
  };
  double total = cpu(stat_fields(postmaster), true);
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename();
    if (pid.empty() || !std::isdigit(static_cast<unsigned char>(pid[0]))) continue;
    const std::vector<std::string> f = stat_fields(pid);
    if (f.size() > 14 && f[1] == postmaster) total += cpu(f, true);
  }
  return total;
}

std::string_view builtin_job_text(std::string_view name) {
  for (const EmbeddedFile& f : embedded_jobs())
    if (f.name == name) return f.content;
  return {};
}

}  // namespace

TEST_CASE("benchmarks", "[bench]") {
  fmt::print("stsync benchmarks (one machine, loopback; every ratio is from this run)\n\n");
  TestSandbox sandbox(options(kInvoices, kBatch));
  long json_bytes = 0;
  const std::vector<ParsedPage> pages = parsed_feed(sandbox, json_bytes);
  fmt::print("feed: {} invoices in {} export pages, {:.1f} MB of JSON ({:.2f} KB per invoice)\n\n", kInvoices,
             pages.size(), json_bytes / 1e6, json_bytes / 1e3 / kInvoices);

  // 1. End to end against the limit, side by side, alternating, best of three each (the machine
  // is shared: the minimum is the least disturbed figure of each). stsync with its default of one
  // connection per job and with two; the limit on one connection, as the issue defines it.
  double limit = 1e9, full = 1e9, two_connections = 1e9, cpu = 0;
  for (int round = 0; round < 3; ++round) {
    limit = std::min(limit, limit_seconds(pages));
    TestSchema schema;
    Run r = run_stsync_timed({"run", "--jobs", "invoices"}, bench_env(sandbox, schema));
    if (r.seconds < full) {
      full = r.seconds;
      cpu = r.cpu_seconds;
    }
    TestSchema second;
    auto env = bench_env(sandbox, second);
    env["STSYNC_PAGE_CONNECTIONS"] = "2";
    two_connections = std::min(two_connections, run_stsync_timed({"run", "--jobs", "invoices"}, env).seconds);
  }
  fmt::print("first full sync, new tables:   stsync {:.2f} s = {:.0f} records/s; PostgreSQL's limit for the same rows {:.2f} s\n",
             full, kInvoices / full, limit);
  fmt::print("  limit ratio (limit time / stsync time, target >= 0.9): {:.2f}\n", limit / full);
  fmt::print("  stsync on two connections per job (run.page_connections = 2): {:.2f} s = {:.2f}x of one\n",
             two_connections, two_connections / full);
  fmt::print("  stsync CPU (HTTP, gzip, parse, COPY text): {:.1f} us per record; PostgreSQL (the limit): {:.1f} us per record\n",
             cpu / kInvoices * 1e6, limit / kInvoices * 1e6);
  {
    double two = 1e9;
    for (int round = 0; round < 2; ++round) two = std::min(two, limit_seconds(pages, 2));
    fmt::print("  what a second connection buys: the limit's pages on 2 connections take {:.2f} s = {:.2f}x of one\n",
               two, two / limit);
  }

  // 1b. What jsonb costs: the feed's raw documents copied into a json column and into a jsonb one.
  {
    TestSchema schema;
    PgConnection& db = schema.db();
    const size_t raw_field = staging_columns(builtin_job("invoices")).size() - 2;
    std::string copy;
    for (const ParsedPage& page : pages)
      for (size_t i = 0, begin = 0; i < page.row_ends.size(); begin = page.row_ends[i++]) {
        append_copy_field(copy, copy_row_field(std::string_view(page.copy_rows).substr(begin, page.row_ends[i] - begin - 1),
                                               raw_field));
        copy += '\n';
      }
    double seconds[2] = {1e9, 1e9};
    for (int round = 0; round < 2; ++round)
      for (int i = 0; i < 2; ++i) {
        db.exec("DROP TABLE IF EXISTS pg_temp.raw_only");
        db.exec(std::string("CREATE TEMP TABLE raw_only (raw ") + (i ? "jsonb" : "json") + ")");
        const auto t0 = WallClock::now();
        db.copy_in("COPY pg_temp.raw_only (raw) FROM STDIN", copy);
        seconds[i] = std::min(seconds[i], seconds_since(t0));
      }
    fmt::print("  raw as json instead of jsonb: COPY of the feed's documents {:.2f} s vs {:.2f} s = {:.2f}x\n", seconds[0],
               seconds[1], seconds[0] / seconds[1]);
    // And end to end: the invoices job with raw_type = "json" (tables of its own).
    const std::string dir = fmt::format("/tmp/stsync-bench-jobs-{}", getpid());
    std::filesystem::create_directories(dir);
    std::string text(builtin_job_text("invoices.toml"));
    for (auto [from, to] : {std::pair<std::string, std::string>{"name = \"invoices\"", "name = \"invoices_json\""},
                           {"table = \"invoices\"", "table = \"invoices_json\"\nraw_type = \"json\""},
                           {"table = \"invoices_items\"", "table = \"invoices_items_json\""}})
      text.replace(text.find(from), from.size(), to);
    std::ofstream(dir + "/invoices.toml") << text;
    double json_run = 1e9;
    for (int round = 0; round < 2; ++round) {
      TestSchema json_schema;
      auto env = bench_env(sandbox, json_schema);
      env["STSYNC_JOBS_DIR"] = dir;
      json_run = std::min(json_run, run_stsync_timed({"run", "--jobs", "invoices_json"}, env).seconds);
    }
    std::filesystem::remove_all(dir);
    fmt::print("  stsync with raw_type = \"json\": {:.2f} s = {:.0f} records/s, {:.2f}x the time of jsonb; limit ratio {:.2f}\n\n",
               json_run, kInvoices / json_run, json_run / full, limit / json_run);
  }

  // 2. The hand-written script on the same feed.
  {
    TestSchema schema;
    const auto t0 = WallClock::now();
    const std::string cmd = fmt::format(
        "BENCH_CLIENT_SECRET={} /usr/bin/python3 {}/tests/bench_script.py {} {} {} {} sandbox-app-key '{}' {}.script_invoices",
        sandbox::sandbox_client_secret(kTenantA), STSYNC_SOURCE_DIR, sandbox.url(), sandbox.url(), kTenantA,
        sandbox::sandbox_client_id(kTenantA), database_url(), schema.db().quote_ident(schema.name()));
    schema.db().exec(fmt::format("CREATE SCHEMA IF NOT EXISTS {}", schema.db().quote_ident(schema.name())));
    const int rc = std::system((cmd + " >/dev/null").c_str());
    const double script = seconds_since(t0);
    if (rc == 0)
      fmt::print("hand-written script (requests + psycopg2, no typed columns, no child rows): {:.2f} s\n"
                 "  stsync ahead of it by (script time / stsync time, target >= 1.5): {:.2f}\n\n",
                 script, script / full);
    else
      fmt::print("hand-written script: could not run (python3-psycopg2 and python3-requests are needed)\n\n");
  }

  // 4. A no-op run: nothing changed since the last one.
  {
    TestSchema schema;
    auto env = bench_env(sandbox, schema);
    run_stsync_timed({"run"}, env);
    const std::int64_t before = sandbox.stat(kTenantA, "requests") + sandbox.stat(kTenantA, "token_requests");
    Run r = run_stsync_timed({"run"}, env);
    const std::int64_t requests = sandbox.stat(kTenantA, "requests") + sandbox.stat(kTenantA, "token_requests") - before;
    fmt::print("no-op run of the default jobs (invoices, employees): {} requests (token included), {:.3f} s wall, "
               "{:.3f} s of stsync CPU\n\n",
               requests, r.seconds, r.cpu_seconds);
  }

  // 5. Memory: large export pages, 2 pages against 8, and the default page size.
  for (int per_page : {5000, 8000}) {
    long kb[2] = {0, 0};
    int i = 0;
    for (int n_pages : {2, 8}) {
      TestSandbox big(options(per_page * n_pages, per_page));
      TestSchema schema;
      kb[i++] = run_stsync_timed({"run", "--jobs", "invoices"}, bench_env(big, schema)).peak_kb;
    }
    fmt::print("peak RSS, export pages of {} invoices (~{:.1f} MB of JSON each): {:.1f} MB for 2 pages, {:.1f} MB for 8 "
               "(target <= 64 MB; ratio {:.2f})\n",
               per_page, per_page * static_cast<double>(json_bytes) / kInvoices / 1e6, kb[0] / 1024.0, kb[1] / 1024.0,
               static_cast<double>(kb[1]) / static_cast<double>(kb[0]));
  }

  CHECK(!pages.empty());
}

TEST_CASE("what the change cursor and history cost on a first load", "[bench][cursor]") {
  // The invoices first load (40,000 invoices, child items) side by side, best of three each:
  // tables without change_xid (dropped before the run: a first load copies straight into the
  // tables, never through the merge that sets it), with it (the default), and with history = true.
  TestSandbox sandbox(options(kInvoices, kBatch));
  const std::string history_config = write_temp_file("[jobs.invoices]\nhistory = true\n");
  double without = 1e9, with_cursor = 1e9, with_history = 1e9;
  for (int round = 0; round < 3; ++round) {
    {
      TestSchema schema;
      auto env = bench_env(sandbox, schema);
      REQUIRE(run_stsync({"migrate"}, env).exit_code == 0);
      for (const char* table : {"invoices", "invoices_items"})
        schema.db().exec(fmt::format("ALTER TABLE {}.{} DROP COLUMN change_xid", schema.db().quote_ident(schema.name()),
                                     table));
      without = std::min(without, run_stsync_timed({"run", "--jobs", "invoices"}, env).seconds);
    }
    {
      TestSchema schema;
      with_cursor = std::min(with_cursor, run_stsync_timed({"run", "--jobs", "invoices"}, bench_env(sandbox, schema)).seconds);
    }
    {
      TestSchema schema;
      auto env = bench_env(sandbox, schema);
      env["STSYNC_CONFIG"] = history_config;
      with_history = std::min(with_history, run_stsync_timed({"run", "--jobs", "invoices"}, env).seconds);
      CHECK(schema.scalar("SELECT count(*) FROM {s}.invoices_history") == kInvoices);
    }
  }
  fmt::print("first load of {} invoices: without the change cursor {:.2f} s; with it {:.2f} s = {:.2f}x; "
             "with history = true {:.2f} s = {:.2f}x (target for both: <= 1.10x)\n",
             kInvoices, without, with_cursor, with_cursor / without, with_history, with_history / without);
  std::filesystem::remove(history_config);
}

TEST_CASE("every kind of page costs the same into a large table as into an empty one", "[bench][tables]") {
  // Every kind of statement a page runs, into a table holding 320,000 rows of the tenant against
  // an empty one, with fresh statistics and with statistics of an empty table; then a page of
  // updates at scale against the limit.
  TestSandbox sandbox(options(kInvoices, kBatch));
  long json_bytes = 0;
  const std::vector<ParsedPage> pages = parsed_feed(sandbox, json_bytes);
  const std::string sample = [&] {
    std::string row = pages[0].copy_rows.substr(0, pages[0].copy_rows.find('\n'));
    return copy_row_field(row, staging_columns(builtin_job("invoices")).size() - 2);
  }();
  statement_kinds(sandbox, sample);
  updates_at_scale(sandbox, pages, sample);
  CHECK(pages.size() > 1);
}

TEST_CASE("a routine round of many tenants", "[bench][round]") {
  // A routine round of many tenants: every default job, nothing new (a no-op round), for 1, 10
  // and 50 tenants; per tenant it should cost what it costs for one, and about what its requests
  // and one small transaction per job cost (the floor).
  {
    std::vector<JobSpec> enabled;
    for (const JobSpec& j : load_job_specs(""))
      if (j.enabled) enabled.push_back(j);
    constexpr int kParallel = 4;
    fmt::print("\na routine round: N tenants x {} default jobs (10 rows of each resource, 200 invoices), run.parallel = {}, "
               "60 requests/s per tenant, nothing new since the last round:\n",
               enabled.size(), kParallel);
    double one_tenant = 0;
    // STSYNC_BENCH_TENANTS="1,10" measures other sizes (the ratios need 1 first).
    std::vector<int> sizes = {1, 10, 50};
    if (const char* v = std::getenv("STSYNC_BENCH_TENANTS")) {
      sizes.clear();
      for (const char* p = v; *p;) {
        sizes.push_back(std::atoi(p));
        while (*p && *p != ',') ++p;
        if (*p) ++p;
      }
    }
    for (int n : sizes) {
      FleetBench fleet(n, 10, kParallel);
      Run first = fleet.run();
      const std::int64_t before = fleet.requests();
      Run noop = fleet.run();
      const std::int64_t requests = fleet.requests() - before;
      const double jobs = static_cast<double>(n) * static_cast<double>(enabled.size());
      if (n == 1) one_tenant = noop.seconds;
      fmt::print("  N = {:>2}: first round {:.1f} s; no-op round {:.2f} s = {:.0f} jobs/s, {} requests, stsync CPU {:.2f} ms per "
                 "job; per tenant {:.3f} s = {:.2f}x one tenant's (target <= 1.1){}\n",
                 n, first.seconds, noop.seconds, jobs / noop.seconds, requests, noop.cpu_seconds / jobs * 1e3,
                 noop.seconds / n, noop.seconds / n / one_tenant, first.exit_code || noop.exit_code ? " (a run FAILED)" : "");
      if (n == 10) {
        const double floor = floor_seconds(fleet, enabled, kParallel);
        fmt::print("          the floor (a GET and a small transaction per job, same budget): {:.2f} s; floor / stsync "
                   "= {:.2f} (target >= 0.7)\n",
                   floor, floor / noop.seconds);
      }
    }
  }
  CHECK(true);
}

// A whole tenant's first load: every default job at a contractor's sizes. tests/bench.sh runs
// it at a quarter of the sizes below (a small contractor: minutes per setting, bound by the
// per-parent jobs' one request per parent at 60 requests/s); STSYNC_BENCH_TENANT_SCALE=1 gives
// the mid-sized contractor of issue 18 (most of an hour per setting).
TEST_CASE("a whole tenant's first load", "[bench][tenant]") {
  // At scale 1: 50,000 invoices, 20,000 customers, 30,000 jobs and appointments, 100 rows of
  // every other resource.
  double scale = 0.25;
  if (const char* v = std::getenv("STSYNC_BENCH_TENANT_SCALE")) scale = std::atof(v);
  auto scaled = [&](int n) { return std::max(1, static_cast<int>(n * scale)); };
  sandbox::ServerOptions o;
  o.data.seed = 11;
  sandbox::TenantSetup t{kTenantA, {}};
  for (const sandbox::ResourceDef& r : sandbox::builtin_resources()) t.counts[r.name] = 100;
  t.counts["invoices"] = scaled(50000);
  t.counts["customers"] = scaled(20000);
  t.counts["jobs"] = scaled(30000);
  t.counts["appointments"] = scaled(30000);
  o.data.tenants.push_back(std::move(t));
  o.data.clock_frozen = false;
  o.rate_limit_per_second = 100000;
  TestSandbox sandbox(o);
  fmt::print("\na whole tenant's first load: every default job; {} invoices, {} customers, {} jobs and appointments, "
             "100 rows of every other resource; 60 requests/s:\n",
             scaled(50000), scaled(20000), scaled(30000));
  double first = 0;
  // STSYNC_BENCH_PARALLEL="2" measures one setting (the ratio is to the first one measured).
  std::vector<int> settings = {2, 4};
  if (const char* v = std::getenv("STSYNC_BENCH_PARALLEL")) settings = {std::atoi(v)};
  for (int parallel : settings) {
    TestSchema schema;
    auto env = stsync_env(sandbox, schema, kTenantA);
    env.erase("STSYNC_JOBS_DIR");  // every default job
    env["STSYNC_REQUESTS_PER_SECOND"] = "60";
    env["STSYNC_PARALLEL"] = std::to_string(parallel);
    const double pg_before = postgres_cpu_seconds(schema.db());
    struct rusage self_before {}, self_after {};
    getrusage(RUSAGE_SELF, &self_before);
    const std::int64_t requests_before = sandbox.stat(kTenantA, "requests");
    Run r = run_stsync_timed({"run"}, env);
    getrusage(RUSAGE_SELF, &self_after);
    const double pg = postgres_cpu_seconds(schema.db()) - pg_before;
    auto secs = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
    const double sandbox_cpu = secs(self_after.ru_utime) - secs(self_before.ru_utime) + secs(self_after.ru_stime) -
                               secs(self_before.ru_stime);
    const std::int64_t rows = schema.scalar(
        "SELECT sum(rows_inserted) FROM {s}.sync_runs");
    if (first == 0) first = r.seconds;
    const std::int64_t requests = sandbox.stat(kTenantA, "requests") - requests_before;
    // The tenant's request budget alone: every request at 60 per second, nothing else.
    const double budget_seconds = static_cast<double>(requests) / 60.0;
    fmt::print("  run.parallel = {}: {:.1f} s{} ({:.2f}x of the first setting), {} rows, {} requests = {:.1f} s of the "
               "60/s budget (budget / wall = {:.2f}); CPU: PostgreSQL {:.1f} s ({:.0f}% of the wall time), stsync "
               "{:.1f} s, the sandbox {:.1f} s\n",
               parallel, r.seconds, r.exit_code ? " (FAILED)" : "", r.seconds / first, rows, requests,
               budget_seconds, budget_seconds / r.seconds, pg, 100 * pg / r.seconds, r.cpu_seconds, sandbox_cpu);
    PgResult longest = schema.db().exec(fmt::format(
        "SELECT job, round(extract(epoch FROM finished_at - started_at)::numeric, 1), requests, "
        "rows_inserted FROM {}.sync_runs ORDER BY finished_at - started_at DESC LIMIT 6",
        schema.db().quote_ident(schema.name())));
    for (int i = 0; i < longest.rows(); ++i)
      fmt::print("      {:<28} {:>7} s {:>7} requests {:>7} rows\n", longest.get(i, 0), longest.get(i, 1),
                 longest.get(i, 2), longest.get(i, 3));
  }
  CHECK(first > 0);
}
