// The sandbox's own tests: every documented behaviour, checked over real HTTP.
#include <httplib.h>
#include <simdjson.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fmt/format.h>
#include <set>

#include "http.h"
#include "job_spec.h"
#include "sandbox/contract.h"
#include "support.h"
#include "timestamp.h"

using namespace stsync;
using namespace stsync::test;
using stsync::sandbox::sandbox_client_id;
using stsync::sandbox::sandbox_client_secret;

namespace {

struct Api {
  explicit Api(TestSandbox& s) : sandbox(s), http("127.0.0.1", s.port()) {}
  TestSandbox& sandbox;
  httplib::Client http;

  std::string token(std::int64_t tenant) {
    auto r = http.Post("/connect/token",
                       fmt::format("grant_type=client_credentials&client_id={}&client_secret={}",
                                   sandbox_client_id(tenant), sandbox_client_secret(tenant)),
                       "application/x-www-form-urlencoded");
    REQUIRE(r);
    REQUIRE(r->status == 200);
    simdjson::dom::parser p;
    return std::string(p.parse(r->body)["access_token"].get_string().value());
  }
  httplib::Result get(const std::string& path, const std::string& token,
                      const std::string& app_key = "sandbox-app-key", bool bearer = true) {
    httplib::Headers h = {{"ST-App-Key", app_key}, {"Authorization", bearer ? "Bearer " + token : token}};
    if (app_key.empty()) h.erase("ST-App-Key");
    return http.Get(path.c_str(), h);
  }
  httplib::Result post(const std::string& path, const std::string& token, const std::string& body) {
    httplib::Headers h = {{"ST-App-Key", "sandbox-app-key"}, {"Authorization", "Bearer " + token}};
    return http.Post(path.c_str(), h, body, "application/json");
  }
};

std::string inv(std::int64_t tenant, const std::string& query = "") {
  return fmt::format("/accounting/v2/tenant/{}/invoices{}", tenant, query);
}
std::string inv_export(std::int64_t tenant, const std::string& query = "") {
  return fmt::format("/accounting/v2/tenant/{}/export/invoices{}", tenant, query);
}

struct Page {
  bool has_more = false;
  std::string continue_from;
  std::int64_t total = -1;
  std::vector<std::int64_t> ids;
  std::vector<std::string> modified;  // "" for null
  std::vector<bool> active;
};

Page parse_page(const std::string& body) {
  simdjson::dom::parser p;
  simdjson::dom::element doc = p.parse(body);
  Page page;
  page.has_more = doc["hasMore"].get_bool().value();
  std::string_view cf;
  if (doc["continueFrom"].get_string().get(cf) == simdjson::SUCCESS) page.continue_from = cf;
  std::int64_t total;
  if (doc["totalCount"].get_int64().get(total) == simdjson::SUCCESS) page.total = total;
  for (simdjson::dom::element rec : doc["data"].get_array()) {
    page.ids.push_back(rec["id"].get_int64().value());
    std::string_view m;
    page.modified.emplace_back(rec["modifiedOn"].get_string().get(m) == simdjson::SUCCESS ? std::string(m) : "");
    page.active.push_back(rec["active"].get_bool().value());
  }
  return page;
}

std::vector<Page> walk_export(Api& api, const std::string& token, std::int64_t tenant,
                              const std::string& first_query = "?includeRecentChanges=false") {
  std::vector<Page> pages;
  std::string query = first_query;
  for (int i = 0; i < 1000; ++i) {
    auto r = api.get(inv_export(tenant, query), token);
    REQUIRE(r);
    REQUIRE(r->status == 200);
    pages.push_back(parse_page(r->body));
    if (!pages.back().has_more) break;
    query = "?from=" + pages.back().continue_from;
  }
  return pages;
}

size_t truth_count(TestSandbox& s, std::int64_t tenant, const std::string& resource = "invoices") {
  simdjson::dom::parser p;
  return p.parse(s.truth(tenant, resource)).get_array().value().size();
}

}  // namespace

TEST_CASE("the sandbox issues tokens for valid client credentials only", "[sandbox][auth]") {
  TestSandbox s;
  Api api(s);
  auto ok = api.http.Post("/connect/token",
                          fmt::format("grant_type=client_credentials&client_id={}&client_secret={}",
                                      sandbox_client_id(kTenantA), sandbox_client_secret(kTenantA)),
                          "application/x-www-form-urlencoded");
  REQUIRE(ok);
  CHECK(ok->status == 200);
  CHECK(ok->body.find("\"expires_in\":900") != std::string::npos);
  CHECK(ok->body.find("\"token_type\":\"Bearer\"") != std::string::npos);
  auto wrong = api.http.Post("/connect/token",
                             fmt::format("grant_type=client_credentials&client_id={}&client_secret=nope",
                                         sandbox_client_id(kTenantA)),
                             "application/x-www-form-urlencoded");
  REQUIRE(wrong);
  CHECK(wrong->status == 400);
  CHECK(wrong->body.find("invalid_client") != std::string::npos);
  auto json_body = api.http.Post("/connect/token", "{}", "application/json");
  REQUIRE(json_body);
  CHECK(json_body->status == 400);
  auto grant = api.http.Post("/connect/token", "grant_type=password", "application/x-www-form-urlencoded");
  REQUIRE(grant);
  CHECK(grant->status == 400);
}

