// The walks of a job run (engine/), driven against the in-memory store and API of fakes.h: the
// rules that decide what is read and what is committed, without PostgreSQL or HTTP. The same
// rules are also tested end to end against the sandbox and a real PostgreSQL (sync_test and
// others); these name each rule on its own and run in milliseconds.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <algorithm>

#include "config.h"
#include "fakes.h"
#include "st_client.h"
#include "job_run.h"

using namespace stsync;
using namespace stsync::test;

namespace {

constexpr std::int64_t kTenant = 7;

Settings walk_settings() {
  Settings s;
  s.api_url = s.auth_url = "http://api.fake";
  s.app_key = "fake-app-key";
  TenantConfig tenant;
  tenant.id = kTenant;
  tenant.client_id = "fake-client";
  tenant.client_secret = "fake-secret";
  s.tenants = {tenant};
  s.requests_per_second = 1000;
  s.page_connections = 1;
  return s;
}

JobSpec things(const std::string& more = "") {
  return parse_job_spec(R"(
name = "things"
table = "things"
list_path = "x/v2/tenant/{tenant}/things"
export_path = "x/v2/tenant/{tenant}/export/things"
columns = [ { path = "name", type = "text" } ]
)" + more,
                        "things.toml");
}

// A per-parent job: the notes of each "things" row.
JobSpec thing_notes() {
  JobSpec spec = parse_job_spec(R"(
name = "thing_notes"
table = "thing_notes"
list_path = "x/v2/tenant/{tenant}/things/{parent}/notes"
mode = "full"
parent = "things"
columns = [ { path = "name", type = "text" } ]
)",
                                "thing_notes.toml");
  spec.parent_table = "things";  // what loading the job files resolves
  return spec;
}

// A job run against the fakes, as the scheduler starts one.
struct Walk {
  Settings settings = walk_settings();
  JobSpec spec;
  FakeStore store;
  FakeApi api;
  FakeClock clock;
  TenantSession session{settings.tenants.at(0), settings.requests_per_second, clock};
  RunOptions options;
  Walk(JobSpec s, FakeApi::Handler handler) : spec(std::move(s)), store(spec), api(std::move(handler)) {}
  JobResult run() {
    JobRun runner(settings, spec, session, api, store, clock, options);
    return runner.run();
  }
  std::vector<std::string> requests_with(const std::string& text) const {
    std::vector<std::string> out;
    for (const std::string& r : api.requests)
      if (r.find(text) != std::string::npos) out.push_back(r);
    return out;
  }
};

std::string at_second(int s) { return format_timestamp(*parse_timestamp("2025-03-01T00:00:00Z") + s * kTicksPerSecond, 0); }

std::string value_of(const FakeApi::Query& q, const std::string& name) {
  auto it = q.find(name);
  return it == q.end() ? std::string() : it->second;
}

}  // namespace

TEST_CASE("a rejected export token is tried once more then the feed restarts from complete_through minus the overlap",
          "[walk][export]") {
  const Ticks complete = *parse_timestamp("2025-03-01T12:00:00Z");
  Walk w(things("overlap_seconds = 300"), [](const std::string&, const FakeApi::Query& q) {
    const std::string from = value_of(q, "from");
    if (from == "stale-token") return FakeApi::status(400, R"({"title":"The continuation token is invalid"})");
    return FakeApi::ok(FakeApi::page({record_json(1, at_second(1)), record_json(2, at_second(2))}, false,
                                     R"("continueFrom":"fresh-token")"));
  });
  w.store.data().state.export_token = "stale-token";
  w.store.data().state.complete_through = complete;
  const JobResult r = w.run();
  REQUIRE(r.outcome == JobOutcome::succeeded);
  CHECK(w.requests_with("from=stale-token").size() == 2);  // the token, then once more
  const std::vector<std::string> restarts = w.requests_with("from=2025-03-01T11%3A55%3A00");
  CHECK(restarts.size() == 1);  // then the date: complete_through − 300 s
  CHECK(w.api.requests.size() == 3);
  CHECK(w.store.data().state.export_token == std::optional<std::string>("fresh-token"));
  CHECK(w.store.live_keys() == std::vector<std::string>{"1", "2"});
}

