// A report job's run: the report described (its fields become the table's columns), then read
// day by day, each day's rows replacing the stored ones with the job's state in one transaction.
#include "report_run.h"

#include <simdjson.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "copy_text.h"
#include "log.h"
#include "stop.h"

namespace stsync {
namespace {

constexpr Ticks kDay = 86400LL * kTicksPerSecond;

std::string day_of(Ticks t) { return format_timestamp(t, 0).substr(0, 10); }
Ticks midnight(const std::string& day) { return parse_timestamp(day).value_or(0); }

// FNV-1a, 64 bits, of the day's columns and rows: equal digests, equal days.
std::string digest_of(const std::vector<std::string>& columns, std::string_view rows) {
  std::uint64_t h = 1469598103934665603ULL;
  auto add = [&](std::string_view s) {
    for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  };
  for (const std::string& c : columns) {
    add(c);
    add("\t");
  }
  add("\n");
  add(rows);
  return fmt::format("{:016x}", h);
}

// A value as text: a string as it is, anything else as its JSON.
std::string as_text(simdjson::dom::element v) {
  std::string_view s;
  if (v.get_string().get(s) == simdjson::SUCCESS) return std::string(s);
  return simdjson::minify(v);
}

bool is_number(std::string_view s) {
  if (s.empty() || s.size() > 100) return false;
  const std::string text(s);
  char* end = nullptr;
  std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size() && text.find_first_of("xXnN") == std::string::npos;  // no hex, nan, inf
}

// The value's text as a column of `type` takes it; nullopt when it does not fit that type.
std::optional<std::string> typed_text(simdjson::dom::element v, const std::string& type) {
  if (type == "text") return as_text(v);
  std::string_view s;
  const bool is_string = v.get_string().get(s) == simdjson::SUCCESS;
  if (type == "numeric") {
    if (v.is_number()) return simdjson::minify(v);
    if (is_string && is_number(s)) return std::string(s);
    return std::nullopt;
  }
  if (type == "boolean") {
    bool b = false;
    if (v.get_bool().get(b) == simdjson::SUCCESS) return b ? "true" : "false";
    if (is_string && (s == "true" || s == "false" || s == "True" || s == "False"))
      return s[0] == 't' || s[0] == 'T' ? "true" : "false";
    return std::nullopt;
  }
  if (type == "date") {
    // A day, or a day at midnight (how the API writes a date): anything with an hour is not one.
    if (!is_string || s.size() < 10 || !parse_timestamp(s.substr(0, 10))) return std::nullopt;
    std::string_view rest = s.substr(10);
    if (!rest.empty() && rest.back() == 'Z') rest.remove_suffix(1);
    if (!rest.empty() && rest.substr(0, 9) != "T00:00:00") return std::nullopt;
    if (rest.size() > 9 && (rest[9] != '.' || rest.substr(10).find_first_not_of('0') != std::string_view::npos))
      return std::nullopt;
    return std::string(s.substr(0, 10));
  }
  return std::nullopt;
}

}  // namespace

std::vector<std::string> report_days(const ReportSpec& report, const std::optional<std::string>& complete_through,
                                     const std::string& today, bool full_refresh) {
  Ticks first = midnight(report.start_date);
  if (complete_through && !full_refresh)
    first = std::max(first, midnight(*complete_through) - report.lookback_days * kDay);
  std::vector<std::string> out;
  for (Ticks d = first; d <= midnight(today); d += kDay) out.push_back(day_of(d));
  return out;
}

std::string complete_through_after(const std::string& day, const std::string& today) {
  return day_of(std::min(midnight(day) + kDay, midnight(today) - kDay));
}

std::string fields_signature(const std::vector<ReportOutput>& fields) {
  std::string out;
  for (const ReportOutput& f : fields) out += (out.empty() ? "" : ";") + f.name + ":" + f.type;
  return out;
}

std::vector<std::string> field_changes(const std::string& before, const std::string& now) {
  auto parse = [](const std::string& sig) {
    std::vector<std::pair<std::string, std::string>> out;
    size_t start = 0;
    while (start < sig.size()) {
      size_t end = sig.find(';', start);
      if (end == std::string::npos) end = sig.size();
      const std::string item = sig.substr(start, end - start);
      const size_t colon = item.rfind(':');
      out.emplace_back(item.substr(0, colon), colon == std::string::npos ? "" : item.substr(colon + 1));
      start = end + 1;
    }
    return out;
  };
  const auto old_fields = parse(before), new_fields = parse(now);
  auto find = [](const auto& list, const std::string& name) {
    return std::find_if(list.begin(), list.end(), [&](const auto& f) { return f.first == name; });
  };
  std::vector<std::string> out;
  for (const auto& [name, type] : new_fields) {
    const auto it = find(old_fields, name);
    if (it == old_fields.end()) out.push_back(fmt::format("field {} ({}) added: a new column", name, type));
    else if (it->second != type)
      out.push_back(fmt::format("field {} changed from {} to {}: its column holds text from now on", name, it->second,
                                type));
  }
  for (const auto& [name, type] : old_fields)
    if (find(new_fields, name) == new_fields.end())
      out.push_back(fmt::format("field {} removed: its column stays, empty (NULL) from now on", name));
  return out;
}

ReportRun::ReportRun(const Settings& settings, const JobSpec& spec, TenantSession& session, HttpTransport& transport,
                     ReportStore& store, Clock& clock, const RunOptions& options)
    : settings_(settings),
      spec_(spec),
      report_(*spec.report),
      session_(session),
      store_(store),
      clock_(clock),
      options_(options),
      budget_(settings.retry_budget_seconds),
      client_(settings, session, transport, clock, budget_) {
  result_.tenant = session.tenant().id;
  result_.job = spec.name;
}

std::string ReportRun::what(const std::string& day) const {
  return fmt::format("job {} tenant {} report {}/{}{}", spec_.name, session_.tenant().id, report_.category, report_.id,
                     day.empty() ? "" : " day " + day);
}

RunCounters ReportRun::run_counters() const {
  const auto& c = client_.counters();
  return {c.requests.load(), c.throttled.load(), c.retries.load()};
}

void ReportRun::prepare_columns(ReportState& state) {
  const ReportDescription description =
      describe_report(client_, session_.tenant().id, report_.category, report_.id);
  const std::string signature = fields_signature(description.fields);
  // Each change once: the signature is stored with the next day committed.
  if (state.fields && *state.fields != signature)
    for (const std::string& change : field_changes(*state.fields, signature))
      log::event(log::Level::warn, "report_changed", {}, "{}: the report's owner changed it: {}", what(""), change);
  state.fields = signature;
  fields_.clear();
  std::set<std::string> used;
  for (const ReportOutput& f : description.fields) {
    ReportColumn c{f.name, report_column_name(f.name), report_column_type(f.type), f.label};
    while (used.count(c.name)) c.name += "_2";  // two fields with one column name
    used.insert(c.name);
    fields_.push_back(c);
  }
  types_ = store_.columns();
  const bool missing = types_.empty() || std::any_of(fields_.begin(), fields_.end(), [&](const ReportColumn& c) {
                         return types_.count(c.name) == 0;
                       });
  if (missing) {
    store_.ensure_table(fields_);
    types_ = store_.columns();
  }
  for (const ReportColumn& c : fields_) {
    const std::string& have = types_[c.name];
    if (have == c.sql_type || have == "text") continue;
    store_.store_as_text(c.name);
    types_[c.name] = "text";
  }
}

const ReportColumn& ReportRun::column_of(const std::string& field) {
  for (const ReportColumn& c : fields_)
    if (c.field == field) return c;
  // The data names a field the description did not: kept, as text.
  ReportColumn c{field, report_column_name(field), "text", field};
  while (std::any_of(fields_.begin(), fields_.end(), [&](const ReportColumn& o) { return o.name == c.name; }))
    c.name += "_2";
  fields_.push_back(c);
  log::event(log::Level::warn, "report_changed", {}, "{}: the report answered field {}, which its description lacks: "
             "stored in text column {}", what(""), field, c.name);
  store_.ensure_table(fields_);
  types_ = store_.columns();
  return fields_.back();
}

void ReportRun::read_day(const std::string& day, ReportDay& out) {
  out = ReportDay{};
  out.day = day;
  RateLimiter& runs = session_.report_limiter(report_.id, settings_.report_runs, settings_.report_window_seconds);
  std::string body = "{\"parameters\":[";
  auto parameter = [&](const std::string& name, const std::string& json) {
    body += (body.back() == '[' ? "{\"name\":" : ",{\"name\":");
    append_json_string(body, name);
    body += ",\"value\":" + json + "}";
  };
  const std::string quoted_day = "\"" + day + "\"";
  if (!report_.date_parameter.empty()) parameter(report_.date_parameter, quoted_day);
  if (!report_.from_parameter.empty()) parameter(report_.from_parameter, quoted_day);
  if (!report_.to_parameter.empty()) parameter(report_.to_parameter, quoted_day);
  for (const auto& [name, value] : report_.parameters) parameter(name, value);
  body += "]}";
  std::vector<std::string> names;  // the fields of the day's first page
  std::vector<size_t> cols;        // their columns (indexes in fields_)
  simdjson::dom::parser parser;
  const std::string prefix = fmt::format("{}\t{}\t", session_.tenant().id, day);
  for (int page = 1;; ++page) {
    const std::string where = what(day) + (page > 1 ? fmt::format(" page {}", page) : "");
    if (page > 100000) throw Error(ErrorKind::bad_data, where + ": the report never says it has no more pages");
    runs.acquire();  // each request is a run of the report: 5 a minute
    if (stop_requested()) throw Error(ErrorKind::interrupted, fmt::format("{}: stopped by {}", where, stop_signal_name()));
    HttpResponse r = client_.post_json(
        fmt::format("reporting/v2/tenant/{}/report-category/{}/reports/{}/data?page={}&pageSize={}", session_.tenant().id,
                    url_encode(report_.category), report_.id, page, report_.page_size),
        body, where);
    try {
      simdjson::dom::element doc = parser.parse(r.body);
      std::vector<std::string> page_names;
      for (simdjson::dom::object f : doc["fields"].get_array())
        page_names.push_back(std::string(std::string_view(f["name"].get_string())));
      if (page == 1) {
        names = page_names;
        for (const std::string& n : names) {
          const ReportColumn& c = column_of(n);
          cols.push_back(static_cast<size_t>(&c - fields_.data()));
          out.columns.push_back(c.name);
        }
      } else if (page_names != names) {
        throw Error(ErrorKind::http_transient,
                    where + ": the report's fields changed while the day was read; the next run reads the day again");
      }
      simdjson::dom::array data = doc["data"].get_array();
      // First the values that do not fit their column's declared type: that column holds text
      // from now on (the API's declared types are not always what it sends).
      for (simdjson::dom::array row : data) {
        size_t i = 0;
        for (simdjson::dom::element v : row) {
          if (i >= cols.size())
            throw Error(ErrorKind::bad_data, fmt::format("{} row {}: more values than the {} fields; nothing of the day "
                                                         "was stored: report it (the report's answer is malformed)",
                                                         where, out.rows + 1, cols.size()));
          const ReportColumn& c = fields_[cols[i++]];
          std::string& type = types_[c.name];
          if (v.is_null() || type == "text" || typed_text(v, type)) continue;
          log::event(log::Level::warn, "report_value_untyped", {},
                     "{}: field {} sent {} where the report declares a {}: column {} holds text from now on", where,
                     c.field, simdjson::minify(v).substr(0, 60), type, c.name);
          store_.store_as_text(c.name);
          type = "text";
        }
      }
      for (simdjson::dom::array row : data) {
        ++out.rows;
        out.copy_rows += prefix;
        out.copy_rows += std::to_string(out.rows);
        size_t i = 0;
        for (simdjson::dom::element v : row) {
          out.copy_rows += '\t';
          const std::string& type = types_[fields_[cols[i++]].name];
          if (v.is_null()) {
            out.copy_rows += "\\N";
            continue;
          }
          std::string text = typed_text(v, type).value_or(as_text(v));
          replace_nul_in_text(text);
          append_copy_field(out.copy_rows, text);
        }
        for (; i < cols.size(); ++i) out.copy_rows += "\t\\N";  // a short row: the rest is empty
        out.copy_rows += '\n';
      }
      bool more = false;
      if (doc["hasMore"].get(more) != simdjson::SUCCESS) more = false;
      if (!more) break;
    } catch (const simdjson::simdjson_error& e) {
      throw Error(ErrorKind::bad_data, fmt::format("{}: the report's answer is not what the API documents ({}); nothing "
                                                   "of the day was stored",
                                                   where, e.what()));
    }
  }
  out.digest = digest_of(out.columns, out.copy_rows);
}

void ReportRun::commit_day(const ReportDay& day, bool unchanged, const ReportState& state, std::int64_t run_id) {
  for (int attempt = 1;; ++attempt) {
    try {
      const std::int64_t before = store_.store_day(day, unchanged, state, run_id);
      if (unchanged) {
        result_.counts.unchanged += day.rows;
      } else {
        const std::int64_t inserted = std::max<std::int64_t>(0, day.rows - before);
        result_.counts.inserted += inserted;
        result_.counts.updated += day.rows - inserted;
      }
      return;
    } catch (const PgError& e) {
      if (!e.retryable() || attempt > settings_.db_reconnect_attempts)
        throw PgError(e.kind(), fmt::format("{}: {}", what(day.day), e.what()), e.sqlstate(), e.context());
      if (e.kind() == ErrorKind::db_conflict) continue;
      const double wait = std::min(30.0, 0.5 * (1 << std::min(attempt - 1, 6)));
      log::warn("{}: {}; reconnecting in {:.1f} s ({} of {})", what(day.day), e.what(), wait, attempt,
                settings_.db_reconnect_attempts);
      clock_.sleep(wait);
      try {
        if (!store_.reconnect())
          throw Error(ErrorKind::db, what(day.day) + ": another run took this job while the connection was down; "
                                                     "stopping (it carries on from the committed days)");
      } catch (const PgError& again) {
        log::warn("{}: {}", what("reconnect"), again.what());
      }
    }
  }
}

JobResult ReportRun::run() {
  const log::JobContext context(spec_.name, session_.tenant().id);
  if (!store_.try_lock()) return skipped_run(result_);
  struct Unlock {
    ReportStore& store;
    ~Unlock() { store.unlock(); }
  } unlock{store_};
  std::int64_t run_id = 0;
  const double started = clock_.monotonic();
  try {
    if (options_.since)
      throw Error(ErrorKind::config, what("") + ": a report job cannot be backfilled with --since; it reads days: "
                                                "`stsync run --jobs " + spec_.name + " --full-refresh` reads every day "
                                                "from its start_date again");
    ReportState state = store_.load_state();
    run_id = store_.begin_run();
    log::event(log::Level::info, "job_started", {}, "job {} tenant {}: starting (report {}/{}{})", spec_.name,
               session_.tenant().id, report_.category, report_.id, options_.full_refresh ? ", full refresh" : "");
    prepare_columns(state);
    const std::string today = day_of(session_.server_now().value_or(now_ticks()));
    const std::vector<std::string> days = report_days(report_, state.complete_through, today, options_.full_refresh);
    const std::map<std::string, std::string> digests =
        days.empty() ? std::map<std::string, std::string>() : store_.day_digests(days.front(), days.back());
    for (const std::string& day : days) {
      if (options_.max_run_seconds > 0 && clock_.monotonic() - started >= options_.max_run_seconds)
        throw Error(ErrorKind::interrupted,
                    fmt::format("{}: --max-run-time of {:.0f} s reached before this day; the next run resumes here",
                                what(day), options_.max_run_seconds));
      log::JobContext::set_page(result_.pages + 1);
      ReportDay read;
      read_day(day, read);
      const auto stored = digests.find(day);
      ReportState next = state;
      const std::string through = complete_through_after(day, today);
      if (!next.complete_through || through > *next.complete_through) next.complete_through = through;
      commit_day(read, stored != digests.end() && stored->second == read.digest, next, run_id);
      state = next;
      ++result_.pages;
      if (options_.on_page)
        options_.on_page(session_.tenant().id, spec_.name, result_.pages,
                         result_.counts.inserted + result_.counts.updated + result_.counts.unchanged);
    }
    store_.finish_run(run_id, "succeeded", "", run_counters());
    log::event(log::Level::info, "job_succeeded",
               {{"pages", result_.pages},
                {"inserted", result_.counts.inserted},
                {"updated", result_.counts.updated},
                {"unchanged", result_.counts.unchanged},
                {"requests", static_cast<std::int64_t>(client_.counters().requests.load())}},
               "job {} tenant {}: done, {} day(s), {} row(s) new, {} replaced, {} unchanged", spec_.name,
               session_.tenant().id, result_.pages, result_.counts.inserted, result_.counts.updated,
               result_.counts.unchanged);
  } catch (const Error& e) {
    const bool denied = lacks_scope(e);
    result_.outcome = denied ? JobOutcome::not_permitted
                      : e.kind() == ErrorKind::interrupted ? JobOutcome::interrupted
                                                           : JobOutcome::failed;
    if (!denied) result_.error_kind = e.kind();
    result_.error = log::redact(e.what());
    if (result_.error.find(fmt::format("job {} tenant {}", spec_.name, session_.tenant().id)) == std::string::npos)
      result_.error = what("") + ": " + result_.error;
    if (denied)
      log::event(log::Level::warn, "job_not_permitted", {},
                 "{}: not permitted (403): the tenant's app may not run this report; grant the Reporting API scope and "
                 "the report's access in ServiceTitan, or remove the job",
                 what(""));
    else
      log::event(e.kind() == ErrorKind::interrupted ? log::Level::warn : log::Level::error,
                 e.kind() == ErrorKind::interrupted ? "job_interrupted" : "job_failed",
                 {{"pages", result_.pages}, {"inserted", result_.counts.inserted}}, "{}; {}", result_.error,
                 "the days stored so far are committed with the job's state: the next run resumes at the first day "
                 "not stored");
    record_unsuccessful_run(store_, run_id,
                            denied ? "not_permitted" : e.kind() == ErrorKind::interrupted ? "interrupted" : "failed",
                            result_.error, run_counters(), what(""));
  }
  result_.requests = client_.counters().requests.load();
  return result_;
}

}  // namespace stsync