TEST_CASE("resource calls need a live token of the same tenant and the app key", "[sandbox][auth]") {
  auto o = TestSandbox::default_options(50, 10);
  o.token_ttl_seconds = 60;
  TestSandbox s(o);
  Api api(s);
  const std::string token = api.token(kTenantA);
  CHECK(api.get(inv(kTenantA), token)->status == 200);
  CHECK(api.get(inv(kTenantA), token, "sandbox-app-key", false)->status == 200);  // bare token
  CHECK(api.get(inv(kTenantA), "")->status == 401);
  CHECK(api.get(inv(kTenantA), "garbage")->status == 401);
  CHECK(api.get(inv(kTenantBig), token)->status == 401);  // another tenant's token
  CHECK(api.get(inv(kTenantA), token, "")->status == 403);
  CHECK(api.get(inv(kTenantA), token, "wrong-key")->status == 403);
  s.admin("clock", "advance_seconds=61");
  CHECK(api.get(inv(kTenantA), token)->status == 401);  // expired
  const std::string fresh = api.token(kTenantA);
  CHECK(api.get(inv(kTenantA), fresh)->status == 200);
  s.admin("revoke-tokens");
  CHECK(api.get(inv(kTenantA), fresh)->status == 401);
}

TEST_CASE("the list endpoint pages, counts and validates like ServiceTitan", "[sandbox][list]") {
  TestSandbox s;
  Api api(s);
  const std::string token = api.token(kTenantA);
  auto r = api.get(inv(kTenantA, "?activeState=All&pageSize=100&page=2&includeTotal=true"), token);
  REQUIRE(r->status == 200);
  Page p = parse_page(r->body);
  CHECK(p.ids.size() == 100);
  CHECK(p.has_more);
  CHECK(p.total == static_cast<std::int64_t>(truth_count(s, kTenantA)));
  CHECK(r->body.rfind("{\"page\":2,\"pageSize\":100,", 0) == 0);
  Page no_total = parse_page(api.get(inv(kTenantA, "?pageSize=10"), token)->body);
  CHECK(no_total.total == -1);
  CHECK(no_total.ids.size() == 10);
  Page default_size = parse_page(api.get(inv(kTenantA), token)->body);
  CHECK(default_size.ids.size() == 50);
  auto too_big = api.get(inv(kTenantA, "?pageSize=5001"), token);
  CHECK(too_big->status == 400);
  CHECK(too_big->body.find("traceId") != std::string::npos);
  CHECK(too_big->body.find("pageSize") != std::string::npos);
  CHECK(api.get(inv(kTenantA, "?page=0"), token)->status == 400);
  CHECK(api.get(inv(kTenantA, "?modifiedOnOrAfter=yesterday"), token)->status == 400);
  CHECK(api.get(inv(kTenantA, "?activeState=Maybe"), token)->status == 400);
  CHECK(api.get(fmt::format("/settings/v2/tenant/{}/employees?active=Sometimes", kTenantA), token)->status == 400);
  CHECK(api.get(fmt::format("/accounting/v2/tenant/{}/employees", kTenantA), token)->status == 404);
}

TEST_CASE("inactive rows are hidden unless asked for with activeState or active", "[sandbox][list]") {
  TestSandbox s;
  Api api(s);
  const std::string token = api.token(kTenantA);
  Page active = parse_page(api.get(inv(kTenantA, "?pageSize=5000&includeTotal=true"), token)->body);
  Page all = parse_page(api.get(inv(kTenantA, "?pageSize=5000&activeState=All"), token)->body);
  Page inactive = parse_page(api.get(inv(kTenantA, "?pageSize=5000&activeState=InactiveOnly"), token)->body);
  CHECK(std::all_of(active.active.begin(), active.active.end(), [](bool a) { return a; }));
  CHECK(std::none_of(inactive.active.begin(), inactive.active.end(), [](bool a) { return a; }));
  CHECK_FALSE(inactive.ids.empty());
  CHECK(all.ids.size() == active.ids.size() + inactive.ids.size());
  CHECK(all.ids.size() == truth_count(s, kTenantA));
  const std::string emp = fmt::format("/settings/v2/tenant/{}/employees?pageSize=5000", kTenantA);
  Page emp_default = parse_page(api.get(emp, token)->body);
  Page emp_any = parse_page(api.get(emp + "&active=Any", token)->body);
  CHECK(emp_any.ids.size() == truth_count(s, kTenantA, "employees"));
  CHECK(emp_default.ids.size() < emp_any.ids.size());
}

