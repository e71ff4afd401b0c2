// Unit tests: pure logic, no network, no database.
#include <catch2/catch.hpp>

#include "config.h"
#include "connect.h"
#include "copy_text.h"
#include "errors.h"
#include "exit_status.h"
#include "fakes.h"
#include "job_spec.h"
#include "page_parser.h"
#include "pg.h"
#include "rate_limiter.h"
#include "report_run.h"
#include "reports_view.h"
#include "table_shape.h"
#include "retry.h"
#include "scheduler.h"
#include "st_client.h"
#include "store.h"
#include "timestamp.h"

using namespace stsync;

TEST_CASE("timestamps with 0 to 7 fractional digits parse to exact ticks", "[unit][time]") {
  CHECK(parse_timestamp("2021-07-19T20:35:38Z") == 16267269380000000LL);
  CHECK(parse_timestamp("2021-07-19T20:35:38.2876004Z") == 16267269382876004LL);
  CHECK(parse_timestamp("2021-07-19T20:35:38.2Z") == 16267269382000000LL);
  CHECK(parse_timestamp("2021-07-19T20:35:38.28760049Z") == 16267269382876004LL);
  CHECK(parse_timestamp("2021-07-19") == 16266528000000000LL);
  CHECK(parse_timestamp("2021-07-19T22:35:38+02:00") == 16267269380000000LL);
  CHECK_FALSE(parse_timestamp("2021-02-30T00:00:00Z"));
  CHECK_FALSE(parse_timestamp("2021-07-19T20:35:38.Z"));
  CHECK_FALSE(parse_timestamp("yesterday"));
  CHECK_FALSE(parse_timestamp("2021-07-19T25:00:00Z"));
}

TEST_CASE("timestamps format back to RFC 3339 and to PostgreSQL microseconds", "[unit][time]") {
  const Ticks t = *parse_timestamp("2021-07-19T20:35:38.2876004Z");
  CHECK(format_timestamp(t) == "2021-07-19T20:35:38.2876004Z");
  CHECK(format_timestamp(t, 0) == "2021-07-19T20:35:38Z");
  CHECK(format_timestamp(t, 3) == "2021-07-19T20:35:38.287Z");
  // The 7th digit is truncated, never rounded up into the next microsecond.
  CHECK(format_timestamp_pg(*parse_timestamp("2021-07-19T20:35:38.9999999Z")) == "2021-07-19T20:35:38.999999+00");
  CHECK(format_timestamp(*parse_timestamp("1999-12-31T23:59:59Z") + kTicksPerSecond) == "2000-01-01T00:00:00.0000000Z");
}

