#include "status.h"

#include "connect.h"
#include "figures.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "copy_text.h"
#include "errors.h"
#include "pg.h"
#include "suggest.h"

namespace stsync {

namespace {

std::map<std::string, int> cadences(const Settings& settings) {
  std::map<std::string, int> out;
  for (const JobSpec& j : resolve_jobs(settings)) out[j.name] = j.every_seconds;
  return out;
}

// The one staleness rule: no success within `max_age` (0: twice the job's cadence). A job that is
// not permitted is not stale; a state in the future is (it would read nothing until repaired).
bool is_stale(const JobFigures& f, const std::map<std::string, int>& every, double max_age = 0) {
  if (f.future_state) return true;
  if (f.last_outcome == "not_permitted") return false;
  double limit = max_age;
  if (limit <= 0) {
    auto it = every.find(f.job);
    limit = 2.0 * (it == every.end() ? 3600 : it->second);
  }
  return f.last_success <= 0 || f.now - f.last_success > limit;
}

// Failing: the job has not succeeded since its last error (a 403 is "not permitted", not failing).
bool is_failing(const JobFigures& f) { return !f.last_error.empty() && f.last_outcome != "not_permitted"; }

std::string human_seconds(double value) {
  const auto seconds = static_cast<std::int64_t>(value);
  if (seconds < 0) return "-";
  if (seconds < 120) return fmt::format("{}s", seconds);
  if (seconds < 7200) return fmt::format("{}m", seconds / 60);
  if (seconds < 172800) return fmt::format("{}h", seconds / 3600);
  return fmt::format("{}d", seconds / 86400);
}

// A cadence as written in a job file: the largest unit that divides it (1h, 90m, 2d).
std::string cadence_text(int seconds) {
  if (seconds > 0 && seconds % 86400 == 0) return fmt::format("{}d", seconds / 86400);
  if (seconds > 0 && seconds % 3600 == 0) return fmt::format("{}h", seconds / 3600);
  if (seconds > 0 && seconds % 60 == 0) return fmt::format("{}m", seconds / 60);
  return fmt::format("{}s", seconds);
}

void append_json_or_null(std::string& out, const std::string& value) {
  if (value.empty()) out += "null";
  else append_json_string(out, value);
}

std::string render_tenants(const std::vector<JobFigures>& figures, const std::map<std::string, int>& every,
                           const std::map<std::pair<std::string, std::string>, std::int64_t>& quarantine, bool json) {
  struct Tenant {
    std::string id;
    int jobs = 0, ok = 0, failing = 0, stale = 0, not_permitted = 0, future = 0;
    std::int64_t quarantined = 0;
    double worst_lag = -1, last_run = 0;
    std::string worst_lag_job, last_run_text;
    std::vector<std::string> attention;  // the failing and stale jobs, by name
  };
  std::vector<Tenant> tenants;
  for (const JobFigures& f : figures) {
    if (tenants.empty() || tenants.back().id != f.tenant) {
      tenants.emplace_back();
      tenants.back().id = f.tenant;
    }
    Tenant& t = tenants.back();
    ++t.jobs;
    const bool failing = is_failing(f), stale = is_stale(f, every), denied = f.last_outcome == "not_permitted";
    t.failing += failing;
    t.stale += stale;
    t.not_permitted += denied;
    t.future += f.future_state;
    t.ok += !failing && !stale && !denied;
    if (failing || stale) t.attention.push_back(f.job);
    if (!denied && !f.future_state && f.lag > t.worst_lag) {
      t.worst_lag = f.lag;
      t.worst_lag_job = f.job;
    }
    if (f.last_finished_at > t.last_run) {
      t.last_run = f.last_finished_at;
      t.last_run_text = f.last_finished;
    }
    auto q = quarantine.find({f.job, f.tenant});
    if (q != quarantine.end()) t.quarantined += q->second;
  }
  std::string out;
  if (json) {
    out = "[";
    for (size_t i = 0; i < tenants.size(); ++i) {
      const Tenant& t = tenants[i];
      out += fmt::format("{}\n  {{\"tenant\":{},\"jobs\":{},\"ok\":{},\"failing\":{},\"stale\":{},\"not_permitted\":{},"
                         "\"state_in_future\":{},\"quarantined\":{},\"worst_lag_seconds\":",
                         i ? "," : "", t.id, t.jobs, t.ok, t.failing, t.stale, t.not_permitted, t.future,
                         t.quarantined);
      out += t.worst_lag < 0 ? std::string("null") : fmt::format("{:.0f}", t.worst_lag);
      out += ",\"worst_lag_job\":";
      append_json_or_null(out, t.worst_lag_job);
      out += ",\"last_run_at\":";
      append_json_or_null(out, t.last_run_text);
      out += ",\"attention\":[";
      for (size_t k = 0; k < t.attention.size(); ++k) {
        if (k) out += ",";
        append_json_string(out, t.attention[k]);
      }
      out += "]}";
    }
    return out + "\n]\n";
  }
  const char* const row_format = "{:<20} {:>5} {:>5} {:>7} {:>5} {:>7} {:>6}  {:<28} {:<20}  {}\n";
  out = fmt::format(fmt::runtime(row_format), "TENANT", "JOBS", "OK", "FAILING", "STALE", "DENIED", "QUAR",
                    "WORST LAG", "LAST RUN", "ATTENTION");
  int jobs = 0, ok = 0, failing = 0, stale = 0, denied = 0;
  for (const Tenant& t : tenants) {
    std::string lag = human_seconds(t.worst_lag);
    if (t.worst_lag >= 0) lag += " (" + shorten_utf8(t.worst_lag_job, 20) + ")";
    std::string attention;
    if (t.future) attention = fmt::format("STATE IN THE FUTURE ({} job(s); the next run repairs it) ", t.future);
    for (size_t k = 0; k < t.attention.size() && k < 3; ++k) attention += (k ? ", " : "") + t.attention[k];
    if (t.attention.size() > 3) attention += fmt::format(" and {} more", t.attention.size() - 3);
    out += fmt::format(fmt::runtime(row_format), t.id, t.jobs, t.ok, t.failing, t.stale, t.not_permitted,
                       t.quarantined, lag, t.last_run_text.empty() ? "-" : t.last_run_text, attention);
    jobs += t.jobs, ok += t.ok, failing += t.failing, stale += t.stale, denied += t.not_permitted;
  }
  out += fmt::format("{} tenant(s), {} job(s): {} ok, {} failing, {} stale, {} not permitted.{}\n", tenants.size(),
                     jobs, ok, failing, stale, denied,
                     failing + stale > 0 ? " `stsync status --failed` / `--stale` / `--tenant ID` list the jobs."
                                         : " `stsync status --tenant ID` lists a tenant's jobs.");
  return out;
}

}  // namespace

std::string render_status(const Settings& settings, const StatusOptions& options) {
  std::set<std::string> known;
  for (const JobSpec& j : resolve_jobs(settings)) known.insert(j.name);
  if (!options.job.empty() && !known.count(options.job))
    throw Error(ErrorKind::config,
                fmt::format("status --job: unknown job '{}'{} (`stsync jobs` lists them)", options.job,
                            did_you_mean(options.job, std::vector<std::string>(known.begin(), known.end()))));
  auto connection = connect(settings);
  PgConnection& db = *connection;
  const SchemaShape shape = probe_schema(db, settings.schema);
  if (!shape.state) return options.json ? "[]\n" : "No sync state yet: run `stsync run` (or `stsync migrate`).\n";
  std::vector<JobFigures> figures =
      read_figures(db, settings.schema, shape, settings.max_clock_skew_seconds, false, options.tenant);
  const std::map<std::string, int> every = cadences(settings);
  const auto quarantine = quarantined(db, settings.schema);
  if (!options.per_job()) return render_tenants(figures, every, quarantine, options.json);

  std::erase_if(figures, [&](const JobFigures& f) {
    return (!options.job.empty() && f.job != options.job) || (options.failed && !is_failing(f)) ||
           (options.stale && !is_stale(f, every));
  });
  std::set<std::string> jobs;
  for (const JobFigures& f : figures) jobs.insert(f.job);
  const auto rows = live_rows(db, settings, jobs, options.tenant);
  auto row_count = [&](const JobFigures& f) {
    auto it = rows.find({f.job, f.tenant});
    return it == rows.end() ? std::string("0") : it->second;
  };
  auto quarantine_count = [&](const JobFigures& f) {
    auto it = quarantine.find({f.job, f.tenant});
    return it == quarantine.end() ? std::int64_t{0} : it->second;
  };
  std::string out;
  if (options.json) {
    out = "[";
    for (size_t i = 0; i < figures.size(); ++i) {
      const JobFigures& f = figures[i];
      out += fmt::format("{}\n  {{\"tenant\":{},\"job\":", i ? "," : "", f.tenant);
      append_json_string(out, f.job);
      out += fmt::format(",\"token_present\":{},\"watermark\":", f.token ? "true" : "false");
      append_json_string(out, f.watermark);
      out += fmt::format(",\"rows\":{},\"quarantined\":{},\"last_run\":{{\"outcome\":", row_count(f),
                         quarantine_count(f));
      append_json_string(out, f.last_outcome);
      out += ",\"finished_at\":";
      append_json_string(out, f.last_finished);
      out += fmt::format(",\"pages\":{},\"rows_inserted\":{},\"rows_updated\":{}}},\"last_success_at\":", f.last_pages,
                         f.last_inserted, f.last_updated);
      append_json_string(out, f.last_success_text);
      out += ",\"last_error\":";
      append_json_or_null(out, f.last_error);
      out += fmt::format(",\"lag_seconds\":{},\"stale\":{},\"state_in_future\":{}}}",
                         f.lag < 0 || f.future_state ? std::string("null") : fmt::format("{:.0f}", f.lag),
                         is_stale(f, every) ? "true" : "false", f.future_state ? "true" : "false");
    }
    return out + "\n]\n";
  }
  const char* const row_format = "{:<20} {:<34} {:>9} {:>5} {:<5} {:<27} {:>5} {:<13} {:>6} {:>9} {:>9}  {}\n";
  out = fmt::format(fmt::runtime(row_format), "TENANT", "JOB", "ROWS", "QUAR", "TOKEN", "WATERMARK", "LAG",
                    "LAST RUN", "PAGES", "INSERTED", "UPDATED", "LAST SUCCESS / LAST ERROR");
  for (const JobFigures& f : figures) {
    std::string tail = f.last_error.empty() ? f.last_success_text : "ERROR: " + f.last_error;
    if (f.last_error.empty() && f.last_outcome == "interrupted")
      tail = "INTERRUPTED (resumes next run) " + f.last_success_text;
    if (tail.size() > 120) tail = shorten_utf8(tail, 117) + "...";
    if (is_stale(f, every)) tail = "STALE " + tail;
    if (f.future_state) tail = "STATE IN THE FUTURE (a wrong API clock; the next run repairs it) " + tail;
    out += fmt::format(fmt::runtime(row_format), f.tenant, f.job, row_count(f), quarantine_count(f),
                       f.token ? "yes" : "no", f.watermark, human_seconds(f.future_state ? -1 : f.lag),
                       f.last_outcome, f.last_pages, f.last_inserted, f.last_updated, tail);
  }
  if (figures.empty()) out += "(no job matches)\n";
  return out;
}

std::string render_jobs(const Settings& settings, bool json) {
  std::vector<JobSpec> specs = resolve_jobs(settings);
  // The last result per job (over the configured tenants), when the database can be read.
  std::map<std::string, std::string> last;
  try {
    last = last_outcomes(*connect(settings), settings.schema);
  } catch (const Error&) {
    // Not reachable: the list is still useful without the last results.
  }
  auto endpoint = [](const JobSpec& j) {
    if (j.report)
      return fmt::format("reporting/v2/tenant/{{tenant}}/report-category/{}/reports/{}/data", j.report->category,
                         j.report->id);
    return j.mode == SyncMode::export_feed ? j.export_path : j.list_path;
  };
  auto mode_of = [](const JobSpec& j) { return j.report ? std::string("report") : std::string(mode_name(j.mode)); };
  std::string out;
  if (json) {
    out = "[";
    for (size_t i = 0; i < specs.size(); ++i) {
      const JobSpec& j = specs[i];
      out += i ? ",\n  {\"job\":" : "\n  {\"job\":";
      append_json_string(out, j.name);
      out += ",\"table\":";
      append_json_string(out, j.table);
      out += fmt::format(",\"mode\":\"{}\",\"key\":", mode_of(j));
      append_json_string(out, key_description(j));
      out += ",\"parent\":";
      if (j.parent.empty()) out += "null";
      else append_json_string(out, j.parent);
      out += ",\"endpoint\":";
      append_json_string(out, endpoint(j));
      out += fmt::format(",\"enabled\":{},\"every_seconds\":{},\"children\":[", j.enabled ? "true" : "false",
                         j.every_seconds);
      for (size_t k = 0; k < j.children.size(); ++k) {
        if (k) out += ",";
        append_json_string(out, j.children[k].table);
      }
      out += "],\"last_result\":";
      auto it = last.find(j.name);
      if (it == last.end()) out += "null";
      else append_json_string(out, it->second);
      out += "}";
    }
    return out + "\n]\n";
  }
  const char* const row_format = "{:<34} {:<8} {:<7} {:>5} {:<24} {:<24} {:<30} {:<14} {}\n";
  out = fmt::format(fmt::runtime(row_format), "JOB (= TABLE)", "MODE", "ENABLED", "EVERY", "KEY", "PARENT",
                    "CHILD TABLES", "LAST RESULT", "ENDPOINT");
  auto cut = [](const std::string& text, size_t width) {
    return text.size() > width ? shorten_utf8(text, width - 3) + "..." : text;
  };
  for (const JobSpec& j : specs) {
    auto it = last.find(j.name);
    std::string children;
    for (const ChildSpec& c : j.children) children += (children.empty() ? "" : ",") + c.table;
    out += fmt::format(fmt::runtime(row_format), j.name, mode_of(j), j.enabled ? "yes" : "no",
                       cadence_text(j.every_seconds), cut(key_description(j), 24),
                       j.parent.empty() ? "-" : cut(j.parent, 24), children.empty() ? "-" : cut(children, 30),
                       it == last.end() ? "-" : it->second, endpoint(j));
  }
  return out;
}

namespace {

// The series of one metric: per (tenant, job), or aggregated per tenant or per job (fewer series
// for a fleet of hundreds of tenants; see the README for what each aggregate means).
std::string format_metrics(const std::vector<JobFigures>& figures, const std::map<std::string, int>& every,
                           MetricsBy by) {
  enum class Fold { min, max, sum };
  struct Metric {
    const char* name;
    const char* type;
    const char* help;
    Fold fold;
    std::function<double(const JobFigures&)> value;
  };
  const std::vector<Metric> metrics = {
      {"stsync_last_success_timestamp_seconds", "gauge",
       "When the job last finished a run successfully (0: never); aggregated: the oldest of the jobs.", Fold::min,
       [](const JobFigures& f) { return f.last_success; }},
      {"stsync_freshness_lag_seconds", "gauge",
       "Now minus the point up to which every change is stored (complete-through, else the watermark); -1: none yet; "
       "aggregated: the largest.",
       Fold::max, [](const JobFigures& f) { return f.lag; }},
      {"stsync_stale", "gauge",
       "1 when the job has not succeeded within twice its cadence; aggregated: how many jobs are stale.", Fold::sum,
       [&](const JobFigures& f) { return is_stale(f, every) ? 1.0 : 0.0; }},
      {"stsync_not_permitted", "gauge",
       "1 when the job's last run answered 403 (the app lacks the scope); aggregated: how many jobs.", Fold::sum,
       [](const JobFigures& f) { return f.last_outcome == "not_permitted" ? 1.0 : 0.0; }},
      {"stsync_last_run_duration_seconds", "gauge", "How long the job's last run took; aggregated: the longest.",
       Fold::max, [](const JobFigures& f) { return f.last_duration; }},
      {"stsync_rows_inserted_total", "counter", "Rows the job inserted, over all runs.", Fold::sum,
       [](const JobFigures& f) { return static_cast<double>(f.inserted); }},
      {"stsync_rows_updated_total", "counter", "Rows the job updated, over all runs.", Fold::sum,
       [](const JobFigures& f) { return static_cast<double>(f.updated); }},
      {"stsync_pages_total", "counter", "Pages the job committed, over all runs.", Fold::sum,
       [](const JobFigures& f) { return static_cast<double>(f.pages); }},
      {"stsync_requests_total", "counter", "API requests the job sent (every attempt), over all runs.", Fold::sum,
       [](const JobFigures& f) { return static_cast<double>(f.requests); }},
      {"stsync_throttled_total", "counter", "429 answers the job received, over all runs.", Fold::sum,
       [](const JobFigures& f) { return static_cast<double>(f.throttled); }},
      {"stsync_retries_total", "counter", "Requests the job retried, over all runs.", Fold::sum,
       [](const JobFigures& f) { return static_cast<double>(f.retries); }},
      {"stsync_runs_failed_total", "counter", "Runs of the job that failed.", Fold::sum,
       [](const JobFigures& f) { return static_cast<double>(f.failed); }},
  };
  auto labels = [&](const JobFigures& f) {
    switch (by) {
      case MetricsBy::tenant: return fmt::format("tenant=\"{}\"", f.tenant);
      case MetricsBy::job: return fmt::format("job=\"{}\"", f.job);
      default: return fmt::format("tenant=\"{}\",job=\"{}\"", f.tenant, f.job);
    }
  };
  std::string out;
  for (const Metric& m : metrics) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", m.name, m.help, m.name, m.type);
    // Groups in the order of their first row (figures come ordered by tenant, then job).
    std::vector<std::pair<std::string, double>> groups;
    std::map<std::string, size_t> index;
    for (const JobFigures& f : figures) {
      const std::string key = labels(f);
      const double v = m.value(f);
      auto [it, added] = index.emplace(key, groups.size());
      if (added) {
        groups.emplace_back(key, v);
        continue;
      }
      double& acc = groups[it->second].second;
      acc = m.fold == Fold::min ? std::min(acc, v) : m.fold == Fold::max ? std::max(acc, v) : acc + v;
    }
    for (const auto& [key, v] : groups) out += fmt::format("{}{{{}}} {}\n", m.name, key, v);
  }
  return out;
}

}  // namespace