TEST_CASE("modifiedOnOrAfter is inclusive, modifiedBefore exclusive, ids filter at most 50", "[sandbox][list]") {
  TestSandbox s;
  Api api(s);
  const std::string token = api.token(kTenantA);
  Page all = parse_page(api.get(inv(kTenantA, "?pageSize=5000&activeState=All"), token)->body);
  // Pick a timestamp that several rows share (the sandbox's shared-instant block).
  std::map<std::string, int> by_time;
  for (const std::string& m : all.modified)
    if (!m.empty()) ++by_time[m];
  auto shared = std::max_element(by_time.begin(), by_time.end(),
                                 [](auto& a, auto& b) { return a.second < b.second; });
  REQUIRE(shared->second >= 100);
  const std::string t = shared->first;
  Page from = parse_page(api.get(inv(kTenantA, "?pageSize=5000&activeState=All&modifiedOnOrAfter=" + t), token)->body);
  Page before = parse_page(api.get(inv(kTenantA, "?pageSize=5000&activeState=All&modifiedBefore=" + t), token)->body);
  size_t nulls = std::count(all.modified.begin(), all.modified.end(), "");
  CHECK(nulls > 0);
  CHECK(from.ids.size() + before.ids.size() + nulls == all.ids.size());
  for (const std::string& m : from.modified) CHECK(*parse_timestamp(m) >= *parse_timestamp(t));
  for (const std::string& m : before.modified) CHECK(*parse_timestamp(m) < *parse_timestamp(t));
  Page exact = parse_page(api.get(inv(kTenantA, "?pageSize=5000&activeState=All&modifiedOnOrAfter=" + t +
                                                    "&modifiedBefore=" + t), token)->body);
  CHECK(exact.ids.empty());
  std::string ids;
  for (int i = 0; i < 3; ++i) ids += (i ? "," : "") + std::to_string(all.ids[static_cast<size_t>(i) * 7]);
  Page by_ids = parse_page(api.get(inv(kTenantA, "?activeState=All&ids=" + ids), token)->body);
  CHECK(by_ids.ids.size() == 3);
  std::string many;
  for (int i = 0; i < 51; ++i) many += (i ? "," : "") + std::to_string(i);
  CHECK(api.get(inv(kTenantA, "?ids=" + many), token)->status == 400);
}

TEST_CASE("the export feed walks with continueFrom and returns every row, inactive included", "[sandbox][export]") {
  TestSandbox s;
  Api api(s);
  const std::string token = api.token(kTenantBig);
  std::vector<Page> pages = walk_export(api, token, kTenantBig);
  CHECK(pages.size() > 1);  // the batch is 200 in tests
  std::set<std::int64_t> ids;
  bool saw_inactive = false;
  for (const Page& p : pages) {
    CHECK(p.ids.size() <= 200);
    CHECK_FALSE(p.continue_from.empty());
    for (size_t i = 0; i < p.ids.size(); ++i) {
      ids.insert(p.ids[i]);
      saw_inactive |= !p.active[i];
    }
  }
  CHECK(saw_inactive);
  CHECK(ids.size() == truth_count(s, kTenantBig));
  CHECK(*ids.rbegin() > (1LL << 53));
  // Caught up: the last token returns nothing new.
  Page again = parse_page(api.get(inv_export(kTenantBig, "?from=" + pages.back().continue_from), token)->body);
  CHECK(again.ids.empty());
  CHECK_FALSE(again.has_more);
}

TEST_CASE("export changes appear after the visibility delay, or at once with includeRecentChanges", "[sandbox][export]") {
  TestSandbox s;
  Api api(s);
  const std::string token = api.token(kTenantA);
  const std::string last = walk_export(api, token, kTenantA).back().continue_from;
  s.admin("changes", fmt::format("tenant={}&resource=invoices&n=10", kTenantA));
  Page hidden = parse_page(api.get(inv_export(kTenantA, "?from=" + last), token)->body);
  CHECK(hidden.ids.empty());
  auto recent_response = api.get(inv_export(kTenantA, "?includeRecentChanges=true&from=" + last), token);
  INFO(recent_response->status << " " << recent_response->body.substr(0, 300));
  Page recent = parse_page(recent_response->body);
  CHECK_FALSE(recent.ids.empty());
  // A caught-up page of recent rows hands back a token that repeats them.
  auto repeat_response = api.get(inv_export(kTenantA, "?includeRecentChanges=true&from=" + recent.continue_from), token);
  INFO("repeat: " << repeat_response->status << " " << repeat_response->body.substr(0, 300));
  Page repeat = parse_page(repeat_response->body);
  CHECK(repeat.ids == recent.ids);
  s.admin("clock", "advance_seconds=901");  // also outlives the token
  Page visible = parse_page(api.get(inv_export(kTenantA, "?from=" + last), api.token(kTenantA))->body);
  CHECK(visible.ids == recent.ids);
}

TEST_CASE("export from a date is inclusive and a bad or stale token is a 400", "[sandbox][export]") {
  TestSandbox s;
  Api api(s);
  const std::string token = api.token(kTenantA);
  std::vector<Page> all = walk_export(api, token, kTenantA);
  REQUIRE(all.size() > 1);
  const std::string t = all[1].modified.front();  // rows without modifiedOn lead the feed
  REQUIRE_FALSE(t.empty());
  size_t expected = 0;
  for (const Page& p : all)
    for (const std::string& m : p.modified)
      if (!m.empty() && *parse_timestamp(m) >= *parse_timestamp(t)) ++expected;
  size_t got = 0;
  for (const Page& p : walk_export(api, token, kTenantA, "?from=" + t)) {
    got += p.ids.size();
    for (const std::string& m : p.modified) CHECK(*parse_timestamp(m) >= *parse_timestamp(t));
  }
  CHECK(got == expected);
  auto bad = api.get(inv_export(kTenantA, "?from=not-a-token"), token);
  CHECK(bad->status == 400);
  CHECK(bad->body.find("continueFrom") != std::string::npos);
  s.admin("invalidate-export-tokens");
  CHECK(api.get(inv_export(kTenantA, "?from=" + all.back().continue_from), token)->status == 400);
}