TEST_CASE("HTTP dates round-trip", "[unit][time]") {
  const Ticks t = *parse_timestamp("1994-11-06T08:49:37Z");
  CHECK(format_http_date(t) == "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == t);
  CHECK_FALSE(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"));
}

TEST_CASE("COPY fields escape backslashes, tabs, newlines and carriage returns", "[unit][copy]") {
  std::string out;
  append_copy_field(out, "a\\b\tc\nd\re\\N");
  CHECK(out == "a\\\\b\\tc\\nd\\re\\\\N");
}

TEST_CASE("NUL characters become U+FFFD in text and in JSON, escaped backslashes are kept", "[unit][copy]") {
  std::string text("a\0b", 3);
  CHECK(replace_nul_in_text(text));
  CHECK(text == "a\xEF\xBF\xBD" "b");
  std::string json = R"({"a":"x\u0000y","b":"\\u0000 is text"})";
  CHECK(replace_nul_in_json(json));
  CHECK(json == R"({"a":"x\ufffdy","b":"\\u0000 is text"})");
  std::string clean = R"({"a":"\\u0000"})";
  CHECK_FALSE(replace_nul_in_json(clean));
}

TEST_CASE("JSON strings escape quotes and control characters", "[unit][copy]") {
  std::string out;
  append_json_string(out, std::string("q\"b\\n\n\x01", 7));
  CHECK(out == "\"q\\\"b\\\\n\\n\\u0001\"");
}

TEST_CASE("column names are the snake_case of the field path", "[unit][jobs]") {
  CHECK(snake_case("customer.id") == "customer_id");
  CHECK(snake_case("hourlyRate") == "hourly_rate");
  CHECK(snake_case("salesTaxCode.taxRate") == "sales_tax_code_tax_rate");
  CHECK(snake_case("id") == "id");
}

TEST_CASE("the built-in job files parse: one per catalogued resource, each naming its endpoints", "[unit][jobs]") {
  auto jobs = load_job_specs("");
  CHECK(jobs.size() == 144);
  std::map<SyncMode, int> modes;
  for (const JobSpec& j : jobs) {
    INFO(j.name);
    CHECK(j.table == j.name);
    ++modes[j.mode];
    if (j.mode == SyncMode::export_feed) CHECK(j.export_path.find("{tenant}") != std::string::npos);
    else CHECK(j.list_path.find("{tenant}") != std::string::npos);
    // A table named like another job's table would mix two resources.
    for (const ChildSpec& c : j.children)
      CHECK(std::none_of(jobs.begin(), jobs.end(), [&](const JobSpec& o) { return o.table == c.table; }));
    if (!j.parent.empty()) CHECK_FALSE(j.parent_table.empty());
  }
  CHECK(modes[SyncMode::export_feed] == 54);  // every resource with an export feed uses it
}

TEST_CASE("a job file with an unknown key or type is refused with its name", "[unit][jobs]") {
  CHECK_THROWS_WITH(parse_job_spec("name='x'\nlist_path='p'\nmode='list'\ncolums=[]\n", "x.toml"),
                    Catch::Contains("x.toml") && Catch::Contains("colums"));
  CHECK_THROWS_WITH(
      parse_job_spec("name='x'\nlist_path='p'\nmode='list'\ncolumns=[{path='a',type='money'}]\n", "x.toml"),
      Catch::Contains("unknown type 'money'"));
  CHECK_THROWS_WITH(parse_job_spec("name='x'\nlist_path='p'\ncolumns=[]\n", "x.toml"),
                    Catch::Contains("export_path"));
  CHECK_THROWS_WITH(parse_job_spec("name='x'\nlist_path='p'\nmode='list'\nraw_type='text'\ncolumns=[]\n", "x.toml"),
                    Catch::Contains("raw_type must be"));
  CHECK(parse_job_spec("name='x'\nlist_path='p'\nmode='list'\nraw_type='json'\ncolumns=[]\n", "x.toml").raw_type == "json");
  CHECK(parse_job_spec("name='x'\nlist_path='p'\nmode='list'\ncolumns=[]\n", "x.toml").raw_type == "jsonb");
}

namespace {
EnvLookup fake_env(std::map<std::string, std::string> vars) {
  return [vars](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}
}  // namespace

TEST_CASE("the environment alone configures one tenant", "[unit][config]") {
  std::vector<std::string> warnings;
  Settings s = load_settings(std::nullopt,
                             fake_env({{"ST_CLIENT_ID", "cid"},
                                       {"ST_CLIENT_SECRET", "sec"},
                                       {"ST_APP_KEY", "ak"},
                                       {"ST_TENANT_ID", "123"},
                                       {"ST_ENVIRONMENT", "integration"}}),
                             warnings);
  REQUIRE(s.tenants.size() == 1);
  CHECK(s.tenants[0].id == 123);
  CHECK(s.tenants[0].client_secret == "sec");
  CHECK(s.auth_url == "https://auth-integration.servicetitan.io");
  CHECK(s.api_url == "https://api-integration.servicetitan.io");
  CHECK(s.tls_verify);
  Settings prod = load_settings(std::nullopt, fake_env({{"ST_API_URL", "http://127.0.0.1:8400/"}}), warnings);
  CHECK(prod.auth_url == "https://auth.servicetitan.io");
  CHECK(prod.api_url == "http://127.0.0.1:8400");
}

TEST_CASE("the environment wins over the config file", "[unit][config]") {
  std::vector<std::string> warnings;
  const std::string path = "/tmp/stsync-unit-config.toml";
  {
    FILE* f = std::fopen(path.c_str(), "w");
    std::fputs("[servicetitan]\napp_key='file-key'\nrequests_per_second=5\n"
               "[[tenants]]\nid=7\nclient_id='a'\nclient_secret='b'\n"
               "[jobs.invoices]\nmode='list'\npage_size=100\n",
               f);
    std::fclose(f);
  }
  Settings s = load_settings(path, fake_env({{"ST_APP_KEY", "env-key"}, {"ST_CLIENT_SECRET", "env-secret"}}), warnings);
  CHECK(s.app_key == "env-key");
  CHECK(s.requests_per_second == 5);
  REQUIRE(s.tenants.size() == 1);
  CHECK(s.tenants[0].client_secret == "env-secret");
  auto jobs = resolve_jobs(s);
  auto inv = std::find_if(jobs.begin(), jobs.end(), [](const JobSpec& j) { return j.name == "invoices"; });
  REQUIRE(inv != jobs.end());
  CHECK(inv->mode == SyncMode::list_windows);
  CHECK(inv->page_size == 100);
}

TEST_CASE("bad configuration is one clear error", "[unit][config]") {
  std::vector<std::string> warnings;
  CHECK_THROWS_WITH(load_settings("/nonexistent/stsync.toml", fake_env({}), warnings),
                    Catch::Contains("/nonexistent/stsync.toml"));
  CHECK_THROWS_WITH(load_settings(std::nullopt, fake_env({{"ST_ENVIRONMENT", "staging"}}), warnings),
                    Catch::Contains("ST_ENVIRONMENT"));
  CHECK_THROWS_WITH(load_settings(std::nullopt, fake_env({{"STSYNC_REQUESTS_PER_SECOND", "100"}}), warnings),
                    Catch::Contains("between 0.1 and 60"));
  CHECK_THROWS_WITH(load_settings(std::nullopt, fake_env({{"ST_TENANT_ID", "abc"}}), warnings),
                    Catch::Contains("ST_TENANT_ID"));
}

TEST_CASE("numbers in the environment are whole numbers, durations are never negative, TOML types are checked",
          "[unit][config]") {
  std::vector<std::string> warnings;
  // "2m" is not 2 and not 0 (no timeout): it is an error.
  CHECK_THROWS_WITH(load_settings(std::nullopt, fake_env({{"STSYNC_TIMEOUT_SECONDS", "2m"}}), warnings),
                    Catch::Contains("STSYNC_TIMEOUT_SECONDS must be a number of seconds, not '2m'"));
  CHECK_THROWS_WITH(load_settings(std::nullopt, fake_env({{"STSYNC_PARALLEL", "2.5"}}), warnings),
                    Catch::Contains("STSYNC_PARALLEL must be a whole number"));
  CHECK_THROWS_WITH(load_settings(std::nullopt, fake_env({{"STSYNC_RETRY_BUDGET_SECONDS", "-5"}}), warnings),
                    Catch::Contains("retry_budget_seconds must not be negative"));
  CHECK_THROWS_WITH(load_settings(std::nullopt, fake_env({{"STSYNC_LOCK_TIMEOUT_SECONDS", "-1"}}), warnings),
                    Catch::Contains("lock_timeout_seconds must be 0 (no timeout) or between 0.001 and 2147483"));
  CHECK_THROWS_WITH(load_settings(std::nullopt, fake_env({{"STSYNC_MAX_RESPONSE_MB", "0"}}), warnings),
                    Catch::Contains("STSYNC_MAX_RESPONSE_MB"));
  Settings ok = load_settings(std::nullopt, fake_env({{"STSYNC_STATEMENT_TIMEOUT_SECONDS", "90"},
                                                      {"STSYNC_MAX_RESPONSE_MB", "1.5"}}),
                              warnings);
  CHECK(ok.statement_timeout_seconds == 90);
  CHECK(ok.max_response_bytes == 1572864);
  auto file_with = [](const std::string& text) {
    const std::string path = "/tmp/stsync-unit-types.toml";
    FILE* f = std::fopen(path.c_str(), "w");
    std::fputs(text.c_str(), f);
    std::fclose(f);
    return path;
  };
  CHECK_THROWS_WITH(load_settings(file_with("[jobs.invoices]\nenabled = \"no\"\n"), fake_env({}), warnings),
                    Catch::Contains("jobs.invoices.enabled must be true or false"));
  CHECK_THROWS_WITH(load_settings(file_with("[jobs.invoices]\npage_size = \"100\"\n"), fake_env({}), warnings),
                    Catch::Contains("jobs.invoices.page_size must be an integer"));
  CHECK_THROWS_WITH(load_settings(file_with("[servicetitan]\ntimeout_seconds = -3\n"), fake_env({}), warnings),
                    Catch::Contains("timeout_seconds must be at least 1"));
  CHECK_THROWS_WITH(load_settings(file_with("[database]\nlock_timeout_seconds = \"10s\"\n"), fake_env({}), warnings),
                    Catch::Contains("database.lock_timeout_seconds must be a number"));
}

TEST_CASE("PostgreSQL errors are classified by SQLSTATE in one place", "[unit][retry]") {
  CHECK(classify_sqlstate("") == ErrorKind::db_unavailable);         // no answer from the server
  CHECK(classify_sqlstate("08006") == ErrorKind::db_unavailable);    // connection failure
  CHECK(classify_sqlstate("57P01") == ErrorKind::db_unavailable);    // admin shutdown
  CHECK(classify_sqlstate("40001") == ErrorKind::db_conflict);       // serialization failure
  CHECK(classify_sqlstate("40P01") == ErrorKind::db_conflict);       // deadlock
  CHECK(classify_sqlstate("53100") == ErrorKind::db_fault);          // disk full
  CHECK(classify_sqlstate("53200") == ErrorKind::db_fault);          // out of memory
  CHECK(classify_sqlstate("57014") == ErrorKind::db_fault);          // statement timeout
  CHECK(classify_sqlstate("55P03") == ErrorKind::db_fault);          // lock timeout
  CHECK(classify_sqlstate("22P02") == ErrorKind::db_value);          // invalid text representation
  CHECK(classify_sqlstate("22003") == ErrorKind::db_value);          // numeric out of range
  CHECK(classify_sqlstate("22008") == ErrorKind::db_value);          // datetime out of range
  CHECK(classify_sqlstate("42P01") == ErrorKind::db);                // undefined table: a defect
  CHECK(Error(ErrorKind::db_conflict, "x").retryable());
  CHECK_FALSE(Error(ErrorKind::db_fault, "x").retryable());
  CHECK_FALSE(Error(ErrorKind::db_value, "x").retryable());
  CHECK_FALSE(Error(ErrorKind::interrupted, "x").retryable());
}

TEST_CASE("a page is checked for depth and its raw control characters are escaped before parsing", "[unit][parser]") {
  std::string ok = R"({"data":[{"id":1,"a":[[1]],"s":"tab\tand [brackets] in a string"}]})";
  const std::string before = ok;
  CHECK(prepare_page(ok, 5) == 0);
  CHECK(ok == before);
  std::string deep = R"({"data":[{"id":1,"a":[[[[[1]]]]]}]})";
  CHECK_THROWS_WITH(prepare_page(deep, 6), Catch::Contains("nests JSON 8 levels deep"));
  std::string bell = "{\"data\":[{\"id\":1,\"s\":\"a\x07" "b\\\"\x1f\"}]}";
  CHECK(prepare_page(bell, 64) == 2);
  CHECK(bell == R"({"data":[{"id":1,"s":"a\u0007b\"\u001f"}]})");
  CHECK(bell.capacity() >= bell.size() + simdjson::SIMDJSON_PADDING);
}

