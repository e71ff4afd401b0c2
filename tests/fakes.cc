#include "fakes.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <stdexcept>
#include <tuple>

#include "copy_text.h"
#include "pg.h"
#include "timestamp.h"

namespace stsync::test {

namespace {

size_t column_index(const JobSpec& spec, const std::string& name) {
  const std::vector<std::string> cols = staging_columns(spec);
  const auto it = std::find(cols.begin(), cols.end(), name);
  return it == cols.end() ? cols.size() : static_cast<size_t>(it - cols.begin());
}

// Later or not: modifiedOn as the staging row holds it ("" or \N: none, older than any).
bool later(const std::string& incoming, const std::string& stored) {
  const std::optional<Ticks> a = incoming.empty() ? std::nullopt : parse_timestamp(incoming);
  const std::optional<Ticks> b = stored.empty() ? std::nullopt : parse_timestamp(stored);
  if (!a) return false;
  return !b || *a > *b;
}

}  // namespace

bool FakeStore::try_lock() {
  std::lock_guard lock(data_->mutex);
  if (data_->locked) return false;
  data_->locked = true;
  return true;
}

void FakeStore::end_run() noexcept {
  std::lock_guard lock(data_->mutex);
  if (!helper_) data_->locked = false;
}

JobState FakeStore::load_state() {
  std::lock_guard lock(data_->mutex);
  return data_->state;
}

MergeCounts FakeStore::commit_page(const ParsedPage& page, const JobState* state, std::int64_t, const std::string&,
                                   const CommitGates* gates) {
  {
    std::lock_guard lock(data_->mutex);
    if (data_->defect) throw std::out_of_range("a defect in the store");
    if (data_->connection_broken || data_->fail_commits > 0) {
      if (data_->fail_commits > 0) --data_->fail_commits;
      data_->connection_broken = true;
      throw PgError(ErrorKind::db_unavailable, "server closed the connection unexpectedly", "", "");
    }
  }
  if (gates && gates->before_merge) gates->before_merge();
  MergeCounts counts;
  {
    std::lock_guard lock(data_->mutex);
    const size_t id_at = column_index(spec_, "id"), modified_at = column_index(spec_, "modified_on"),
                 raw_at = column_index(spec_, "raw"), parent_at = column_index(spec_, "parent_id");
    for (size_t i = 0, begin = 0; i < page.row_ends.size(); begin = page.row_ends[i++]) {
      const std::string_view line = std::string_view(page.copy_rows).substr(begin, page.row_ends[i] - begin - 1);
      Row row;
      const std::string id = copy_row_field(line, id_at);
      row.modified = copy_row_field(line, modified_at);
      if (row.modified == "\\N") row.modified.clear();
      row.raw = copy_row_field(line, raw_at);
      if (!spec_.parent.empty()) row.parent = copy_row_field(line, parent_at);
      if (listing_) seen_.insert(id);
      auto it = data_->rows.find(id);
      if (it == data_->rows.end()) {
        data_->rows.emplace(id, row);
        ++counts.inserted;
      } else if (later(row.modified, it->second.modified) ||
                 (row.modified == it->second.modified && (row.raw != it->second.raw || it->second.deleted))) {
        it->second = row;
        ++counts.updated;
      } else {
        ++counts.unchanged;
      }
    }
  }
  if (gates && gates->after_merge) gates->after_merge();
  if (gates && gates->before_state) gates->before_state();
  std::lock_guard lock(data_->mutex);
  ++data_->commits;
  if (state) {
    data_->state = *state;
    data_->tokens_written.push_back(state->export_token);
  }
  return counts;
}

void FakeStore::begin_listing() {
  listing_ = true;
  listing_lost_ = false;
  seen_.clear();
}

std::vector<std::string> FakeStore::unseen_rows(const std::optional<std::string>& parent) {
  std::lock_guard lock(data_->mutex);
  std::vector<std::string> out;
  for (const auto& [id, row] : data_->rows)
    if (!row.deleted && (!parent || row.parent == *parent) && !seen_.count(id)) out.push_back(id);
  return out;
}

std::int64_t FakeStore::mark_deleted(const std::vector<std::string>& ids, const JobState* state, std::int64_t) {
  std::lock_guard lock(data_->mutex);
  std::int64_t marked = 0;
  for (const std::string& id : ids) {
    auto it = data_->rows.find(id);
    if (it != data_->rows.end() && !it->second.deleted) {
      it->second.deleted = true;
      ++marked;
    }
  }
  if (state) {
    data_->state = *state;
    data_->tokens_written.push_back(state->export_token);
  }
  return marked;
}

void FakeStore::finish_run(std::int64_t, std::string_view outcome, const std::string&, const RunCounters&) {
  std::lock_guard lock(data_->mutex);
  data_->outcomes.emplace_back(outcome);
}

bool FakeStore::connected() const {
  std::lock_guard lock(data_->mutex);
  return !data_->connection_broken;
}

bool FakeStore::reconnect() {
  std::lock_guard lock(data_->mutex);
  data_->connection_broken = false;
  ++data_->reconnects;
  if (listing_) listing_lost_ = true;  // the remembered keys died with the session
  return true;
}

DatabaseClock FakeStore::database_clock() {
  std::lock_guard lock(data_->mutex);
  return DatabaseClock{data_->database_now, std::nullopt};
}

std::vector<ParentRow> FakeStore::changed_parents(const std::optional<Ticks>& since,
                                                  const std::optional<ParentRow>& after, int limit) {
  std::lock_guard lock(data_->mutex);
  std::vector<ParentRow> all = data_->parents;
  std::sort(all.begin(), all.end(), [](const ParentRow& a, const ParentRow& b) {
    return std::tie(a.synced_micros, a.id) < std::tie(b.synced_micros, b.id);
  });
  std::vector<ParentRow> out;
  for (const ParentRow& p : all) {
    if (since && p.synced_micros * kTicksPerMicro <= *since) continue;
    if (after && std::tie(p.synced_micros, p.id) <= std::tie(after->synced_micros, after->id)) continue;
    if (static_cast<int>(out.size()) == limit) break;
    out.push_back(p);
  }
  return out;
}

std::unique_ptr<JobStorage> FakeStore::open_helper() {
  auto helper = std::make_unique<FakeStore>(spec_, data_);
  helper->helper_ = true;
  return helper;
}

std::vector<std::string> FakeStore::live_keys() {
  std::lock_guard lock(data_->mutex);
  std::vector<std::string> out;
  for (const auto& [id, row] : data_->rows)
    if (!row.deleted) out.push_back(id);
  return out;
}

HttpResponse FakeApi::ok(const std::string& json) {
  HttpResponse r;
  r.status = 200;
  r.body.reserve(json.size() + simdjson::SIMDJSON_PADDING);  // as the real transport leaves it
  r.body = json;
  r.content_type = "application/json";
  r.date = format_http_date(now_ticks());
  return r;
}

HttpResponse FakeApi::status(long code, const std::string& json) {
  HttpResponse r = ok(json);
  r.status = code;
  return r;
}

std::string FakeApi::page(const std::vector<std::string>& records, bool has_more, const std::string& more) {
  std::string data;
  for (const std::string& r : records) data += (data.empty() ? "" : ",") + r;
  return fmt::format(R"({{"data":[{}],"hasMore":{}{}{}}})", data, has_more ? "true" : "false", more.empty() ? "" : ",",
                     more);
}

HttpResponse FakeApi::perform(const HttpRequest& request) {
  if (request.url.find("/connect/token") != std::string::npos)
    return ok(R"({"access_token":"fake-token","token_type":"Bearer","expires_in":3600})");
  // http://host/path?query → path and its decoded parameters.
  const size_t host_end = request.url.find('/', request.url.find("://") + 3);
  const std::string rest = request.url.substr(host_end + 1);
  const size_t q = rest.find('?');
  const std::string path = rest.substr(0, q);
  Query query;
  if (q != std::string::npos) {
    const std::string text = rest.substr(q + 1);
    for (size_t at = 0; at <= text.size();) {
      size_t end = text.find('&', at);
      if (end == std::string::npos) end = text.size();
      const std::string pair = text.substr(at, end - at);
      const size_t eq = pair.find('=');
      std::string value = eq == std::string::npos ? "" : pair.substr(eq + 1), decoded;
      for (size_t i = 0; i < value.size(); ++i) {
        if (value[i] == '%' && i + 2 < value.size()) {
          decoded += static_cast<char>(std::stoi(value.substr(i + 1, 2), nullptr, 16));
          i += 2;
        } else {
          decoded += value[i] == '+' ? ' ' : value[i];
        }
      }
      query.emplace(pair.substr(0, eq), decoded);
      at = end + 1;
    }
  }
  {
    std::lock_guard lock(mutex_);
    requests.push_back(rest);
  }
  return handler_(path, query);
}

std::string record_json(std::int64_t id, const std::string& modified_on, const std::string& created_on) {
  return fmt::format(R"({{"id":{},"modifiedOn":"{}","createdOn":"{}","active":true,"name":"record {}"}})", id,
                     modified_on, created_on.empty() ? modified_on : created_on, id);
}

}  // namespace stsync::test