TEST_CASE("the sandbox data holds the hard cases real tenants produce", "[sandbox][data]") {
  // The clock starts at the real time unless told: both sandboxes are told the same start.
  auto options = TestSandbox::default_options(1200, 200);
  options.data.clock_start = now_ticks() / kTicksPerSecond * kTicksPerSecond;
  TestSandbox s(options);
  const std::string truth = s.truth(kTenantA, "invoices");
  CHECK(truth.find("\\u0000") != std::string::npos);
  CHECK(truth.find("\"modifiedOn\":null") != std::string::npos);
  CHECK(truth.find("\"items\":null") != std::string::npos);
  CHECK(truth.find("\"items\":[]") != std::string::npos);
  CHECK(truth.find("\"items\":[{") != std::string::npos);
  CHECK(truth.find("\"taxRate\":0.08250000000000000001") != std::string::npos);
  CHECK(truth.find("\\\"fix it\\\"") != std::string::npos);
  CHECK(truth.find("\\t") != std::string::npos);
  CHECK(truth.find("日本語") != std::string::npos);
  CHECK(truth.find("\"subTotal\":\"") != std::string::npos);  // money as strings
  CHECK(truth.find("\"active\":false") != std::string::npos);
  CHECK(s.truth(kTenantA, "employees").find("\"hourlyRate\":12345678.901234567891") != std::string::npos);
  simdjson::dom::parser p;
  std::set<size_t> digits;
  for (simdjson::dom::element rec : p.parse(truth).get_array()) {
    std::string_view m;
    if (rec["modifiedOn"].get_string().get(m) != simdjson::SUCCESS) continue;
    const size_t dot = m.find('.');
    digits.insert(dot == std::string_view::npos ? 0 : m.size() - dot - 2);
  }
  CHECK(digits == std::set<size_t>{0, 1, 2, 3, 4, 5, 6, 7});
  // Deterministic from the seed.
  TestSandbox twin(options);
  CHECK((twin.truth(kTenantA, "invoices") == truth));  // (not printed: megabytes)
}

TEST_CASE("churn changes rows, moves them to the end of the feed and shows in the truth", "[sandbox][churn]") {
  auto o = TestSandbox::default_options(300, 50);
  o.churn_per_request = 3;
  TestSandbox s(o);
  Api api(s);
  const std::string before = s.truth(kTenantA, "invoices");
  const std::string token = api.token(kTenantA);
  api.get(inv(kTenantA), token);
  api.get(inv(kTenantA), token);
  const std::string after = s.truth(kTenantA, "invoices");
  CHECK(after != before);
  CHECK(truth_count(s, kTenantA) >= 300);
  const std::string reply = s.admin("changes", fmt::format("tenant={}&resource=invoices&n=25", kTenantA));
  CHECK(reply == "{\"applied\":25}");
  s.admin("reset");
  CHECK(s.truth(kTenantA, "invoices") == before);
}

TEST_CASE("more than 60 requests a second to one tenant get 429 with Retry-After", "[sandbox][limits]") {
  TestSandbox s(TestSandbox::default_options(20, 5));
  Api api(s);
  const std::string token = api.token(kTenantA);
  int throttled = 0;
  std::string retry_after;
  for (int i = 0; i < 80; ++i) {
    auto r = api.get(inv(kTenantA, "?pageSize=1"), token);
    REQUIRE(r);
    if (r->status == 429) {
      ++throttled;
      retry_after = r->get_header_value("Retry-After");
    }
  }
  CHECK(throttled > 0);
  CHECK(retry_after == "1");
  CHECK(s.stat(kTenantA, "throttled") == throttled);
  // Another tenant has its own budget.
  CHECK(api.get(inv(kTenantBig, "?pageSize=1"), api.token(kTenantBig))->status == 200);
}

TEST_CASE("queued faults come back as the documented failures", "[sandbox][faults]") {
  auto o = TestSandbox::default_options(20, 5);
  o.faults.slow_ms = 300;
  TestSandbox s(o);
  Api api(s);
  const std::string token = api.token(kTenantA);
  s.admin("faults", "next=http500,http502,http503,http504,maintenance409,throttle,html,empty,slow");
  auto expect = [&](int status, const std::string& needle) {
    auto r = api.get(inv(kTenantA), token);
    REQUIRE(r);
    CHECK(r->status == status);
    if (!needle.empty()) CHECK(r->body.find(needle) != std::string::npos);
    return r;
  };
  expect(500, "traceId");
  expect(502, "traceId");
  expect(503, "traceId");
  expect(504, "traceId");
  expect(409, "maintenance");
  auto throttle = expect(429, "");
  CHECK(parse_http_date(throttle->get_header_value("Retry-After")).has_value());
  CHECK(parse_http_date(throttle->get_header_value("Retry-After")) ==
        *parse_http_date(throttle->get_header_value("Date")) + kTicksPerSecond);
  auto html = expect(502, "<html>");
  CHECK(html->get_header_value("Content-Type").find("text/html") != std::string::npos);
  CHECK(expect(500, "")->body.empty());
  const auto t0 = std::chrono::steady_clock::now();
  expect(200, "\"data\"");
  CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(300));
  expect(200, "\"data\"");
}