TEST_CASE("a page's records are found by one scan, and anything unexpected falls back to the whole-page parse",
          "[unit][parser]") {
  std::string page = R"({"hasMore":true,"data":[ {"id":1,"s":"}]\"data\"["} , {"id":2,"a":[{"b":1}]} ],"continueFrom":"x"})";
  PageLayout layout;
  prepare_page(page, 64, &layout);
  REQUIRE(layout.found);
  REQUIRE(layout.records.size() == 2);
  CHECK(page.substr(layout.records[0].first, layout.records[0].second - layout.records[0].first) ==
        R"({"id":1,"s":"}]\"data\"["})");
  CHECK(page.substr(layout.records[1].first, layout.records[1].second - layout.records[1].first) ==
        R"({"id":2,"a":[{"b":1}]})");
  for (std::string odd : {std::string(R"({"data":[{"id":1},,{"id":2}]})"), std::string(R"({"data":[{"id":1},]})"),
                          std::string(R"({"data":[{"id":1},7]})"), std::string(R"({"data":[{"id":1}{"id":2}]})"),
                          std::string(R"({"data":{"id":1}})"), std::string(R"({"data":[{"id":1})")}) {
    PageLayout l;
    prepare_page(odd, 64, &l);
    INFO(odd);
    CHECK_FALSE(l.found);
  }
  // Offsets hold after control characters were escaped in front of a record.
  std::string bell = "{\"note\":\"a\x01\",\"data\":[{\"id\":1,\"s\":\"\x02\"}]}";
  PageLayout l;
  prepare_page(bell, 64, &l);
  REQUIRE(l.records.size() == 1);
  CHECK(bell.substr(l.records[0].first, l.records[0].second - l.records[0].first) == R"({"id":1,"s":"\u0002"})");
  // Parsed record by record, the rows are those of the page.
  JobSpec spec = parse_job_spec("name='t'\nlist_path='x'\nmode='list'\ncolumns=[{path='s',type='text'}]\n", "t.toml");
  PageParser parser(spec);
  ParsedPage by_record;
  std::string a = R"({"data":[{"id":1,"s":"x"},{"id":2,"s":"y\ty"}],"hasMore":true,"continueFrom":"t"})";
  parser.parse(a, 5, by_record);
  CHECK(by_record.records == 2);
  CHECK(by_record.has_more);
  CHECK(by_record.continue_from == "t");
  CHECK(by_record.ids == std::vector<std::string>{"1", "2"});
  CHECK(by_record.copy_rows.find("y\\ty") != std::string::npos);
}

