#include "status.h"

#include <fmt/format.h>

#include <map>

#include "copy_text.h"
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
      "  coalesce(st.last_error, '') "
      "FROM {0}.sync_state st LEFT JOIN {0}.sync_runs r ON r.run_id = st.last_run_id "
      "ORDER BY st.tenant_id, st.job",
      s));
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
      out += "}";
    }
    out += "\n]\n";
    return out;
  }
  const char* const row_format = "{:<20} {:<34} {:>9} {:>5} {:<5} {:<27} {:<13} {:>6} {:>9} {:>9}  {}\n";
  out = fmt::format(fmt::runtime(row_format), "TENANT", "JOB", "ROWS", "QUAR", "TOKEN", "WATERMARK",
                    "LAST RUN", "PAGES", "INSERTED", "UPDATED", "LAST SUCCESS / LAST ERROR");
  for (int i = 0; i < r.rows(); ++i) {
    std::string tail = r.get(i, 10).empty() ? r.get(i, 9) : "ERROR: " + r.get(i, 10);
    if (tail.size() > 120) tail = tail.substr(0, 117) + "...";
    out += fmt::format(fmt::runtime(row_format), r.get(i, 0), r.get(i, 1), lookup(rows, r.get(i, 1), r.get(i, 0)),
                       lookup(quarantined, r.get(i, 1), r.get(i, 0)), r.get(i, 2) == "t" ? "yes" : "no",
                       r.get(i, 3), r.get(i, 4), r.get(i, 6), r.get(i, 7), r.get(i, 8), tail);
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

}  // namespace stsync