TEST_CASE("reset and truncate faults cut the connection mid-response", "[sandbox][faults]") {
  TestSandbox s(TestSandbox::default_options(20, 5));
  Api api(s);
  const std::string token = api.token(kTenantA);
  s.admin("faults", "next=reset,truncate");
  auto reset = api.get(inv(kTenantA), token);
  CHECK((!reset || reset->body.size() < 4096));
  auto truncated = api.get(inv(kTenantA), token);
  CHECK((!truncated || truncated->body.size() < 4096));
  CHECK(api.get(inv(kTenantA), token)->status == 200);
}

TEST_CASE("seeded random faults hit about the configured rate", "[sandbox][faults]") {
  auto o = TestSandbox::default_options(20, 5);
  o.rate_limit_per_second = 1000;
  TestSandbox s(o);
  Api api(s);
  const std::string token = api.token(kTenantA);
  s.admin("faults", "rate=0.3&seed=5&kinds=http503,maintenance409");
  int failed = 0;
  for (int i = 0; i < 200; ++i) failed += api.get(inv(kTenantA, "?pageSize=1"), token)->status != 200;
  CHECK(failed > 30);
  CHECK(failed < 90);
  s.admin("faults", "clear=1");
  CHECK(api.get(inv(kTenantA), token)->status == 200);
}

TEST_CASE("responses are gzip-compressed when asked and carry the sandbox clock in Date", "[sandbox][http]") {
  TestSandbox s;
  httplib::Client c("127.0.0.1", s.port());
  c.set_decompress(false);
  Api api(s);
  const std::string token = api.token(kTenantA);
  auto r = c.Get(inv(kTenantA, "?pageSize=500").c_str(),
                 {{"ST-App-Key", "sandbox-app-key"}, {"Authorization", "Bearer " + token}, {"Accept-Encoding", "gzip"}});
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->get_header_value("Content-Encoding") == "gzip");
  // The sandbox's clock starts at the real time (whole seconds) and moves only when asked.
  const Ticks start = s.server().dataset().now();
  CHECK(start % kTicksPerSecond == 0);
  CHECK(std::llabs(start - now_ticks()) < 60 * kTicksPerSecond);
  CHECK(r->get_header_value("Date") == format_http_date(start));
  s.admin("clock", "advance_seconds=3600");
  auto later = api.get(inv(kTenantA), token);
  CHECK(later->get_header_value("Date") == format_http_date(start + 3600 * kTicksPerSecond));
}

TEST_CASE("the sandbox serves HTTPS with a given certificate", "[sandbox][tls]") {
  const std::string dir = fmt::format("/tmp/stsync-tls-{}", getpid());
  REQUIRE(std::system(("mkdir -p " + dir + " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
                       "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " + dir + "/key.pem -out " +
                       dir + "/cert.pem 2>/dev/null").c_str()) == 0);
  auto o = TestSandbox::default_options(20, 5);
  o.tls_cert_file = dir + "/cert.pem";
  o.tls_key_file = dir + "/key.pem";
  TestSandbox s(o);
  httplib::SSLClient verified("127.0.0.1", s.port());
  verified.set_ca_cert_path((dir + "/cert.pem").c_str());
  verified.enable_server_certificate_verification(true);
  auto ok = verified.Get("/_sandbox/health");
  REQUIRE(ok);
  CHECK(ok->status == 200);
  httplib::SSLClient untrusting("127.0.0.1", s.port());
  untrusting.enable_server_certificate_verification(true);
  untrusting.set_ca_cert_path("/etc/ssl/certs/ca-certificates.crt");
  CHECK_FALSE(untrusting.Get("/_sandbox/health"));
  std::system(("rm -rf " + dir).c_str());
}

TEST_CASE("one HTTP handle keeps one connection open for every page", "[sandbox][http]") {
  TestSandbox s;
  CurlTransport http(CurlOptions{});
  HttpRequest token;
  token.method = "POST";
  token.url = s.url() + "/connect/token";
  token.headers = {"Content-Type: application/x-www-form-urlencoded"};
  token.body = fmt::format("grant_type=client_credentials&client_id={}&client_secret={}",
                           sandbox_client_id(kTenantA), sandbox_client_secret(kTenantA));
  HttpResponse t = http.perform(token);
  REQUIRE(t.status == 200);
  simdjson::dom::parser p;
  const std::string bearer(p.parse(t.body)["access_token"].get_string().value());
  for (int page = 1; page <= 20; ++page) {
    HttpRequest req;
    req.url = s.url() + inv(kTenantA, fmt::format("?page={}&pageSize=20", page));
    req.headers = {"ST-App-Key: sandbox-app-key", "Authorization: Bearer " + bearer};
    CHECK(http.perform(req).status == 200);
  }
  CHECK(http.connections_opened() == 1);
}