TEST_CASE("the word-at-a-time scans find every byte they must, at every position", "[unit][copy][parser]") {
  // Each special byte at each offset of strings long enough to cross several 8-byte words.
  const std::string filler = "abcdefghijklmnopqrstuvwxyz0123456789\xc3\xa9\xe2\x82\xac";
  for (char special : {'\\', '\n', '\r', '\t', '\x01', '\x0b', '\x1f', '"'})
    for (size_t pos = 0; pos < 40; ++pos) {
      std::string value = filler;
      value.insert(pos, 1, special);
      std::string field;
      append_copy_field(field, value);
      INFO("byte " << static_cast<int>(special) << " at " << pos);
      CHECK(copy_field_unescape(field) == value);
      CHECK(field.find_first_of("\n\r\t") == std::string::npos);
      if (special == '"') continue;  // a string's end: not a control character
      std::string body = "{\"data\":[{\"id\":1,\"s\":\"" + value + "\"}]}";
      if (special == '\\') body.insert(body.find(value) + pos + 1, 1, 'n');  // a valid escape
      PageLayout layout;
      const int escaped = prepare_page(body, 64, &layout);
      CHECK(escaped == (static_cast<unsigned char>(special) < 0x20 ? 1 : 0));
      CHECK(layout.records.size() == 1);
      for (char c : body) CHECK(static_cast<unsigned char>(c) >= 0x20);
    }
  CHECK(word_has_byte(load_word("abcdefg\\"), '\\'));
  CHECK_FALSE(word_has_byte(load_word("abcdefgh"), '\\'));
  CHECK(word_has_byte_below(load_word("abc\tefgh"), 14));
  CHECK_FALSE(word_has_byte_below(load_word("abc\xc3\xa9" "fgh"), 14));
}

TEST_CASE("COPY fields unescape back to their values", "[unit][copy]") {
  for (std::string v : {"plain", "tab\there", "back\\slash\\n", "line\nbreak\r", ""}) {
    std::string field;
    append_copy_field(field, v);
    CHECK(copy_field_unescape(field) == v);
  }
  CHECK(copy_row_field("1\t2\tthree\\tfour\t\\N", 2) == "three\tfour");
}

TEST_CASE("only server-side conditions are retryable", "[unit][retry]") {
  for (long s : {408L, 409L, 429L, 500L, 502L, 503L, 504L})
    CHECK(Error(classify_http_status(s), "x").retryable());
  for (long s : {400L, 401L, 403L, 404L, 422L})
    CHECK_FALSE(Error(classify_http_status(s), "x").retryable());
  CHECK(Error(ErrorKind::network, "x").retryable());
  CHECK(Error(ErrorKind::db_unavailable, "x").retryable());
  CHECK_FALSE(Error(ErrorKind::bad_data, "x").retryable());
  CHECK_FALSE(Error(ErrorKind::auth_rejected, "x").retryable());
}

TEST_CASE("Retry-After is read in seconds and as an HTTP date against the server's clock", "[unit][retry]") {
  CHECK(parse_retry_after("3", std::nullopt, 0) == 3.0);
  const std::string date = "Sun, 06 Nov 1994 08:49:37 GMT";
  CHECK(parse_retry_after("Sun, 06 Nov 1994 08:49:39 GMT", date, 0) == Approx(2.0));
  CHECK(parse_retry_after("soon", std::nullopt, 0) == std::nullopt);
}

TEST_CASE("backoff grows exponentially, is capped, and never undercuts Retry-After", "[unit][retry]") {
  RetryPolicy p;
  p.base_seconds = 1;
  p.max_backoff_seconds = 10;
  CHECK(backoff_seconds(p, 2, std::nullopt, 0.999) == Approx(0.999));
  CHECK(backoff_seconds(p, 4, std::nullopt, 0.5) == Approx(2.0));
  CHECK(backoff_seconds(p, 20, std::nullopt, 0.999) == Approx(9.99));
  CHECK(backoff_seconds(p, 2, 5.0, 0.1) == Approx(5.0));
  RetryBudget budget(3);
  CHECK(budget.take(2));
  CHECK_FALSE(budget.take(2));
  CHECK(budget.remaining() == Approx(1));
}

using stsync::test::FakeClock;

TEST_CASE("the rate limiter never lets more than N requests into any one-second window", "[unit][rate]") {
  FakeClock clock;
  RateLimiter limiter(10, clock);
  std::vector<double> times;
  for (int i = 0; i < 45; ++i) {
    limiter.acquire();
    times.push_back(clock.now);
  }
  for (size_t i = 0; i < times.size(); ++i) {
    size_t in_window = 0;
    for (size_t j = i; j < times.size() && times[j] < times[i] + 1.0; ++j) ++in_window;
    CHECK(in_window <= 10);
  }
  CHECK(clock.slept >= 4.0);
}

TEST_CASE("a page parses to exact COPY rows: big ids, 20-digit decimals, nulls, NULs", "[unit][parser]") {
  JobSpec spec = parse_job_spec(R"(
name = "things"
list_path = "x/v2/tenant/{tenant}/things"
mode = "list"
columns = [
  { path = "amount", type = "numeric" },
  { path = "customer.id", type = "bigint" },
  { path = "note", type = "text" },
  { path = "items", type = "jsonb" },
  { path = "when", type = "timestamptz" },
]
)", "things.toml");
  PageParser parser(spec);
  std::string body = R"({"page":1,"hasMore":true,"continueFrom":"tok","totalCount":2,"data":[
{"id":9007199254740993,"amount":12345678.901234567891,"customer":{"id":5,"name":"x"},"note":"tab\there\u0000","items":null,"when":"2021-07-19T20:35:38.2876004Z","modifiedOn":"2021-07-19T20:35:38.2876004Z","active":false},
{"id":2,"amount":"0.10","customer":null,"items":[{"a":1}],"modifiedOn":null}
]})";
  ParsedPage page;
  parser.parse(body, 77, page);
  CHECK(page.has_more);
  CHECK(page.continue_from == "tok");
  CHECK(page.total_count == 2);
  REQUIRE(page.records == 2);
  CHECK(page.ids == std::vector<std::string>{"9007199254740993", "2"});
  CHECK(page.max_modified == parse_timestamp("2021-07-19T20:35:38.2876004Z"));
  CHECK(page.nul_replaced == 2);  // the note column and the raw document
  const std::string first = page.copy_rows.substr(0, page.copy_rows.find('\n'));
  CHECK(first.rfind("77\t9007199254740993\t12345678.901234567891\t5\ttab\\there\xEF\xBF\xBD\t\\N\t"
                    "2021-07-19T20:35:38.287600+00\t2021-07-19T20:35:38.287600+00\tf\t{",
                    0) == 0);
  CHECK(first.find("\\\\u0000") == std::string::npos);
  CHECK(first.find("\\\\ufffd") != std::string::npos);
  const std::string second = page.copy_rows.substr(first.size() + 1);
  CHECK(second.rfind("77\t2\t0.10\t\\N\t\\N\t[{\"a\":1}]\t\\N\t\\N\tt\t", 0) == 0);
}