TEST_CASE("an export feed whose continueFrom goes back to a token it followed stops with the state of the last good page",
          "[walk][export]") {
  Walk w(things(), [](const std::string&, const FakeApi::Query& q) {
    const std::string from = value_of(q, "from");
    if (from.empty()) return FakeApi::ok(FakeApi::page({record_json(1, at_second(1))}, true, R"("continueFrom":"A")"));
    if (from == "A") return FakeApi::ok(FakeApi::page({record_json(2, at_second(2))}, true, R"("continueFrom":"B")"));
    return FakeApi::ok(FakeApi::page({record_json(3, at_second(3))}, true, R"("continueFrom":"A")"));
  });
  const JobResult r = w.run();
  CHECK(r.outcome == JobOutcome::failed);
  CHECK(r.error_kind == ErrorKind::bad_data);
  CHECK(r.error.find("goes back to a token") != std::string::npos);
  CHECK(w.store.live_keys() == std::vector<std::string>{"1", "2"});  // the cycling page is not stored
  CHECK(w.store.data().state.export_token == std::optional<std::string>("B"));
  CHECK(w.store.data().outcomes == std::vector<std::string>{"failed"});
}

TEST_CASE("pages committed on two lanes write their states in page order", "[walk][export][lanes]") {
  constexpr int kPages = 9;
  Walk w(things(), [](const std::string&, const FakeApi::Query& q) {
    const std::string from = value_of(q, "from");
    const int n = from.empty() ? 1 : std::stoi(from.substr(1)) + 1;  // token "tN" leads to page N + 1
    return FakeApi::ok(FakeApi::page({record_json(n * 10, at_second(n)), record_json(n * 10 + 1, at_second(n))},
                                     n < kPages, fmt::format(R"("continueFrom":"t{}")", n)));
  });
  w.settings.page_connections = 2;
  const JobResult r = w.run();
  REQUIRE(r.outcome == JobOutcome::succeeded);
  CHECK(r.pages == kPages);
  std::vector<std::optional<std::string>> expected;
  for (int n = 1; n <= kPages; ++n) expected.push_back(fmt::format("t{}", n));
  CHECK(w.store.data().tokens_written == expected);
  CHECK(w.store.live_keys().size() == 2 * kPages);
}

TEST_CASE("a list window with more rows than one response is halved until every window fits in one",
          "[walk][list]") {
  // 40 records spread over a day; 10 per response.
  std::vector<std::pair<std::int64_t, Ticks>> records;
  const Ticks base = *parse_timestamp("2025-03-01T00:00:00Z");
  for (int i = 0; i < 40; ++i) records.emplace_back(100 + i, base + i * 1800 * kTicksPerSecond);
  int over_full = 0;
  Walk w(things("mode = \"list\"\npage_size = 10"), [&](const std::string&, const FakeApi::Query& q) {
    auto bound = [&](const std::string& name, Ticks fallback) {
      const std::string v = value_of(q, name);
      return v.empty() ? fallback : *parse_timestamp(v);
    };
    const bool created = q.count("createdBefore") > 0;
    const Ticks lo = bound(created ? "createdOnOrAfter" : "modifiedOnOrAfter", 0);
    const Ticks hi = bound(created ? "createdBefore" : "modifiedBefore", 0);
    std::vector<std::string> in;
    for (const auto& [id, t] : records)
      if (t >= lo && t < hi) in.push_back(record_json(id, format_timestamp(t, 0)));
    const bool more = in.size() > 10;
    if (more) {
      ++over_full;
      in.resize(10);
    }
    return FakeApi::ok(FakeApi::page(in, more, fmt::format(R"("page":1,"pageSize":10,"totalCount":{})", in.size())));
  });
  const JobResult r = w.run();
  REQUIRE(r.outcome == JobOutcome::succeeded);
  CHECK(w.store.live_keys().size() == 40);
  CHECK(over_full > 0);  // the first windows were too full, and were halved
  // Every window was asked once it fit: no offset pages (page=2) were needed.
  CHECK(w.requests_with("page=2").empty());
  CHECK(w.store.data().state.complete_through.has_value());
}

TEST_CASE("the listing sweep marks deleted only the rows that the ids check confirms gone", "[walk][sweep]") {
  // Rows 1-4 are stored; the listing returns 1, 2 and 4. Asked by id, row 3 is either gone or
  // still there (an offset page skipped it).
  for (const bool still_there : {false, true}) {
    Walk w(things("mode = \"full\"\nids_param = true"), [&](const std::string&, const FakeApi::Query& q) {
      if (q.count("ids"))
        return FakeApi::ok(FakeApi::page(still_there ? std::vector<std::string>{record_json(3, at_second(3))}
                                                     : std::vector<std::string>{},
                                         false));
      return FakeApi::ok(FakeApi::page(
          {record_json(1, at_second(1)), record_json(2, at_second(2)), record_json(4, at_second(4))}, false,
          R"("page":1,"pageSize":5000,"totalCount":3)"));
    });
    for (int id : {1, 2, 3, 4}) w.store.data().rows[std::to_string(id)] = FakeStore::Row{at_second(id), "{}", "", false};
    const JobResult r = w.run();
    REQUIRE(r.outcome == JobOutcome::succeeded);
    CHECK(w.requests_with("ids=3").size() == 1);
    if (still_there) {
      CHECK(r.deleted == 0);
      CHECK(w.store.live_keys() == std::vector<std::string>{"1", "2", "3", "4"});
    } else {
      CHECK(r.deleted == 1);
      CHECK(w.store.live_keys() == std::vector<std::string>{"1", "2", "4"});
    }
  }
}