TEST_CASE("invoices and employees take no sort, as on the real API: it is ignored", "[sandbox][list]") {
  TestSandbox s;
  Api api(s);
  const std::string token = api.token(kTenantA);
  auto plain = api.get(inv(kTenantA, "?pageSize=100"), token);
  auto sorted = api.get(inv(kTenantA, "?pageSize=100&sort=-Id"), token);
  REQUIRE(sorted->status == 200);
  CHECK(parse_page(sorted->body).ids == parse_page(plain->body).ids);
}

TEST_CASE("the sandbox refuses what ServiceTitan's published contract refuses: required parameters, maxima, types",
          "[sandbox][contract]") {
  auto o = TestSandbox::default_options(10, 10);
  for (auto& t : o.data.tenants)
    for (const char* r : {"installed_equipment_custom_fields", "journal_entries", "vendors", "customer_contacts"})
      t.counts[r] = 5;
  TestSandbox s(o);
  Api api(s);
  const std::string token = api.token(kTenantA);
  // page, pageSize and descending are all required on this one endpoint (equipment-systems spec).
  const std::string fields = fmt::format("/equipmentsystems/v2/tenant/{}/installed-equipment/custom-field-types", kTenantA);
  auto missing = api.get(fields + "?page=1&pageSize=10", token);
  CHECK(missing->status == 400);
  CHECK(missing->body.find(R"("descending":["The descending field is required."])") != std::string::npos);
  CHECK(api.get(fields + "?page=1&pageSize=10&descending=false", token)->status == 200);
  CHECK(api.get(fields + "?page=1&pageSize=10&descending=perhaps", token)->status == 400);
  // Journal entries take at most 500 a page (stated in the spec's text).
  const std::string journal = fmt::format("/accounting/v2/tenant/{}/journal-entries", kTenantA);
  auto too_many = api.get(journal + "?pageSize=501", token);
  CHECK(too_many->status == 400);
  CHECK(too_many->body.find("pageSize") != std::string::npos);
  CHECK(api.get(journal + "?pageSize=500", token)->status == 200);
  // ids is an array of integers on the vendors list: the parameter repeated, not a comma list.
  const std::string vendors = fmt::format("/inventory/v2/tenant/{}/vendors", kTenantA);
  CHECK(api.get(vendors + "?ids=1%2C2", token)->status == 400);
  CHECK(api.get(vendors + "?ids=1&ids=2", token)->status == 200);
  // A combination only the spec's text states: the customers' contacts need a filter.
  const std::string contacts = fmt::format("/crm/v2/tenant/{}/customers/contacts", kTenantA);
  auto unfiltered = api.get(contacts + "?page=1&pageSize=10", token);
  CHECK(unfiltered->status == 400);
  CHECK(unfiltered->body.find("Either CustomerIds, modifiedOn or modifiedOnOrAfter parameter must be specified.") !=
        std::string::npos);
  CHECK(unfiltered->body.find(R"("status":400)") != std::string::npos);
  CHECK(unfiltered->body.find(R"("traceId")") != std::string::npos);
  CHECK(api.get(contacts + "?page=1&pageSize=10&modifiedOnOrAfter=1970-01-01T00:00:00Z", token)->status == 200);
  CHECK(api.get(contacts + "?customerids=5", token)->status == 200);  // names bind ignoring case
  // A parameter the operation does not declare is ignored, as the real API ignores it, and noted.
  CHECK(s.admin("undeclared-params", "", false) == "[]");
  CHECK(api.get(journal + "?pageSize=10&modifiedSince=2025-01-01", token)->status == 200);
  CHECK(s.admin("undeclared-params", "", false) == R"(["accounting/v2/tenant/{tenant}/journal-entries modifiedSince"])");
}

TEST_CASE("every default job's endpoints are operations of ServiceTitan's published specs", "[sandbox][contract]") {
  const sandbox::Contract& contract = sandbox::Contract::builtin();
  REQUIRE(contract.size() > 500);
  int checked = 0;
  std::vector<std::string> unknown;
  for (const JobSpec& job : load_job_specs("")) {
    for (const std::string& path : {job.list_path, job.export_path}) {
      if (path.empty()) continue;
      ++checked;
      if (!contract.find("GET", path)) unknown.push_back(job.name + ": " + path);
    }
  }
  CHECK(checked > 144);
  CHECK(unknown == std::vector<std::string>{});
}