TEST_CASE("a bad record is named by position, id and field", "[unit][parser]") {
  JobSpec spec = parse_job_spec(
      "name='t'\nlist_path='p'\nmode='list'\ncolumns=[{path='n',type='integer'},{path='d',type='timestamptz'}]\n", "t.toml");
  PageParser parser(spec);
  ParsedPage page;
  auto parse = [&](std::string body) { parser.parse(body, 1, page); };
  CHECK_THROWS_WITH(parse(R"({"data":[{"id":1},{"n":2}]})"), Catch::Contains("record #2") && Catch::Contains("no 'id'"));
  CHECK_THROWS_WITH(parse(R"({"data":[{"id":5,"n":"x"}]})"), Catch::Contains("id 5") && Catch::Contains("'n'"));
  CHECK_THROWS_WITH(parse(R"({"data":[{"id":5,"n":3000000000}]})"), Catch::Contains("too large"));
  CHECK_THROWS_WITH(parse(R"({"data":[{"id":6,"d":"not a date"}]})"), Catch::Contains("id 6") && Catch::Contains("not a date"));
  CHECK_THROWS_WITH(parse(R"({"hasMore":false})"), Catch::Contains("no 'data'"));
  CHECK_THROWS_WITH(parse("<html>oops</html>"), Catch::Contains("not"));
  CHECK_THROWS_WITH(parse(R"({"data":[{"id":1.5}]})"), Catch::Contains("not a 64-bit integer"));
  CHECK_THROWS_AS(parse(R"({"data":[{"id":1,"n":)"), Error);
}

TEST_CASE("error responses are described with title, errors and traceId", "[unit][client]") {
  HttpResponse r;
  r.status = 400;
  r.content_type = "application/problem+json";
  r.body = R"({"type":"x","title":"One or more validation errors occurred.","status":400,"traceId":"00-abc-01","errors":{"pageSize":["too big"]}})";
  const std::string d = describe_error_response(r);
  CHECK(d.find("HTTP 400") != std::string::npos);
  CHECK(d.find("validation errors") != std::string::npos);
  CHECK(d.find("pageSize: too big") != std::string::npos);
  CHECK(d.find("traceId 00-abc-01") != std::string::npos);
  r.status = 502;
  r.content_type = "text/html";
  r.body = "<html><head><title>502 Bad Gateway</title></head></html>";
  CHECK(describe_error_response(r) == "HTTP 502 (an HTML page: 502 Bad Gateway)");
}

TEST_CASE("exit codes follow the worst failure class", "[unit][exit]") {
  auto result = [](JobOutcome o, std::optional<ErrorKind> k) {
    JobResult r;
    r.outcome = o;
    r.error_kind = k;
    return r;
  };
  CHECK(exit_code_for({result(JobOutcome::succeeded, {}), result(JobOutcome::skipped, {})}) == kExitSuccess);
  CHECK(exit_code_for({result(JobOutcome::failed, ErrorKind::bad_data)}) == kExitJobFailed);
  CHECK(exit_code_for({result(JobOutcome::failed, ErrorKind::network), result(JobOutcome::failed, ErrorKind::db_unavailable)}) == kExitDatabase);
  CHECK(exit_code_for({result(JobOutcome::failed, ErrorKind::bad_data), result(JobOutcome::failed, ErrorKind::auth_rejected)}) == kExitAuthRejected);
  // The pooler check (a page's transaction on another server session) fails its job as a
  // configuration error: the run exits 2, whatever else failed.
  CHECK(exit_code_for({result(JobOutcome::failed, ErrorKind::db_unavailable), result(JobOutcome::failed, ErrorKind::config)}) == kExitUsage);
  CHECK(exit_code_for({result(JobOutcome::interrupted, ErrorKind::interrupted), result(JobOutcome::not_permitted, {})}) == kExitSuccess);
}

namespace {
// The HTTP seam: scripted responses, and a record of what was asked.
class ScriptedTransport final : public HttpTransport {
 public:
  std::vector<HttpResponse> script;
  std::vector<HttpRequest> seen;
  HttpResponse perform(const HttpRequest& request) override {
    seen.push_back(request);
    if (seen.size() > script.size()) throw Error(ErrorKind::network, "script exhausted");
    HttpResponse r = script[seen.size() - 1];
    if (r.status == 0) throw Error(ErrorKind::network, "connection reset by peer");
    return r;
  }
};

HttpResponse respond(long status, std::string body = "{}", std::optional<std::string> retry_after = {}) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  r.content_type = "application/json";
  r.retry_after = std::move(retry_after);
  return r;
}

HttpResponse token_response(const std::string& token) {
  return respond(200, R"({"access_token":")" + token + R"(","expires_in":900,"token_type":"Bearer"})");
}

struct ClientFixture {
  Settings settings;
  FakeClock clock;
  ScriptedTransport transport;
  TenantSession session{TenantConfig{7, "cid", "csecret"}, 60, clock};
  RetryBudget budget{100};
  ClientFixture() {
    settings.api_url = "http://api";
    settings.auth_url = "http://auth";
    settings.app_key = "ak";
    settings.max_attempts = 4;
    settings.max_backoff_seconds = 10;
  }
  ServiceTitanClient client() { return ServiceTitanClient(settings, session, transport, clock, budget); }
};
}  // namespace

