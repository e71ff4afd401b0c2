#include "status.h"

#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <map>

#include "copy_text.h"
#include "errors.h"
#include "pg.h"

namespace stsync {

std::string render_status(const Settings& settings, bool json) {
  PgConnection db(settings.database_url, session_options(settings));
  const std::string s = db.quote_ident(settings.schema);
  PgResult exists = db.exec("SELECT to_regclass($1) IS NOT NULL",
                            {s + ".sync_state"});
  if (exists.get(0, 0) != "t") return json ? "[]\n" : "No sync state yet: run `stsync run` (or `stsync migrate`).\n";

  // Row counts per (job, tenant) from each job's table.
  std::map<std::pair<std::string, std::string>, std::string> rows;
  for (const JobSpec& spec : load_job_specs(settings.jobs_dir)) {
    PgResult present = db.exec("SELECT to_regclass($1) IS NOT NULL", {s + "." + db.quote_ident(spec.table)});
    if (present.get(0, 0) != "t") continue;
    // Live rows: those the API still returns (deleted_at marks the ones it stopped returning).
    const bool has_deleted_at =
        db.exec("SELECT count(*) FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'deleted_at' "
                "AND NOT attisdropped",
                {s + "." + db.quote_ident(spec.table)})
            .get_int(0, 0) > 0;
    PgResult r = db.exec(fmt::format("SELECT tenant_id, count(*){} FROM {}.{} GROUP BY tenant_id",
                                     has_deleted_at ? " FILTER (WHERE deleted_at IS NULL)" : "", s,
                                     db.quote_ident(spec.table)));
    for (int i = 0; i < r.rows(); ++i) rows[{spec.name, r.get(i, 0)}] = r.get(i, 1);
  }
  std::map<std::pair<std::string, std::string>, std::string> quarantined;
  if (db.exec("SELECT to_regclass($1) IS NOT NULL", {s + ".quarantine"}).get(0, 0) == "t") {
    // Records a later `stsync quarantine --retry` stored are no longer counted (stored_at is
    // read through to_jsonb so that this works on a schema older than the column, too).
    PgResult q = db.exec(fmt::format("SELECT job, tenant_id, count(*) FROM {}.quarantine q "
                                     "WHERE to_jsonb(q) ->> 'stored_at' IS NULL GROUP BY 1, 2",
                                     s));
    for (int i = 0; i < q.rows(); ++i) quarantined[{q.get(i, 0), q.get(i, 1)}] = q.get(i, 2);
  }
  auto lookup = [](const auto& map, const std::string& job, const std::string& tenant) {
    auto it = map.find({job, tenant});
    return it == map.end() ? std::string("0") : it->second;
  };
  PgResult r = db.exec(fmt::format(
      "SELECT st.tenant_id, st.job, st.export_token IS NOT NULL, "
      "  coalesce(to_char(st.watermark AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), ''), "
      "  coalesce(r.outcome, ''), "
      "  coalesce(to_char(r.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''), "
      "  coalesce(r.pages, 0), coalesce(r.rows_inserted, 0), coalesce(r.rows_updated, 0), "
      "  coalesce(to_char(st.last_success_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''), "
      "  coalesce(st.last_error, ''), "
      "  coalesce(extract(epoch FROM now() - coalesce(st.complete_through, st.watermark))::bigint, -1), "
      "  coalesce(extract(epoch FROM now() - st.last_success_at)::bigint, -1), "
      // A mark ahead of the clock: written under a wrong API clock (the next run repairs it).
      "  coalesce(greatest(st.complete_through, st.reconciled_at, st.watermark) > now() + make_interval(secs => $1), "
      "           false) "
      "FROM {0}.sync_state st LEFT JOIN {0}.sync_runs r ON r.run_id = st.last_run_id "
      "ORDER BY st.tenant_id, st.job",
      s), {fmt::format("{}", settings.max_clock_skew_seconds)});
  auto future = [&](int i) { return r.get(i, 13) == "t"; };
  // Stale: no success within twice the job's cadence (not-permitted jobs are not stale).
  std::map<std::string, int> every;
  for (const JobSpec& j : resolve_jobs(settings)) every[j.name] = j.every_seconds;
  auto stale = [&](int i) {
    if (future(i)) return true;
    if (r.get(i, 4) == "not_permitted") return false;
    const std::int64_t since = r.get_int(i, 12);
    auto it = every.find(r.get(i, 1));
    return since < 0 || since > 2 * (it == every.end() ? 3600 : it->second);
  };
  auto human = [](std::int64_t seconds) {
    if (seconds < 0) return std::string("-");
    if (seconds < 120) return fmt::format("{}s", seconds);
    if (seconds < 7200) return fmt::format("{}m", seconds / 60);
    if (seconds < 172800) return fmt::format("{}h", seconds / 3600);
    return fmt::format("{}d", seconds / 86400);
  };
  std::string out;
  if (json) {
    out = "[";
    for (int i = 0; i < r.rows(); ++i) {
      if (i) out += ",";
      out += fmt::format("\n  {{\"tenant\":{},\"job\":", r.get(i, 0));
      append_json_string(out, r.get(i, 1));
      out += fmt::format(",\"token_present\":{},\"watermark\":", r.get(i, 2) == "t" ? "true" : "false");
      append_json_string(out, r.get(i, 3));
      out += fmt::format(",\"rows\":{},\"quarantined\":{},\"last_run\":{{\"outcome\":",
                         lookup(rows, r.get(i, 1), r.get(i, 0)), lookup(quarantined, r.get(i, 1), r.get(i, 0)));
      append_json_string(out, r.get(i, 4));
      out += ",\"finished_at\":";
      append_json_string(out, r.get(i, 5));
      out += fmt::format(",\"pages\":{},\"rows_inserted\":{},\"rows_updated\":{}}},\"last_success_at\":",
                         r.get(i, 6), r.get(i, 7), r.get(i, 8));
      append_json_string(out, r.get(i, 9));
      out += ",\"last_error\":";
      if (r.get(i, 10).empty()) out += "null";
      else append_json_string(out, r.get(i, 10));
      out += fmt::format(",\"lag_seconds\":{},\"stale\":{},\"state_in_future\":{}}}",
                         r.get(i, 11) == "-1" || future(i) ? "null" : r.get(i, 11), stale(i) ? "true" : "false",
                         future(i) ? "true" : "false");
    }
    out += "\n]\n";
    return out;
  }
  const char* const row_format = "{:<20} {:<34} {:>9} {:>5} {:<5} {:<27} {:>5} {:<13} {:>6} {:>9} {:>9}  {}\n";
  out = fmt::format(fmt::runtime(row_format), "TENANT", "JOB", "ROWS", "QUAR", "TOKEN", "WATERMARK", "LAG",
                    "LAST RUN", "PAGES", "INSERTED", "UPDATED", "LAST SUCCESS / LAST ERROR");
  for (int i = 0; i < r.rows(); ++i) {
    std::string tail = r.get(i, 10).empty() ? r.get(i, 9) : "ERROR: " + r.get(i, 10);
    if (tail.size() > 120) tail = shorten_utf8(tail, 117) + "...";
    if (stale(i)) tail = "STALE " + tail;
    if (future(i)) tail = "STATE IN THE FUTURE (a wrong API clock; the next run repairs it) " + tail;
    out += fmt::format(fmt::runtime(row_format), r.get(i, 0), r.get(i, 1), lookup(rows, r.get(i, 1), r.get(i, 0)),
                       lookup(quarantined, r.get(i, 1), r.get(i, 0)), r.get(i, 2) == "t" ? "yes" : "no",
                       r.get(i, 3), human(r.get_int(i, 11)), r.get(i, 4), r.get(i, 6), r.get(i, 7), r.get(i, 8),
                       tail);
  }
  return out;
}

std::string render_jobs(const Settings& settings, bool json) {
  std::vector<JobSpec> specs = resolve_jobs(settings);
  // The last result per job (over the configured tenants), when the database can be read.
  std::map<std::string, std::string> last;
  try {
    PgConnection db(settings.database_url, session_options(settings));
    const std::string s = db.quote_ident(settings.schema);
    if (db.exec("SELECT to_regclass($1) IS NOT NULL", {s + ".sync_state"}).get(0, 0) == "t") {
      PgResult r = db.exec(fmt::format(
          "SELECT st.job, string_agg(DISTINCT coalesce(r.outcome, '-'), '/') FROM {0}.sync_state st "
          "LEFT JOIN {0}.sync_runs r ON r.run_id = st.last_run_id GROUP BY st.job",
          s));
      for (int i = 0; i < r.rows(); ++i) last[r.get(i, 0)] = r.get(i, 1);
    }
  } catch (const Error&) {
    // Not reachable: the list is still useful without the last results.
  }
  auto endpoint = [](const JobSpec& j) { return j.mode == SyncMode::export_feed ? j.export_path : j.list_path; };
  std::string out;
  if (json) {
    out = "[";
    for (size_t i = 0; i < specs.size(); ++i) {
      const JobSpec& j = specs[i];
      out += i ? ",\n  {\"job\":" : "\n  {\"job\":";
      append_json_string(out, j.name);
      out += ",\"table\":";
      append_json_string(out, j.table);
      out += fmt::format(",\"mode\":\"{}\",\"key\":", mode_name(j.mode));
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
  const char* const row_format = "{:<34} {:<8} {:<7} {:<24} {:<14} {}\n";
  out = fmt::format(fmt::runtime(row_format), "JOB (= TABLE)", "MODE", "ENABLED", "KEY", "LAST RESULT", "ENDPOINT");
  for (const JobSpec& j : specs) {
    auto it = last.find(j.name);
    std::string key = key_description(j);
    if (key.size() > 24) key = key.substr(0, 21) + "...";
    out += fmt::format(fmt::runtime(row_format), j.name, mode_name(j.mode), j.enabled ? "yes" : "no", key,
                       it == last.end() ? "-" : it->second, endpoint(j));
  }
  return out;
}

namespace {

// Per (tenant, job): the state, the last run and the sums over all runs, as the metrics and the
// staleness checks read them. Times in seconds since the epoch (0: never).
struct JobFigures {
  std::string tenant, job, last_outcome;
  double last_success = 0, lag = -1, last_duration = 0, now = 0;
  bool future_state = false;  // a mark ahead of the clock (written under a wrong API clock)
  std::int64_t inserted = 0, updated = 0, pages = 0, requests = 0, throttled = 0, retries = 0, failed = 0;
};

std::vector<JobFigures> read_figures(PgConnection& db, const std::string& schema, double max_clock_skew) {
  const std::string s = db.quote_ident(schema);
  std::vector<JobFigures> out;
  if (db.exec("SELECT to_regclass($1) IS NOT NULL", {s + ".sync_state"}).get(0, 0) != "t") return out;
  const bool counters = db.exec("SELECT count(*) FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass($1) "
                                "AND attname = 'requests'",
                                {s + ".sync_runs"})
                            .get_int(0, 0) > 0;
  PgResult r = db.exec(fmt::format(
      "SELECT st.tenant_id, st.job, coalesce(lr.outcome, ''), "
      "  coalesce(extract(epoch FROM st.last_success_at), 0), "
      "  coalesce(extract(epoch FROM now() - coalesce(st.complete_through, st.watermark)), -1), "
      "  coalesce(extract(epoch FROM lr.finished_at - lr.started_at), 0), "
      "  coalesce(agg.inserted, 0), coalesce(agg.updated, 0), coalesce(agg.pages, 0), {1}, "
      "  coalesce(agg.failed, 0), extract(epoch FROM now()), "
      "  coalesce(greatest(st.complete_through, st.reconciled_at, st.watermark) > now() + make_interval(secs => {3}), "
      "           false) "
      "FROM {0}.sync_state st LEFT JOIN {0}.sync_runs lr ON lr.run_id = st.last_run_id "
      "LEFT JOIN (SELECT tenant_id, job, sum(rows_inserted) AS inserted, sum(rows_updated) AS updated, "
      "  sum(pages) AS pages, {2} count(*) FILTER (WHERE outcome = 'failed') AS failed "
      "  FROM {0}.sync_runs GROUP BY 1, 2) agg ON agg.tenant_id = st.tenant_id AND agg.job = st.job "
      "ORDER BY 1, 2",
      s,
      counters ? "coalesce(agg.requests, 0), coalesce(agg.throttled, 0), coalesce(agg.retries, 0)" : "0, 0, 0",
      counters ? "sum(requests) AS requests, sum(throttled) AS throttled, sum(retries) AS retries," : "",
      max_clock_skew));
  for (int i = 0; i < r.rows(); ++i) {
    JobFigures f;
    f.tenant = r.get(i, 0);
    f.job = r.get(i, 1);
    f.last_outcome = r.get(i, 2);
    f.last_success = std::atof(r.get(i, 3).c_str());
    f.lag = std::atof(r.get(i, 4).c_str());
    f.last_duration = std::atof(r.get(i, 5).c_str());
    f.inserted = r.get_int(i, 6);
    f.updated = r.get_int(i, 7);
    f.pages = r.get_int(i, 8);
    f.requests = r.get_int(i, 9);
    f.throttled = r.get_int(i, 10);
    f.retries = r.get_int(i, 11);
    f.failed = r.get_int(i, 12);
    f.now = std::atof(r.get(i, 13).c_str());
    f.future_state = r.get(i, 14) == "t";
    out.push_back(std::move(f));
  }
  return out;
}

// Stale: no success within twice the job's cadence (a job that is not permitted is not stale).
bool is_stale(const JobFigures& f, const std::map<std::string, int>& every, double max_age = 0) {
  if (f.future_state) return true;  // it would read nothing until repaired
  if (f.last_outcome == "not_permitted") return false;
  double limit = max_age;
  if (limit <= 0) {
    auto it = every.find(f.job);
    limit = 2.0 * (it == every.end() ? 3600 : it->second);
  }
  return f.last_success <= 0 || f.now - f.last_success > limit;
}

std::map<std::string, int> cadences(const Settings& settings) {
  std::map<std::string, int> out;
  for (const JobSpec& j : resolve_jobs(settings)) out[j.name] = j.every_seconds;
  return out;
}

}  // namespace

std::string render_metrics(const Settings& settings) {
  PgConnection db(settings.database_url, session_options(settings));
  const std::vector<JobFigures> figures = read_figures(db, settings.schema, settings.max_clock_skew_seconds);
  const std::map<std::string, int> every = cadences(settings);
  struct Metric {
    const char* name;
    const char* type;
    const char* help;
    std::function<double(const JobFigures&)> value;
  };
  const std::vector<Metric> metrics = {
      {"stsync_last_success_timestamp_seconds", "gauge", "When the job last finished a run successfully (0: never).",
       [](const JobFigures& f) { return f.last_success; }},
      {"stsync_freshness_lag_seconds", "gauge",
       "Now minus the point up to which every change is stored (complete-through, else the watermark); -1: none yet.",
       [](const JobFigures& f) { return f.lag; }},
      {"stsync_stale", "gauge", "1 when the job has not succeeded within twice its cadence.",
       [&](const JobFigures& f) { return is_stale(f, every) ? 1.0 : 0.0; }},
      {"stsync_not_permitted", "gauge", "1 when the job's last run answered 403 (the app lacks the scope).",
       [](const JobFigures& f) { return f.last_outcome == "not_permitted" ? 1.0 : 0.0; }},
      {"stsync_last_run_duration_seconds", "gauge", "How long the job's last run took.",
       [](const JobFigures& f) { return f.last_duration; }},
      {"stsync_rows_inserted_total", "counter", "Rows the job inserted, over all runs.",
       [](const JobFigures& f) { return static_cast<double>(f.inserted); }},
      {"stsync_rows_updated_total", "counter", "Rows the job updated, over all runs.",
       [](const JobFigures& f) { return static_cast<double>(f.updated); }},
      {"stsync_pages_total", "counter", "Pages the job committed, over all runs.",
       [](const JobFigures& f) { return static_cast<double>(f.pages); }},
      {"stsync_requests_total", "counter", "API requests the job sent (every attempt), over all runs.",
       [](const JobFigures& f) { return static_cast<double>(f.requests); }},
      {"stsync_throttled_total", "counter", "429 answers the job received, over all runs.",
       [](const JobFigures& f) { return static_cast<double>(f.throttled); }},
      {"stsync_retries_total", "counter", "Requests the job retried, over all runs.",
       [](const JobFigures& f) { return static_cast<double>(f.retries); }},
      {"stsync_runs_failed_total", "counter", "Runs of the job that failed.",
       [](const JobFigures& f) { return static_cast<double>(f.failed); }},
  };
  std::string out;
  for (const Metric& m : metrics) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", m.name, m.help, m.name, m.type);
    for (const JobFigures& f : figures)
      out += fmt::format("{}{{tenant=\"{}\",job=\"{}\"}} {}\n", m.name, f.tenant, f.job, m.value(f));
  }
  return out;
}

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
  PgConnection db(settings.database_url, session_options(settings));
  std::vector<std::string> out;
  const std::map<std::string, int> every = max_age_seconds > 0 ? std::map<std::string, int>{} : cadences(settings);
  for (const JobFigures& f : read_figures(db, settings.schema, settings.max_clock_skew_seconds))
    if (is_stale(f, every, max_age_seconds))
      out.push_back(fmt::format("tenant {} job {}: {}", f.tenant, f.job,
                                f.future_state ? std::string("state in the future (a wrong API clock; the next run "
                                                             "repairs it)")
                                : f.last_success <= 0 ? std::string("never succeeded")
                                                    : fmt::format("last success {:.0f} s ago", f.now - f.last_success)));
  return out;
}

}  // namespace stsync