TEST_CASE("the sandbox's data joins: invoices name the tenant's customers locations and jobs and assignments its "
          "technicians appointments and jobs",
          "[sandbox][data]") {
  auto o = TestSandbox::default_options(40, 5);
  for (auto& t : o.data.tenants)
    for (const char* r : {"customers", "locations", "jobs", "technicians", "appointments", "appointment_assignments"})
      t.counts[r] = 12;
  TestSandbox s(o);
  simdjson::dom::parser parser;
  auto ids_of = [&](const std::string& resource) {
    std::set<std::int64_t> ids;
    simdjson::padded_string body(s.truth(kTenantA, resource));
    for (simdjson::dom::object row : parser.parse(body).get_array()) ids.insert(std::int64_t(row["id"]));
    return ids;
  };
  const std::set<std::int64_t> customers = ids_of("customers"), locations = ids_of("locations"),
                               jobs = ids_of("jobs"), technicians = ids_of("technicians"),
                               appointments = ids_of("appointments");
  REQUIRE(customers.size() == 12);
  // Every reference names a row of the tenant (null references aside).
  using Refs = std::vector<std::pair<std::string, const std::set<std::int64_t>*>>;  // field[/subfield] → ids
  auto check_refs = [&](const std::string& resource, const Refs& refs) {
    std::map<std::string, int> joined;
    simdjson::padded_string body(s.truth(kTenantA, resource));
    for (simdjson::dom::object row : parser.parse(body).get_array()) {
      for (const auto& [path, into] : refs) {
        const size_t slash = path.find('/');
        simdjson::dom::element v = row[path.substr(0, slash)].value();
        if (slash != std::string::npos && !v.is_null()) v = v[path.substr(slash + 1)].value();
        if (v.is_null()) continue;
        INFO(resource << " " << path << " " << std::int64_t(v));
        CHECK(into->count(std::int64_t(v)) == 1);
        ++joined[path];
      }
    }
    for (const auto& [path, into] : refs) CHECK(joined[path] > 0);
  };
  check_refs("invoices", {{"customer/id", &customers}, {"location/id", &locations}, {"job/id", &jobs}});
  check_refs("appointment_assignments", {{"technicianId", &technicians}, {"appointmentId", &appointments}, {"jobId", &jobs}});
  check_refs("appointments", {{"jobId", &jobs}, {"customerId", &customers}});
}

namespace {

// "a=1&b=x%3Ay" → {a: 1, b: x:y}
std::multimap<std::string, std::string> query_pairs(const std::string& query) {
  std::multimap<std::string, std::string> out;
  auto decode = [](const std::string& v) {
    std::string d;
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] == '%' && i + 2 < v.size()) {
        d += static_cast<char>(std::stoi(v.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        d += v[i];
      }
    }
    return d;
  };
  for (size_t at = 0; at < query.size();) {
    size_t end = query.find('&', at);
    if (end == std::string::npos) end = query.size();
    const std::string pair = query.substr(at, end - at);
    if (!pair.empty()) {
      const size_t eq = pair.find('=');
      out.emplace(pair.substr(0, eq), eq == std::string::npos ? "" : decode(pair.substr(eq + 1)));
    }
    at = end + 1;
  }
  return out;
}

}  // namespace

TEST_CASE("every request a default job can make names only parameters its operation declares and breaks none of "
          "its rules",
          "[sandbox][contract]") {
  const sandbox::Contract& contract = sandbox::Contract::builtin();
  const std::string date = "2025-01-01T00%3A00%3A00Z";
  std::vector<std::string> problems;
  int requests = 0;
  for (const JobSpec& job : load_job_specs("")) {
    if (!job.enabled) continue;
    // The request forms of the walks (export_walk, list_walk, listing_sweep, check), with
    // representative values: path → query.
    std::vector<std::pair<std::string, std::string>> forms;
    if (!job.export_path.empty()) {
      std::string q = "includeRecentChanges=false&from=" + date;
      if (!job.export_filter.empty()) q += "&" + job.export_filter;
      forms.emplace_back(job.export_path, q);
    }
    if (!job.list_path.empty()) {
      const std::string paged = job.response == ResponseShape::paged ? job.paging(2, job.page_size) : "";
      // A complete listing (full jobs every run, the others' sweeps unless reconcile_every = 0).
      if (job.mode == SyncMode::full_listing || job.reconcile_every_seconds > 0)
        forms.emplace_back(job.list_path, job.list_query_prefix() + paged);
      if (job.mode != SyncMode::export_feed)  // check's probe (of the export for export jobs)
        forms.emplace_back(job.list_path, job.list_query_prefix() +
                                              (job.response == ResponseShape::paged ? job.paging(1, 1, false) : ""));
      if (job.ids_param && job.parent.empty() && job.reconcile_every_seconds > 0)
        forms.emplace_back(job.list_path, job.list_query_prefix() + (job.ids_repeated ? "ids=1&ids=2&" : "ids=1%2C2&") +
                                              job.paging(1, 50, false));  // a deleted-row check
      if (job.mode == SyncMode::list_windows || job.mode == SyncMode::created_windows) {
        forms.emplace_back(job.list_path, job.list_query_prefix() + job.created_after + "=" + date + "&" +
                                              job.created_before + "=" + date + "&" + paged);
        forms.emplace_back(job.list_path, job.list_query_prefix() + job.created_before + "=" + date + "&" + paged);
      }
      if (job.mode == SyncMode::list_windows)
        forms.emplace_back(job.list_path, job.list_query_prefix(job.list_floor != "modifiedOnOrAfter") +
                                              "modifiedOnOrAfter=" + date + "&modifiedBefore=" + date + "&" + paged);
    }
    for (const auto& [path, query] : forms) {
      ++requests;
      const sandbox::ContractOperation* op = contract.find("GET", path);
      if (op == nullptr) {
        problems.push_back(job.name + ": " + path + " is not an operation of the specs");
        continue;
      }
      const auto pairs = query_pairs(query);
      if (const auto v = sandbox::Contract::check(*op, pairs))
        problems.push_back(fmt::format("{}: {}?{}: {} ({})", job.name, path, query, v->message, v->field));
      for (const std::string& name : sandbox::Contract::undeclared(*op, pairs))
        problems.push_back(fmt::format("{}: {}?{}: {} is not declared", job.name, path, query, name));
    }
  }
  CHECK(requests > 400);
  for (const std::string& p : problems) UNSCOPED_INFO(p);
  CHECK(problems.empty());
}