TEST_CASE("the client retries 5xx, resets and 429, honouring Retry-After, without real sleeping", "[unit][client]") {
  ClientFixture f;
  f.transport.script = {token_response("tok1"), respond(503), respond(0), respond(429, "{}", "5"), respond(200, R"({"data":[]})")};
  auto client = f.client();
  HttpResponse r = client.get("x/v2/tenant/7/things", "job things");
  CHECK(r.status == 200);
  REQUIRE(f.transport.seen.size() == 5);
  CHECK(f.transport.seen[0].url == "http://auth/connect/token");
  CHECK(f.transport.seen[0].body.find("client_secret=csecret") != std::string::npos);
  const auto& h = f.transport.seen[4].headers;
  CHECK(std::find(h.begin(), h.end(), "Authorization: Bearer tok1") != h.end());
  CHECK(std::find(h.begin(), h.end(), "ST-App-Key: ak") != h.end());
  CHECK(f.clock.slept >= 5.0);   // the 429's Retry-After
  CHECK(f.clock.slept < 5.0 + 0.5 + 1.0 + 0.01);  // plus two jittered backoffs at most
}

TEST_CASE("a 401 refreshes the token once and retries the same request once", "[unit][client]") {
  ClientFixture f;
  f.transport.script = {token_response("old"), respond(401, ""), token_response("new"), respond(200, R"({"data":[]})")};
  auto client = f.client();
  CHECK(client.get("p", "job").status == 200);
  REQUIRE(f.transport.seen.size() == 4);
  const auto& h = f.transport.seen[3].headers;
  CHECK(std::find(h.begin(), h.end(), "Authorization: Bearer new") != h.end());
  ClientFixture g;
  g.transport.script = {token_response("a"), respond(401, ""), token_response("b"), respond(401, "")};
  auto client2 = g.client();
  CHECK_THROWS_WITH(client2.get("p", "job"), Catch::Contains("even with a fresh token"));
}

TEST_CASE("permanent errors are not retried and rejected credentials are their own kind", "[unit][client]") {
  ClientFixture f;
  f.transport.script = {token_response("t"), respond(404, R"({"title":"Not Found","status":404,"traceId":"00-x"})")};
  auto client = f.client();
  try {
    client.get("p", "job things page 1");
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::http_permanent);
    CHECK(e.http_status() == 404);
    CHECK(std::string(e.what()).find("job things page 1: HTTP 404: Not Found (traceId 00-x)") != std::string::npos);
  }
  CHECK(f.transport.seen.size() == 2);
  ClientFixture g;
  g.transport.script = {respond(400, R"({"error":"invalid_client"})")};
  auto client2 = g.client();
  try {
    client2.get("p", "job");
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::auth_rejected);
    CHECK(std::string(e.what()).find("csecret") == std::string::npos);
  }
}

TEST_CASE("attempts per request and the job's retry budget both bound the retrying", "[unit][client]") {
  ClientFixture f;
  f.transport.script = {token_response("t"), respond(503), respond(503), respond(503), respond(503), respond(200)};
  auto client = f.client();
  CHECK_THROWS_WITH(client.get("p", "job"), Catch::Contains("gave up after 4 attempts"));
  ClientFixture g;
  g.budget = RetryBudget(3);
  g.transport.script = {token_response("t"), respond(429, "{}", "2"), respond(429, "{}", "2"), respond(200)};
  auto client2 = g.client();
  CHECK_THROWS_WITH(client2.get("p", "job"), Catch::Contains("retry budget"));
  CHECK(g.clock.slept == Approx(2.0));
}

TEST_CASE("PostgreSQL array text round-trips keys with quotes, commas, backslashes and braces", "[unit][store]") {
  const std::vector<std::string> keys = {"1", "a,b", "say \"hi\"", "back\\slash", "{x}", "", "NULL", "ü"};
  CHECK(parse_pg_array(pg_array_literal(keys)) == keys);
  CHECK(parse_pg_array("{3,-1,9007199254740993}") == std::vector<std::string>{"3", "-1", "9007199254740993"});
  CHECK(parse_pg_array("{}").empty());
  CHECK(parse_pg_array(R"({abc,"d e","f\"g"})") == std::vector<std::string>{"abc", "d e", "f\"g"});
}

TEST_CASE("durations in job files are 90s, 15m, 6h, 7d or seconds, and nothing else", "[unit][jobs]") {
  CHECK(parse_duration("90s") == 90);
  CHECK(parse_duration("15m") == 900);
  CHECK(parse_duration("6h") == 21600);
  CHECK(parse_duration("7d") == 604800);
  CHECK(parse_duration("120") == 120);
  for (const char* bad : {"", "m", "-5m", "1.5h", "2w", "5 m", "9999999d"}) {
    INFO(bad);
    CHECK_FALSE(parse_duration(bad));
  }
}