TEST_CASE("a sweep whose connection was re-opened mid-listing marks nothing deleted", "[walk][sweep]") {
  Walk w(things("mode = \"full\""), [](const std::string&, const FakeApi::Query&) {
    return FakeApi::ok(FakeApi::page({record_json(1, at_second(1))}, false, R"("page":1,"pageSize":5000,"totalCount":1)"));
  });
  for (int id : {1, 2}) w.store.data().rows[std::to_string(id)] = FakeStore::Row{at_second(id), "{}", "", false};
  w.store.data().fail_commits = 1;  // the listing's page: the connection breaks, the page is committed again
  const JobResult r = w.run();
  REQUIRE(r.outcome == JobOutcome::succeeded);
  CHECK(w.store.data().reconnects == 1);
  CHECK(r.deleted == 0);  // row 2 looks unseen, but the seen keys were lost with the session
  CHECK(w.store.live_keys() == std::vector<std::string>{"1", "2"});
}

TEST_CASE("a per-parent walk reads the listing of each parent changed since its cursor and moves the cursor past it",
          "[walk][parents]") {
  const JobSpec spec = thing_notes();
  Walk w(spec, [](const std::string& path, const FakeApi::Query&) {
    const std::string parent = path.substr(path.find("things/") + 7, path.find("/notes") - path.find("things/") - 7);
    return FakeApi::ok(FakeApi::page({record_json(std::stoll(parent) * 100, at_second(1))}, false,
                                     R"("page":1,"pageSize":5000,"totalCount":1)"));
  });
  w.store.data().parents = {ParentRow{"11", 1000}, ParentRow{"12", 2000}, ParentRow{"13", 3000}};
  w.store.data().state.list_cursor = 1500 * kTicksPerMicro;  // parent 11 was read by an earlier run
  w.store.data().state.reconciled_at = 1000 * kTicksPerMicro;
  w.store.data().database_now = w.store.data().state.reconciled_at.value() + kTicksPerSecond;  // no sweep of all due
  const JobResult r = w.run();
  REQUIRE(r.outcome == JobOutcome::succeeded);
  CHECK(w.requests_with("things/11/").empty());
  CHECK(w.requests_with("things/12/").size() == 1);
  CHECK(w.requests_with("things/13/").size() == 1);
  CHECK(w.store.data().state.list_cursor == std::optional<Ticks>(3000 * kTicksPerMicro));
  CHECK(w.store.live_keys() == std::vector<std::string>{"1200", "1300"});
}

TEST_CASE("a 403 on a job nobody named is recorded as not permitted and one asked for by name fails", "[walk][outcome]") {
  for (const bool named : {false, true}) {
    Walk w(things(), [](const std::string&, const FakeApi::Query&) {
      return FakeApi::status(403, R"({"title":"Forbidden"})");
    });
    w.spec.named = named;
    const JobResult r = w.run();
    CHECK(r.outcome == (named ? JobOutcome::failed : JobOutcome::not_permitted));
    CHECK(w.store.data().outcomes == std::vector<std::string>{named ? "failed" : "not_permitted"});
    CHECK_FALSE(w.store.data().locked);  // released at the end of the run, whatever the outcome
  }
}

TEST_CASE("a page whose commit lost the connection is committed again after a reconnect", "[walk][outcome]") {
  Walk w(things(), [](const std::string&, const FakeApi::Query&) {
    return FakeApi::ok(FakeApi::page({record_json(1, at_second(1))}, false, R"("continueFrom":"end")"));
  });
  w.settings.db_reconnect_attempts = 3;
  w.store.data().fail_commits = 2;
  const JobResult r = w.run();
  REQUIRE(r.outcome == JobOutcome::succeeded);
  CHECK(w.store.data().reconnects == 2);
  CHECK(w.clock.slept > 0);  // it waited between attempts (on the fake clock: no time passed)
  CHECK(w.store.live_keys() == std::vector<std::string>{"1"});
  CHECK(w.api.requests.size() == 1);  // the page in memory was committed again, not fetched again
}