MetricsSource::MetricsSource(const Settings& settings)
    : settings_(settings), every_(cadences(settings)) {}

MetricsSource::~MetricsSource() = default;

std::string MetricsSource::render() {
  if (!db_ || !db_->healthy()) {
    db_ = connect(settings_);
    shape_.reset();
  }
  // The schema's shape is read until it is complete (the first round applies the migrations);
  // from then on a scrape is one query.
  if (!shape_ || !shape_->state || !shape_->run_counters || !shape_->run_totals)
    shape_ = probe_schema(*db_, settings_.schema);
  const std::vector<JobFigures> figures =
      read_figures(*db_, settings_.schema, *shape_, settings_.max_clock_skew_seconds, true);
  return format_metrics(figures, every_, settings_.metrics_by);
}

std::string render_metrics(const Settings& settings) { return MetricsSource(settings).render(); }

void write_metrics_file(const Settings& settings, const std::string& path) {
  // node_exporter's textfile collector reads whatever is there: write aside, then rename.
  const std::string text = render_metrics(settings);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out) throw Error(ErrorKind::config, fmt::format("--metrics-file {}: cannot write {}", path, tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw Error(ErrorKind::config, fmt::format("--metrics-file {}: cannot rename {} onto it", path, tmp));
}

std::vector<std::string> stale_jobs(const Settings& settings, double max_age_seconds) {
  auto connection = connect(settings);
  PgConnection& db = *connection;
  std::vector<std::string> out;
  const std::map<std::string, int> every = max_age_seconds > 0 ? std::map<std::string, int>{} : cadences(settings);
  for (const JobFigures& f : read_figures(db, settings.schema, probe_schema(db, settings.schema),
                                         settings.max_clock_skew_seconds, false))
    if (is_stale(f, every, max_age_seconds))
      out.push_back(fmt::format("tenant {} job {}: {}", f.tenant, f.job,
                                f.future_state ? std::string("state in the future (a wrong API clock; the next run "
                                                             "repairs it)")
                                : f.last_success <= 0 ? std::string("never succeeded")
                                                    : fmt::format("last success {:.0f} s ago", f.now - f.last_success)));
  return out;
}

}  // namespace stsync