TEST_CASE("keys: a GUID id, a key field, several fields and positions become the row's text key", "[unit][parser]") {
  auto keys_of = [](const std::string& job_toml, std::string body, const std::string& parent = "", int base = 0) {
    JobSpec spec = parse_job_spec(job_toml, "k.toml");
    PageParser parser(spec);
    parser.set_listing(parent, base);
    ParsedPage page;
    body.reserve(body.size() + simdjson::SIMDJSON_PADDING);
    parser.parse(body, 1, page);
    return page.ids;
  };
  const std::string guid = "name='g'\nlist_path='p'\nmode='list'\nkey_type='text'\ncolumns=[]\n";
  CHECK(keys_of(guid, R"({"data":[{"id":"6f1c0a2e-8b3d-4c1e-9f00-1a2b3c4d5e6f"},{"id":42}]})") ==
        std::vector<std::string>{"6f1c0a2e-8b3d-4c1e-9f00-1a2b3c4d5e6f", "42"});
  const std::string field =
      "name='f'\nlist_path='p'\nmode='list'\nkey=['employeeId']\ncolumns=[{path='employeeId',type='bigint'}]\n";
  CHECK(keys_of(field, R"({"data":[{"employeeId":7,"x":1}]})") == std::vector<std::string>{"7"});
  CHECK_THROWS_WITH(keys_of(field, R"({"data":[{"x":1}]})"), Catch::Contains("has no 'employeeId'"));
  const std::string pair = "name='c'\nlist_path='p'\nmode='list'\nkey=['technicianId','jobId']\nkey_type='text'\n"
                           "columns=[{path='technicianId',type='bigint'},{path='jobId',type='bigint'}]\n";
  CHECK(keys_of(pair, R"({"data":[{"jobId":2,"technicianId":1}]})") == std::vector<std::string>{R"(["1","2"])"});
  const std::string none = "name='n'\nlist_path='p/{parent}/x'\nmode='full'\nparent='j'\nkey=[]\nkey_type='text'\ncolumns=[]\n";
  CHECK(keys_of(none, R"({"data":[{"a":1},{"a":2}]})", "abc", 5) == std::vector<std::string>{"abc/5", "abc/6"});
  const std::string object = "name='o'\nlist_path='p'\nmode='full'\nresponse='object'\nkey=[]\nkey_type='text'\ncolumns=[]\n";
  CHECK(keys_of(object, R"({"weekdays":[]})") == std::vector<std::string>{"0"});
}