TEST_CASE("a job whose lock another run holds is skipped and touches nothing", "[walk][outcome]") {
  Walk w(things(), [](const std::string&, const FakeApi::Query&) { return FakeApi::ok(FakeApi::page({}, false)); });
  w.store.data().locked = true;
  const JobResult r = w.run();
  CHECK(r.outcome == JobOutcome::skipped);
  CHECK(w.api.requests.empty());
  CHECK(w.store.data().outcomes.empty());
  CHECK(w.store.data().locked);  // still the other run's
}

TEST_CASE("a per-parent walk over parents with nothing under them writes its state at most once a second",
          "[walk][parents]") {
  const JobSpec spec = thing_notes();
  // Parent 25 has a note; the other 49 have none.
  Walk w(spec, [](const std::string& path, const FakeApi::Query&) {
    const bool has_note = path.find("things/25/") != std::string::npos;
    return FakeApi::ok(FakeApi::page(has_note ? std::vector<std::string>{record_json(2500, at_second(1))}
                                              : std::vector<std::string>{},
                                     false, fmt::format(R"("page":1,"pageSize":5000,"totalCount":{})", has_note)));
  });
  for (int p = 1; p <= 50; ++p) w.store.data().parents.push_back(ParentRow{std::to_string(p), 1000 + p});
  const JobResult r = w.run();  // the fake clock stands still: no second passes
  REQUIRE(r.outcome == JobOutcome::succeeded);
  CHECK(w.api.requests.size() == 50);
  // The first empty parent (a second since the last write), parent 25's page, the walk's end.
  CHECK(w.store.data().commits == 2);
  CHECK(w.store.data().tokens_written.size() == 3);
  CHECK(w.store.data().state.list_cursor == std::optional<Ticks>(1050 * kTicksPerMicro));
  CHECK(w.store.live_keys() == std::vector<std::string>{"2500"});
}

TEST_CASE("a run that meets a defect releases the job's lock and lets the exception through", "[walk][outcome]") {
  Walk w(things(), [](const std::string&, const FakeApi::Query&) {
    return FakeApi::ok(FakeApi::page({record_json(1, at_second(1))}, false, R"("continueFrom":"end")"));
  });
  w.store.data().defect = true;
  CHECK_THROWS_AS(w.run(), std::out_of_range);  // the scheduler fails that job and goes on
  CHECK_FALSE(w.store.data().locked);
}

TEST_CASE("a parent the API no longer knows answers 404 and its rows are marked deleted while the walk goes on",
          "[walk][parents]") {
  const JobSpec spec = thing_notes();
  Walk w(spec, [](const std::string& path, const FakeApi::Query&) {
    if (path.find("things/12/") != std::string::npos) return FakeApi::status(404, R"({"title":"Thing not found"})");
    const std::string parent = path.substr(path.find("things/") + 7, 2);
    return FakeApi::ok(FakeApi::page({record_json(std::stoll(parent) * 100, at_second(1))}, false,
                                     R"("page":1,"pageSize":5000,"totalCount":1)"));
  });
  w.store.data().parents = {ParentRow{"11", 1000}, ParentRow{"12", 2000}, ParentRow{"13", 3000}};
  w.store.data().rows["1200"] = FakeStore::Row{at_second(1), "{}", "12", false};  // stored under parent 12
  const JobResult r = w.run();
  REQUIRE(r.outcome == JobOutcome::succeeded);
  CHECK(r.deleted == 1);
  CHECK(w.store.live_keys() == std::vector<std::string>{"1100", "1300"});
  CHECK(w.store.data().state.list_cursor == std::optional<Ticks>(3000 * kTicksPerMicro));
}

TEST_CASE("a stored token the server keeps failing on is left once for the date and a server that is down fails the job",
          "[walk][export]") {
  for (const bool down : {false, true}) {
    Walk w(things(), [&](const std::string&, const FakeApi::Query& q) {
      if (down || value_of(q, "from") == "choking-token") return FakeApi::status(503, R"({"title":"Service Unavailable"})");
      return FakeApi::ok(FakeApi::page({record_json(1, at_second(1))}, false, R"("continueFrom":"fresh-token")"));
    });
    w.settings.max_attempts = 3;
    w.store.data().state.export_token = "choking-token";
    w.store.data().state.complete_through = *parse_timestamp("2025-03-01T12:00:00Z");
    const JobResult r = w.run();
    if (down) {
      CHECK(r.outcome == JobOutcome::failed);
      CHECK(w.store.data().state.export_token == std::optional<std::string>("choking-token"));  // kept
    } else {
      CHECK(r.outcome == JobOutcome::succeeded);
      CHECK(w.store.data().state.export_token == std::optional<std::string>("fresh-token"));
    }
    CHECK(w.requests_with("from=choking-token").size() == 3);  // every attempt the client makes
    CHECK(w.requests_with("from=2025-03-01T11%3A55%3A00").size() == (down ? 3u : 1u));
  }
}
