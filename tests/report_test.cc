// Report jobs against the sandbox's Reporting API: day by day, exact per day, within the
// report's run limit, lookback, crashes, changing fields, 429s and 403s.
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <simdjson.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <filesystem>
#include <fstream>

#include "support.h"
#include "table_shape.h"
#include "timestamp.h"

using namespace stsync;
using namespace stsync::test;

namespace {

constexpr const char* kJob = "technician_performance";
constexpr const char* kTable = "report_technician_performance";
constexpr std::int64_t kReport = 2001;

// The sandbox's today (its clock: the Date it answers with), as YYYY-MM-DD.
std::string sandbox_today(TestSandbox& sandbox) {
  const std::string body = sandbox.admin("clock", "", false);
  const size_t at = body.find("\"now\":\"");
  REQUIRE(at != std::string::npos);
  return body.substr(at + 7, 10);
}

std::string days_before(const std::string& day, int n) {
  return format_timestamp(*parse_timestamp(day) - static_cast<Ticks>(n) * 86400 * kTicksPerSecond, 0).substr(0, 10);
}

// A config with the technician report job from `start`, and the report's limit scaled down to
// `runs` per `window` seconds (the sandbox is told the same by the test).
std::string report_config(const std::string& start, int lookback, int runs, double window,
                          const std::string& more = "") {
  return write_temp_file(fmt::format("[servicetitan]\nreport_runs = {}\nreport_window_seconds = {}\n\n"
                                     "[[reports]]\nname = \"{}\"\ncategory = \"technician\"\nreport_id = {}\n"
                                     "from_parameter = \"From\"\nto_parameter = \"To\"\nstart_date = \"{}\"\n"
                                     "lookback_days = {}\n{}[reports.parameters]\nIncludeInactive = true\n",
                                     runs, window, kJob, kReport, start, lookback, more));
}

ProcessResult run_report(const std::string& config, const std::map<std::string, std::string>& env,
                         const std::string& jobs = kJob) {
  return run_stsync({"run", "--config", config, "--jobs", jobs}, env);
}

// A value as the comparison sees it: numbers by value, a day at midnight as the day.
std::string normalized(simdjson::dom::element v) {
  if (v.is_null()) return "NULL";
  if (v.is_number()) return fmt::format("{:.4f}", double(v));
  bool b = false;
  if (v.get_bool().get(b) == simdjson::SUCCESS) return b ? "true" : "false";
  std::string s(std::string_view(v.get_string()));
  if (s.size() == 19 && s.substr(10) == "T00:00:00") s = s.substr(0, 10);
  char* end = nullptr;
  const double d = std::strtod(s.c_str(), &end);
  if (!s.empty() && end == s.c_str() + s.size()) return fmt::format("{:.4f}", d);
  return s;
}

// Differences between the table's rows of `day` and the sandbox's rows of that day now.
std::vector<std::string> day_differences(PgConnection& db, const std::string& schema, TestSandbox& sandbox,
                                         const std::string& day, std::int64_t report = kReport,
                                         const std::string& table = kTable) {
  const std::string truth =
      sandbox.admin("report-truth", fmt::format("tenant={}&report={}&day={}", kTenantA, report, day), false);
  PgResult stored = db.exec(
      fmt::format("SELECT to_jsonb(t)::text FROM {}.{} t WHERE tenant_id = $1 AND report_day = $2::date ORDER BY position",
                  schema, table),
      {std::to_string(kTenantA), day});
  simdjson::dom::parser truth_parser, row_parser;
  simdjson::dom::element doc = truth_parser.parse(truth);
  std::vector<std::string> columns;
  for (simdjson::dom::element f : doc["fields"].get_array()) columns.push_back(report_column_name(std::string_view(f)));
  std::vector<std::string> out;
  simdjson::dom::array rows = doc["data"].get_array();
  if (static_cast<int>(rows.size()) != stored.rows())
    out.push_back(fmt::format("day {}: {} rows stored, {} in the report", day, stored.rows(), rows.size()));
  int i = 0;
  for (simdjson::dom::array row : rows) {
    if (i >= stored.rows()) break;
    simdjson::padded_string text(stored.get(i, 0));
    simdjson::dom::element mine = row_parser.parse(text);
    size_t c = 0;
    for (simdjson::dom::element v : row) {
      const std::string want = normalized(v), have = normalized(mine[columns[c]]);
      if (want != have) out.push_back(fmt::format("day {} row {} {}: stored {}, report {}", day, i + 1, columns[c], have, want));
      ++c;
    }
    ++i;
  }
  return out;
}

std::vector<std::string> day_differences(TestSchema& schema, TestSandbox& sandbox, const std::string& day,
                                         std::int64_t report = kReport, const std::string& table = kTable) {
  return day_differences(schema.db(), schema.name(), sandbox, day, report, table);
}

void check_days_exact(PgConnection& db, const std::string& schema, TestSandbox& sandbox, const std::string& first,
                      const std::string& last) {
  std::vector<std::string> differences;
  int days = 0;
  for (std::string day = first; day <= last; day = days_before(day, -1), ++days)
    for (std::string& d : day_differences(db, schema, sandbox, day)) differences.push_back(std::move(d));
  INFO(fmt::format("{} difference(s) over {} days, first: {}", differences.size(), days,
                   differences.empty() ? "-" : differences.front()));
  CHECK(differences.empty());
  // Each day stored once, with the rows its record says.
  PgResult r = db.exec(
      fmt::format("SELECT count(*) FILTER (WHERE d.rows IS DISTINCT FROM t.n), count(*) FROM "
                  "(SELECT day, rows FROM {0}.sync_report_days WHERE day BETWEEN $1::date AND $2::date) d FULL JOIN "
                  "(SELECT report_day, count(*) AS n FROM {0}.{1} WHERE report_day BETWEEN $1::date AND $2::date "
                  "GROUP BY 1) t ON t.report_day = d.day",
                  schema, kTable),
      {first, last});
  CHECK(r.get_int(0, 0) == 0);
  CHECK(r.get_int(0, 1) == days);
}

void check_days_exact(TestSchema& schema, TestSandbox& sandbox, const std::string& first, const std::string& last) {
  check_days_exact(schema.db(), schema.name(), sandbox, first, last);
}

// A sandbox whose report allows `limit` ("runs=5&window_ms=1000"), a schema, and a config whose
// report job starts `days_back` days before the sandbox's today.
struct ReportSetup {
  TestSandbox sandbox;
  TestSchema schema;
  std::string today, start, config;
  std::map<std::string, std::string> env;
  ReportSetup(const std::string& limit, int days_back, int lookback, int runs, double window,
              const std::string& more = "") {
    if (!limit.empty()) sandbox.admin("report-limit", limit);
    today = sandbox_today(sandbox);
    start = days_before(today, days_back);
    config = report_config(start, lookback, runs, window, more);
    env = stsync_env(sandbox, schema, kTenantA);
  }
  ~ReportSetup() { std::filesystem::remove(config); }
};

std::int64_t count_of(const std::string& text, const std::string& what) {
  std::int64_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("a 30-day report backfill stores exactly the sandbox's rows for each day and never runs the report past its limit and verify agrees",
          "[reports]") {
  ReportSetup t("runs=5&window_ms=1500", 29, 2, 5, 1.5);
  auto& [sandbox, schema, today, start, config, env] = t;
  const std::string metrics = config + ".prom";
  ProcessResult r = run_stsync({"run", "--config", config, "--jobs", kJob, "--metrics-file", metrics}, env);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(sandbox.stat(kTenantA, "report_runs") == 30);   // one run a day (a day fits a page)
  CHECK(sandbox.stat(kTenantA, "report_throttled") == 0);  // never a sixth run in a window
  check_days_exact(schema, sandbox, start, today);
  PgResult state = schema.db().exec(
      fmt::format("SELECT complete_through::date::text, (SELECT outcome FROM {0}.sync_runs WHERE job = $1) FROM "
                  "{0}.sync_state WHERE job = $1",
                  schema.name()),
      {kJob});
  CHECK(state.get(0, 0) == days_before(today, 1));  // today and yesterday are read again next time
  CHECK(state.get(0, 1) == "succeeded");
  // status and the metrics count the report job like any other.
  const std::int64_t rows =
      schema.db().exec(fmt::format("SELECT count(*) FROM {}.{}", schema.name(), kTable)).get_int(0, 0);
  ProcessResult status = run_stsync({"status", "--config", config, "--job", kJob, "--json"}, env);
  INFO(status.out);
  CHECK(status.out.find(fmt::format("\"rows\":{},", rows)) != std::string::npos);
  CHECK(status.out.find("\"stale\":false") != std::string::npos);
  CHECK(status.out.find("\"state_in_future\":false") != std::string::npos);
  std::ifstream prom(metrics);
  const std::string text((std::istreambuf_iterator<char>(prom)), std::istreambuf_iterator<char>());
  CHECK(text.find(fmt::format("stsync_rows_inserted_total{{tenant=\"{}\",job=\"{}\"}} {}", kTenantA, kJob, rows)) !=
        std::string::npos);
  std::filesystem::remove(metrics);
  // verify counts the table against what the report gave for the stored days (no request).
  ProcessResult equal = run_stsync({"verify", "--config", config, "--jobs", kJob}, env);
  INFO(equal.out << equal.err);
  CHECK(equal.exit_code == 0);
  CHECK(equal.out.find(" equal (a report job") != std::string::npos);
  schema.db().exec(fmt::format("DELETE FROM {}.{} WHERE report_day = $1::date AND position = 1", schema.name(), kTable),
                   {start});
  ProcessResult differ = run_stsync({"verify", "--config", config, "--jobs", kJob}, env);
  INFO(differ.out);
  CHECK(differ.exit_code == 1);
  CHECK(differ.out.find("MISMATCH") != std::string::npos);
}

TEST_CASE("a second report run reads only the lookback days again and stores their restated numbers", "[reports]") {
  ReportSetup t("runs=5&window_ms=1000", 9, 2, 5, 1.0);
  auto& [sandbox, schema, today, start, config, env] = t;
  REQUIRE(run_report(config, env).exit_code == 0);
  REQUIRE(sandbox.stat(kTenantA, "report_runs") == 10);
  const std::string inside = days_before(today, 2), outside = days_before(today, 6);
  sandbox.admin("report-restate", fmt::format("tenant={}&report={}&day={}", kTenantA, kReport, inside));
  sandbox.admin("report-restate", fmt::format("tenant={}&report={}&day={}", kTenantA, kReport, outside));
  auto written = [&] {  // day → the transaction that last wrote its rows
    std::map<std::string, std::string> out;
    PgResult r = schema.db().exec(fmt::format("SELECT day::text, change_xid::text FROM {}.sync_report_days", schema.name()));
    for (int i = 0; i < r.rows(); ++i) out[r.get(i, 0)] = r.get(i, 1);
    return out;
  };
  const auto before = written();
  ProcessResult second = run_report(config, env);
  INFO(second.err);
  REQUIRE(second.exit_code == 0);
  // Complete through yesterday, less two days of lookback: the three days before today, and today.
  CHECK(sandbox.stat(kTenantA, "report_runs") == 14);
  CHECK(day_differences(schema, sandbox, inside).empty());
  CHECK_FALSE(day_differences(schema, sandbox, outside).empty());  // not read again: still the old numbers
  // Of the days read again, only the one whose numbers changed was rewritten.
  const auto after = written();
  std::vector<std::string> rewritten;
  for (const auto& [day, xid] : after)
    if (before.at(day) != xid) rewritten.push_back(day);
  CHECK(rewritten == std::vector<std::string>{inside});
}

TEST_CASE("kill -9 in the middle of a report backfill then a run leaves every day exact and none twice", "[reports][fault]") {
  ReportSetup t("runs=5&window_ms=1000", 24, 1, 5, 1.0);
  auto& [sandbox, schema, today, start, config, env] = t;
  {
    Process run({STSYNC_BINARY, "run", "--config", config, "--jobs", kJob}, env);
    REQUIRE(wait_until([&] {
      const std::string days = schema.name() + ".sync_report_days";
      return schema.db().exec("SELECT to_regclass($1) IS NOT NULL", {days}).get(0, 0) == "t" &&
             schema.db().exec(fmt::format("SELECT count(*) FROM {}.sync_report_days", schema.name())).get_int(0, 0) >= 8;
    }));
    run.kill_hard();
    run.wait();
  }
  const std::int64_t stored = schema.db().exec(fmt::format("SELECT count(*) FROM {}.sync_report_days", schema.name())).get_int(0, 0);
  CHECK(stored < 25);  // killed mid-way
  ProcessResult again = run_report(config, env);
  INFO(again.err);
  REQUIRE(again.exit_code == 0);
  check_days_exact(schema, sandbox, start, today);
}

TEST_CASE("a field the report's owner adds becomes a column and one removed stays empty and a retyped one holds text",
          "[reports]") {
  ReportSetup t("runs=5&window_ms=1000", 5, 1, 5, 1.0);
  auto& [sandbox, schema, today, start, config, env] = t;
  REQUIRE(run_report(config, env).exit_code == 0);
  sandbox.admin("report-fields", fmt::format("tenant={}&report={}&add=Tips:Number&remove=Active", kTenantA, kReport));
  sandbox.admin("report-fields", fmt::format("tenant={}&report={}&add=Revenue:String", kTenantA, kReport));
  ProcessResult second = run_report(config, env);
  INFO(second.err);
  REQUIRE(second.exit_code == 0);
  // Each change logged once, naming the report and the tenant.
  CHECK(count_of(second.err, "field Tips (Number) added") == 1);
  CHECK(count_of(second.err, "field Active removed") == 1);
  CHECK(count_of(second.err, "field Revenue changed from Number to String") == 1);
  // The retyped column became text from the description, before any value met it.
  CHECK(count_of(second.err, "where the report declares") == 0);
  CHECK(count_of(second.err, fmt::format("tenant {} report technician/{}", kTenantA, kReport)) >= 3);
  PgResult types = schema.db().exec(
      "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a WHERE a.attrelid = "
      "to_regclass($1) AND a.attname IN ('tips', 'revenue', 'active') ORDER BY 1",
      {schema.name() + "." + kTable});
  REQUIRE(types.rows() == 3);
  CHECK(types.get(0, 1) == "boolean");  // active: kept
  CHECK(types.get(1, 1) == "text");     // revenue: text from now on
  CHECK(types.get(2, 1) == "numeric");  // tips: new
  // The days read again (the lookback) have the new shape; the older ones keep theirs.
  const std::string reread = days_before(today, 2), older = days_before(today, 5);
  CHECK(day_differences(schema, sandbox, reread).empty());
  PgResult shape = schema.db().exec(
      fmt::format("SELECT report_day::text, count(*) FILTER (WHERE active IS NULL), count(*) FILTER (WHERE tips IS NULL), "
                  "count(*) FROM {}.{} WHERE report_day IN ($1::date, $2::date) GROUP BY 1 ORDER BY 1",
                  schema.name(), kTable),
      {older, reread});
  REQUIRE(shape.rows() == 2);
  CHECK(shape.get_int(0, 1) == 0);                      // the older day: active as it was
  CHECK(shape.get_int(0, 2) == shape.get_int(0, 3));    // … and no tips
  CHECK(shape.get_int(1, 1) == shape.get_int(1, 3));    // the day read again: active NULL
  CHECK(shape.get_int(1, 2) == 0);                      // … and tips filled
  ProcessResult third = run_report(config, env);
  REQUIRE(third.exit_code == 0);
  CHECK(count_of(third.err, "the report's owner changed it") == 0);  // logged once, not every run
}

TEST_CASE("a report run that meets a 429 waits for its Retry-After and stores every day", "[reports]") {
  // The API allows fewer runs than stsync was told: it answers 429 with Retry-After.
  ReportSetup t("runs=2&window_ms=3000", 4, 1, 5, 1.0);
  auto& [sandbox, schema, today, start, config, env] = t;
  ProcessResult r = run_report(config, env);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const std::int64_t throttled = sandbox.stat(kTenantA, "report_throttled");
  CHECK(throttled >= 1);
  // Waiting as long as Retry-After says, each throttled day's next request is admitted: at most
  // one 429 per day (a retry sooner would meet another).
  CHECK(throttled <= 3);
  CHECK(sandbox.stat(kTenantA, "report_runs") == 5);
  check_days_exact(schema, sandbox, start, today);
  PgResult run = schema.db().exec(
      fmt::format("SELECT outcome, throttled FROM {}.sync_runs WHERE job = $1", schema.name()), {kJob});
  CHECK(run.get(0, 0) == "succeeded");
  CHECK(run.get_int(0, 1) == throttled);
}

TEST_CASE("a report the tenant may not read answers 403 and is recorded as not permitted while the other jobs run",
          "[reports]") {
  ReportSetup t("", 2, 1, 5, 1.0);
  auto& [sandbox, schema, today, start, config, env] = t;
  sandbox.admin("scopes", fmt::format("tenant={}&deny=reporting", kTenantA));
  ProcessResult r = run_report(config, env, std::string(kJob) + ",employees");
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("not permitted (403)") != std::string::npos);
  PgResult state = schema.db().exec(
      fmt::format("SELECT s.not_permitted_at IS NOT NULL, r.outcome FROM {0}.sync_state s JOIN {0}.sync_runs r "
                  "ON r.run_id = s.last_run_id WHERE s.job = $1",
                  schema.name()),
      {kJob});
  REQUIRE(state.rows() == 1);
  CHECK(state.get(0, 0) == "t");
  CHECK(state.get(0, 1) == "not_permitted");
  PgResult employees = schema.db().exec(
      fmt::format("SELECT count(*) FROM {}.sync_runs WHERE job = 'employees' AND outcome = 'succeeded'", schema.name()));
  CHECK(employees.get_int(0, 0) == 1);
  // check asks for the report's description (no run of the report) and names the refusal.
  ProcessResult check = run_stsync({"check", "--config", config}, env);
  INFO(check.out);
  CHECK(check.out.find(fmt::format("DENY  tenant {} job {}: not permitted (403)", kTenantA, kJob)) != std::string::npos);
  CHECK(sandbox.stat(kTenantA, "report_runs") == 0);
}

TEST_CASE("a value that does not fit its field's declared type turns that column into text once and nothing is lost",
          "[reports]") {
  ReportSetup t("runs=5&window_ms=1000", 3, 1, 5, 1.0);
  auto& [sandbox, schema, today, start, config, env] = t;
  REQUIRE(run_report(config, env).exit_code == 0);
  // The report still declares CompletedJobs a Number, but sends text ("Completed jobs 12").
  sandbox.admin("report-fields", fmt::format("tenant={}&report={}&sends=CompletedJobs:String", kTenantA, kReport));
  ProcessResult second = run_report(config, env);
  INFO(second.err);
  REQUIRE(second.exit_code == 0);
  CHECK(count_of(second.err, "field CompletedJobs sent \"Completed jobs") == 1);  // once, with the value
  CHECK(count_of(second.err, "column completed_jobs holds text from now on") == 1);
  PgResult type = schema.db().exec(
      "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a WHERE a.attrelid = to_regclass($1) "
      "AND a.attname = 'completed_jobs'",
      {schema.name() + "." + kTable});
  CHECK(type.get(0, 0) == "text");
  // The days read again hold the text; the older ones their numbers, now as text.
  check_days_exact(schema, sandbox, days_before(today, 2), today);
  PgResult older = schema.db().exec(
      fmt::format("SELECT count(*) FILTER (WHERE completed_jobs ~ '^[0-9.]+$'), count(*) FROM {}.{} "
                  "WHERE report_day = $1::date",
                  schema.name(), kTable),
      {start});
  CHECK(older.get_int(0, 0) == older.get_int(0, 1));
  CHECK(older.get_int(0, 1) > 0);
}

TEST_CASE("a report run past --max-run-time stops between days and the next run goes on from the first day not stored",
          "[reports]") {
  ReportSetup t("runs=5&window_ms=1000", 14, 1, 5, 1.0);
  auto& [sandbox, schema, today, start, config, env] = t;
  ProcessResult first = run_stsync({"run", "--config", config, "--jobs", kJob, "--max-run-time", "1s"}, env);
  INFO(first.err);
  CHECK(first.exit_code == 0);
  CHECK(first.err.find("--max-run-time of 1 s reached before this day") != std::string::npos);
  PgResult run = schema.db().exec(
      fmt::format("SELECT r.outcome, (SELECT count(*) FROM {0}.sync_report_days), s.complete_through::date::text "
                  "FROM {0}.sync_runs r JOIN {0}.sync_state s USING (tenant_id, job)",
                  schema.name()));
  CHECK(run.get(0, 0) == "interrupted");
  const std::int64_t stored = run.get_int(0, 1);
  CHECK(stored >= 1);
  CHECK(stored < 15);
  // Every day before complete_through was stored, none after it: the stop fell between days.
  CHECK(run.get(0, 2) == days_before(start, -static_cast<int>(stored)));
  ProcessResult second = run_report(config, env);
  INFO(second.err);
  REQUIRE(second.exit_code == 0);
  check_days_exact(schema, sandbox, start, today);
}

TEST_CASE("a report of one day per request takes the day in its single date parameter", "[reports]") {
  TestSandbox sandbox;
  TestSchema schema;
  const std::string today = sandbox_today(sandbox), start = days_before(today, 2);
  const std::string config = write_temp_file(fmt::format(
      "[[reports]]\nname = \"invoice_totals\"\ncategory = \"operations\"\nreport_id = 1002\n"
      "date_parameter = \"Date\"\nstart_date = \"{}\"\nlookback_days = 0\n",
      start));
  ProcessResult r = run_report(config, stsync_env(sandbox, schema, kTenantA), "invoice_totals");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(sandbox.stat(kTenantA, "report_runs") == 3);
  for (const std::string& day : {start, days_before(today, 1), today}) {
    const std::vector<std::string> differences = day_differences(schema, sandbox, day, 1002, "report_invoice_totals");
    INFO(day << ": " << (differences.empty() ? "-" : differences.front()));
    CHECK(differences.empty());
  }
  std::filesystem::remove(config);
}

TEST_CASE("a report backfill through transient API faults stores every day exactly", "[reports][fault]") {
  ReportSetup t("runs=5&window_ms=1000", 11, 1, 5, 1.0);
  auto& [sandbox, schema, today, start, config, env] = t;
  // One request in four meets a 5xx, a 429, a reset or cut connection or a slow answer.
  sandbox.admin("faults", "rate=0.25&seed=11&slow_ms=200");
  ProcessResult r = run_report(config, with_env(env, {{"STSYNC_TIMEOUT_SECONDS", "5"}}));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(sandbox.admin("stats", "", false).find("\"faults_injected\":0") == std::string::npos);
  check_days_exact(schema, sandbox, start, today);
  PgResult run = schema.db().exec(fmt::format("SELECT retries FROM {}.sync_runs WHERE job = $1", schema.name()), {kJob});
  CHECK(run.get_int(0, 0) > 0);
}

TEST_CASE("PostgreSQL restarted in the middle of a report backfill: the run reconnects and every day is exact",
          "[reports][fault][db]") {
  PrivateCluster cluster("report-restart", 26140);
  const std::string& url = cluster.url();
  ReportSetup t("runs=5&window_ms=1000", 19, 1, 5, 1.0);
  auto& [sandbox, schema, today, start, config, env] = t;  // `schema` only names the schema
  Process run({STSYNC_BINARY, "run", "--config", config, "--jobs", kJob}, with_env(env, {{"DATABASE_URL", url}}));
  REQUIRE(sandbox.wait_for_stat(kTenantA, "report_runs", 6));
  const bool restarted = cluster.restart();
  INFO("cluster script: " << cluster.log());
  REQUIRE(restarted);
  ProcessResult r = run.wait();
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("reconnecting") != std::string::npos);
  PgConnection db(url);
  check_days_exact(db, db.quote_ident(schema.name()), sandbox, start, today);
}

TEST_CASE("a day larger than a page is read page by page within the run limit and stored whole", "[reports]") {
  ReportSetup t("runs=5&window_ms=1000", 4, 1, 5, 1.0, "page_size = 400\n");
  auto& [sandbox, schema, today, start, config, env] = t;
  ProcessResult r = run_report(config, env);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  check_days_exact(schema, sandbox, start, today);
  // Every page is a run of the report: as many runs as pages of 400, and none past the limit.
  PgResult pages = schema.db().exec(
      fmt::format("SELECT sum((rows + 399) / 400), max(rows) FROM {}.sync_report_days", schema.name()));
  CHECK(sandbox.stat(kTenantA, "report_runs") == pages.get_int(0, 0));
  CHECK(pages.get_int(0, 1) > 400);  // at least one day took several pages
  CHECK(sandbox.stat(kTenantA, "report_throttled") == 0);
}