TEST_CASE("job files refuse keys, parents and shapes that cannot work", "[unit][jobs]") {
  auto err = [](const std::string& text) {
    try {
      parse_job_spec(text, "bad.toml");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CHECK_THAT(err("name='x'\nlist_path='p'\nmode='list'\nkey=['a','b']\ncolumns=[{path='a'},{path='b'}]\n"),
             Catch::Contains("key_type = \"text\""));
  CHECK_THAT(err("name='x'\nlist_path='p'\nmode='list'\nkey=['a']\ncolumns=[]\n"),
             Catch::Contains("key field 'a' must also be a typed column"));
  CHECK_THAT(err("name='x'\nlist_path='p/{parent}'\nmode='list'\nparent='y'\ncolumns=[]\n"),
             Catch::Contains("mode must be \"full\""));
  CHECK_THAT(err("name='x'\nlist_path='p'\nmode='full'\nparent='y'\ncolumns=[]\n"), Catch::Contains("{parent}"));
  CHECK_THAT(err("name='x'\nlist_path='p'\nmode='list'\nresponse='object'\ncolumns=[]\n"),
             Catch::Contains("only be read whole"));
  CHECK_THAT(err("name='x'\nlist_path='p'\nmode='list'\nevery='soon'\ncolumns=[]\n"), Catch::Contains("'every'"));
  CHECK_THAT(err("name='x'\nlist_path='p'\nmode='list'\ncolumns=[{path='deletedAt',name='deleted_at'}]\n"),
             Catch::Contains("reserved"));
  CHECK(err("name='x'\nlist_path='p'\nmode='created'\ncreated_field='submittedOn'\n"
            "created_params=['submittedOnOrAfter','submittedBefore']\ncolumns=[]\n") == "accepted");
}

TEST_CASE("settings at the edges of their real ranges are refused with the range", "[unit][config]") {
  std::vector<std::string> warnings;
  // 2,147,484 s overflows PostgreSQL's milliseconds; 0.0001 s would round to "no timeout".
  CHECK_THROWS_WITH(load_settings(std::nullopt, fake_env({{"STSYNC_STATEMENT_TIMEOUT_SECONDS", "2147484"}}), warnings),
                    Catch::Contains("between 0.001 and 2147483 seconds"));
  CHECK_THROWS_WITH(load_settings(std::nullopt, fake_env({{"STSYNC_LOCK_TIMEOUT_SECONDS", "0.0001"}}), warnings),
                    Catch::Contains("between 0.001 and 2147483 seconds"));
  CHECK_THROWS_WITH(load_settings(std::nullopt, fake_env({{"STSYNC_REQUESTS_PER_SECOND", "1e-7"}}), warnings),
                    Catch::Contains("between 0.1 and 60"));
  CHECK_THROWS_WITH(load_settings(std::nullopt, fake_env({{"STSYNC_MAX_CLOCK_SKEW_SECONDS", "0"}}), warnings),
                    Catch::Contains("max_clock_skew_seconds must be between 1 and"));
  CHECK_THROWS_WITH(load_settings(std::nullopt, fake_env({{"STSYNC_MAX_RESPONSE_MB", "5000"}}), warnings),
                    Catch::Contains("between 0.01 and 4096"));
  Settings edge = load_settings(std::nullopt, fake_env({{"STSYNC_STATEMENT_TIMEOUT_SECONDS", "2147483"},
                                                        {"STSYNC_LOCK_TIMEOUT_SECONDS", "0.001"}}),
                                warnings);
  CHECK(session_options(edge).statement_timeout_ms == 2147483000);
  CHECK(session_options(edge).lock_timeout_ms == 1);
  CHECK(load_settings(std::nullopt, fake_env({}), warnings).max_clock_skew_seconds == 300);
}

TEST_CASE("a report job reads from its start date then from where it got to less the lookback through today",
          "[unit][reports]") {
  ReportSpec r;
  r.start_date = "2026-11-01";
  r.lookback_days = 3;
  const std::vector<std::string> first = report_days(r, std::nullopt, "2026-11-05", false);
  CHECK(first == std::vector<std::string>{"2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"});
  // complete through the 20th (every day before it read once it was over): the 17th to today.
  CHECK(report_days(r, "2026-11-20", "2026-11-21", false) ==
        std::vector<std::string>{"2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20", "2026-11-21"});
  CHECK(report_days(r, "2026-11-02", "2026-11-03", false).front() == "2026-11-01");  // never before the start
  CHECK(report_days(r, "2026-11-20", "2026-11-21", true).front() == "2026-11-01");   // a full refresh: all
  CHECK(report_days(r, std::nullopt, "2026-10-30", false).empty());                   // a start in the future
  // A day counts as complete once it is over everywhere: never past yesterday (UTC).
  CHECK(complete_through_after("2026-11-03", "2026-11-21") == "2026-11-04");
  CHECK(complete_through_after("2026-11-20", "2026-11-21") == "2026-11-20");
  CHECK(complete_through_after("2026-11-21", "2026-11-21") == "2026-11-20");
  CHECK(complete_through_after("2026-12-31", "2027-01-02") == "2027-01-01");
}

TEST_CASE("a report's field changes are named one by one and its fields become plain column names",
          "[unit][reports]") {
  CHECK(field_changes("A:String;B:Number", "A:String;B:Number").empty());
  CHECK(field_changes("A:String;B:Number;C:Boolean", "A:String;B:String;D:Date") ==
        std::vector<std::string>{"field B changed from Number to String: its column holds text from now on",
                                 "field D (Date) added: a new column",
                                 "field C removed: its column stays, empty (NULL) from now on"});
  CHECK(fields_signature({{"Revenue", "Revenue", "Number"}, {"Name", "Name", "String"}}) == "Revenue:Number;Name:String");
  CHECK(report_column_name("CompletedJobs") == "completed_jobs");
  CHECK(report_column_name("Revenue ($)") == "revenue");
  CHECK(report_column_name("Order") == "order_value");       // a reserved keyword
  CHECK(report_column_name("Position") == "position_value");  // one of stsync's own columns
  CHECK(report_column_name("2ndVisit") == "field_2nd_visit");
  CHECK(report_column_type("Number") == "numeric");
  CHECK(report_column_type("Boolean") == "boolean");
  CHECK(report_column_type("Date") == "date");
  CHECK(report_column_type("String") == "text");
  CHECK(report_column_type("Time") == "text");
  CHECK(report_column_type("Currency?") == "text");
}

TEST_CASE("a report job's declaration is checked key by key with a message that says what to write",
          "[unit][reports][config]") {
  const std::string base = "name='tech'\ncategory='technician'\nreport_id=2001\nstart_date='2026-11-01'\n";
  const JobSpec ok = parse_job_spec(base + "from_parameter='From'\nto_parameter='To'\nlookback_days=5\nevery='6h'\n"
                                           "tenants=[1001]\n[parameters]\nIncludeInactive=true\nIds=[1,2]\nName='a\"b'\n",
                                    "tech.toml");
  REQUIRE(ok.report);
  CHECK(ok.table == "report_tech");
  CHECK(ok.report->id == 2001);
  CHECK(ok.report->lookback_days == 5);
  CHECK(ok.every_seconds == 6 * 3600);
  CHECK(ok.only_tenants == std::vector<std::int64_t>{1001});
  CHECK(ok.report->parameters ==
        std::vector<std::pair<std::string, std::string>>{{"Ids", "[1,2]"}, {"IncludeInactive", "true"}, {"Name", "\"a\\\"b\""}});
  CHECK_THROWS_WITH(parse_job_spec(base, "tech.toml"), Catch::Contains("either date_parameter"));
  CHECK_THROWS_WITH(parse_job_spec(base + "date_parameter='D'\nfrom_parameter='From'\nto_parameter='To'\n", "t.toml"),
                    Catch::Contains("either date_parameter"));
  CHECK_THROWS_WITH(parse_job_spec(base + "from_parameter='From'\n", "t.toml"), Catch::Contains("either date_parameter"));
  CHECK_THROWS_WITH(parse_job_spec(base + "date_parameter='D'\nlookbak_days=2\n", "t.toml"),
                    Catch::Contains("unknown key 'lookbak_days'"));
  CHECK_THROWS_WITH(parse_job_spec("name='t'\ncategory='c'\nreport_id=1\nstart_date='11/01/2026'\ndate_parameter='D'\n",
                                   "t.toml"),
                    Catch::Contains("must be a date, YYYY-MM-DD"));
  CHECK_THROWS_WITH(parse_job_spec(base + "date_parameter='D'\n[parameters]\nD='2026-01-01'\n", "t.toml"),
                    Catch::Contains("the date stsync fills in"));
  CHECK_THROWS_WITH(parse_job_spec("name='Tech Jobs'\ncategory='c'\nreport_id=1\nstart_date='2026-11-01'\n"
                                   "date_parameter='D'\n",
                                   "t.toml"),
                    Catch::Contains("lower case letters"));
}

TEST_CASE("reports describe suggests a report job that parses, with the report's dates as the days stsync fills",
          "[unit][reports]") {
  ReportDescription d;
  d.id = 2001;
  d.name = "Technician performance";
  d.parameters = {{"From", "From", "Date", true, false},
                  {"To", "To", "Date", true, false},
                  {"IncludeInactive", "Include inactive", "Boolean", false, false},
                  {"BusinessUnitIds", "Business units", "Number", true, true}};
  const std::string job = suggest_report_job("technician", d, "2026-11-01");
  CHECK(job.find("from_parameter = \"From\"\nto_parameter = \"To\"\n") != std::string::npos);
  CHECK(job.find("# IncludeInactive = false") != std::string::npos);  // optional: commented out
  CHECK(job.find("\nBusinessUnitIds = [0]   # Number list, required: set it") != std::string::npos);
  // As a job file (the same keys), it parses.
  std::string as_file = job.substr(job.find('\n') + 1);
  as_file.replace(as_file.find("[reports.parameters]"), 20, "[parameters]");
  const JobSpec spec = parse_job_spec(as_file, "suggested.toml");
  REQUIRE(spec.report);
  CHECK(spec.name == "technician_performance");
  CHECK(spec.report->from_parameter == "From");
  CHECK(spec.report->parameters == std::vector<std::pair<std::string, std::string>>{{"BusinessUnitIds", "[0]"}});
  d.parameters = {{"Date", "Day", "Date", true, false}};
  CHECK(suggest_report_job("operations", d, "2026-11-01").find("date_parameter = \"Date\"\n") != std::string::npos);
  d.parameters = {{"Created", "Created", "Date", true, false}, {"Completed", "Completed", "Date", true, false}};
  const std::string unclear = suggest_report_job("operations", d, "2026-11-01");
  CHECK(unclear.find("# date_parameter") != std::string::npos);
  CHECK(unclear.find("do not say which opens the range") != std::string::npos);
}
