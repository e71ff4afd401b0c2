// In-memory stand-ins for the outside world, for tests that need neither PostgreSQL nor HTTP:
// a clock that sleeps in no time, a job store that keeps one job's rows and state in maps (the
// JobStorage seam), and an API that answers from a handler (the HttpTransport seam).
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "http.h"
#include "job_storage.h"
#include "retry.h"

namespace stsync::test {

class FakeClock final : public Clock {
 public:
  double now = 1000;
  double slept = 0;
  double monotonic() override { return now; }
  void sleep(double s) override {
    now += s;
    slept += s;
  }
};

/// One job's table, state and run records in memory, with the merge's rule (a stored row is
/// replaced only by a later modifiedOn, or the same one with other content) and the listing's
/// bookkeeping. A helper (open_helper) shares everything with the store that opened it.
class FakeStore final : public JobStorage {
 public:
  struct Row {
    std::string modified;  // modifiedOn as stored (COPY text; empty: none)
    std::string raw;
    std::string parent;
    bool deleted = false;
  };
  struct Data {
    std::mutex mutex;
    std::map<std::string, Row> rows;
    JobState state;                          // as last committed
    std::vector<std::optional<std::string>> tokens_written;  // every committed state's export token, in order
    std::vector<std::string> outcomes;       // finish_run's outcomes, in order
    std::vector<ParentRow> parents;          // a per-parent job's parent table
    Ticks database_now = 0;
    bool locked = false;
    int commits = 0;
    int fail_commits = 0;                    // the next N commit_page calls fail: the connection broke
    bool connection_broken = false;
    bool defect = false;                     // commit_page throws std::out_of_range (a bug, not a condition)
    int reconnects = 0;
  };

  explicit FakeStore(const JobSpec& spec, std::shared_ptr<Data> data = std::make_shared<Data>())
      : spec_(spec), data_(std::move(data)) {}
  Data& data() { return *data_; }

  bool try_lock() override;
  void end_run() noexcept override;
  JobState load_state() override;
  std::optional<std::string> tables_problem(const JobState&) override { return std::nullopt; }
  std::int64_t begin_run(SyncMode) override { return 1; }
  MergeCounts commit_page(const ParsedPage& page, const JobState* state, std::int64_t run_id,
                          const std::string& where = {}, const CommitGates* gates = nullptr) override;
  void begin_listing() override;
  void end_listing() override { listing_ = false; }
  bool listing_intact() const override { return listing_ && !listing_lost_; }
  std::vector<std::string> unseen_rows(const std::optional<std::string>& parent) override;
  std::int64_t mark_deleted(const std::vector<std::string>& ids, const JobState* state, std::int64_t run_id) override;
  void refresh_statistics_if_stale() override {}
  void finish_run(std::int64_t, std::string_view outcome, const std::string&, const RunCounters&) override;
  bool connected() const override;
  bool reconnect() override;
  DatabaseClock database_clock() override;
  std::vector<ParentRow> changed_parents(const std::optional<Ticks>& since, const std::optional<ParentRow>& after,
                                         int limit) override;
  std::vector<std::string> rows_of_deleted_parents() override { return {}; }  // the fake's parents are never deleted
  std::unique_ptr<JobStorage> open_helper() override;

  /// The live rows' keys, sorted.
  std::vector<std::string> live_keys();

 private:
  const JobSpec& spec_;
  std::shared_ptr<Data> data_;
  bool helper_ = false;
  bool listing_ = false, listing_lost_ = false;
  std::set<std::string> seen_;
};

/// The API as a handler of (path, query parameters) → response; the token endpoint answers by
/// itself. Every request is recorded (path?query).
class FakeApi final : public HttpTransport {
 public:
  using Query = std::multimap<std::string, std::string>;
  using Handler = std::function<HttpResponse(const std::string& path, const Query& query)>;
  explicit FakeApi(Handler handler) : handler_(std::move(handler)) {}
  HttpResponse perform(const HttpRequest& request) override;
  std::vector<std::string> requests;  // resource requests, without the token's

  /// A 200 response with `json` as its body and a Date header of now.
  static HttpResponse ok(const std::string& json);
  static HttpResponse status(long code, const std::string& json = "{}");
  /// A page of records: {"data":[...],"hasMore":…} plus `more` fields (e.g. "continueFrom").
  static std::string page(const std::vector<std::string>& records, bool has_more, const std::string& more = "");

 private:
  Handler handler_;
  std::mutex mutex_;
};

/// One record as the API serves it.
std::string record_json(std::int64_t id, const std::string& modified_on, const std::string& created_on = "");

}  // namespace stsync::test