TEST_CASE("the sandbox serves the Reporting API: categories reports descriptions data per day and 5 runs of a report "
          "per minute with Retry-After",
          "[sandbox][reports]") {
  TestSandbox s;
  Api api(s);
  const std::string token = api.token(kTenantA);
  const std::string base = fmt::format("/reporting/v2/tenant/{}", kTenantA);
  auto categories = api.get(base + "/report-categories?includeTotal=true", token);
  REQUIRE(categories->status == 200);
  CHECK(categories->body.find(R"({"id":"technician","name":"Technician"})") != std::string::npos);
  CHECK(categories->body.find(R"("totalCount":3)") != std::string::npos);
  auto reports = api.get(base + "/report-category/technician/reports", token);
  REQUIRE(reports->status == 200);
  CHECK(reports->body.find(R"("id":2001,"name":"Technician performance")") != std::string::npos);
  CHECK(api.get(base + "/report-category/nothing/reports", token)->status == 404);
  auto described = api.get(base + "/report-category/technician/reports/2001", token);
  REQUIRE(described->status == 200);
  CHECK(described->body.find(R"({"name":"From","label":"From","dataType":"Date","isArray":false,"isRequired":true,)") !=
        std::string::npos);
  CHECK(described->body.find(R"({"name":"Revenue","label":"Revenue","dataType":"Number"})") != std::string::npos);

  const std::string data = base + "/report-category/technician/reports/2001/data";
  const std::string day = R"({"parameters":[{"name":"From","value":"2025-03-01"},{"name":"To","value":"2025-03-01"}]})";
  // A required parameter missing: the API's 400, naming it.
  auto missing = api.post(data, token, R"({"parameters":[{"name":"From","value":"2025-03-01"}]})");
  CHECK(missing->status == 400);
  CHECK(missing->body.find("The parameter To is required.") != std::string::npos);
  // One day's rows, as arrays in the order of the fields, paged; the same day gives the same rows.
  auto first = api.post(data + "?page=1&pageSize=5000&includeTotal=true", token, day);
  REQUIRE(first->status == 200);
  CHECK(first->body.find(R"("fields":[{"name":"Technician","label":"Technician"},)") != std::string::npos);
  const std::string truth = s.admin("report-truth", fmt::format("tenant={}&report=2001&day=2025-03-01", kTenantA), false);
  const std::string rows = truth.substr(truth.find("\"data\":") + 7);
  CHECK(first->body.find(rows.substr(0, rows.size() - 1)) != std::string::npos);
  // Four runs so far (the 400 counts as one); the sixth in a minute is refused with Retry-After.
  CHECK(api.post(data, token, day)->status == 200);
  CHECK(api.post(data, token, day)->status == 200);
  CHECK(api.post(data, token, day)->status == 200);
  auto sixth = api.post(data, token, day);
  CHECK(sixth->status == 429);
  CHECK(std::stoi(sixth->get_header_value("Retry-After")) >= 50);
  CHECK(api.post(base + "/report-category/operations/reports/1001/data", token,
                 R"({"parameters":[{"name":"From","value":"2025-03-01"},{"name":"To","value":"2025-03-02"}]})")
            ->status == 200);  // another report: its own limit
  CHECK(s.stat(kTenantA, "report_throttled") == 1);
  // The owner adds a field and removes one; a past day is restated: its numbers change, its
  // names do not.
  s.admin("report-limit", "runs=100&window_ms=60000");
  s.admin("report-fields", fmt::format("tenant={}&report=2001&add=Callbacks:Number&remove=FirstDispatch", kTenantA));
  auto changed = api.get(base + "/report-category/technician/reports/2001", token);
  CHECK(changed->body.find("Callbacks") != std::string::npos);
  CHECK(changed->body.find("FirstDispatch") == std::string::npos);
  const std::string before = s.admin("report-truth", fmt::format("tenant={}&report=1001&day=2025-03-01", kTenantA), false);
  s.admin("report-restate", fmt::format("tenant={}&report=1001&day=2025-03-01", kTenantA));
  const std::string after = s.admin("report-truth", fmt::format("tenant={}&report=1001&day=2025-03-01", kTenantA), false);
  CHECK(after != before);
  CHECK(after.substr(0, after.find(',', after.find("\"data\":"))) == before.substr(0, before.find(',', before.find("\"data\":"))));
  // A tenant whose app lacks the Reporting scope gets 403.
  s.admin("scopes", fmt::format("tenant={}&deny=reporting", kTenantA));
  auto denied = api.get(base + "/report-categories", token);
  REQUIRE(denied);
  CHECK(denied->status == 403);
}
