#include "quarantine.h"
#include "connect.h"

#include <fmt/format.h>

#include <map>
#include <simdjson.h>

#include "copy_text.h"
#include "log.h"
#include "page_parser.h"
#include "pg.h"
#include "store.h"
#include "timestamp.h"

namespace stsync {
namespace {

std::string where_clause(const QuarantineFilter& f, Params& params) {
  std::string sql = " WHERE stored_at IS NULL";
  if (f.job) {
    params.push_back(*f.job);
    sql += fmt::format(" AND job = ${}", params.size());
  }
  if (f.tenant) {
    params.push_back(std::to_string(*f.tenant));
    sql += fmt::format(" AND tenant_id = ${}", params.size());
  }
  if (!f.ids.empty()) {
    std::string list;
    for (std::int64_t id : f.ids) list += (list.empty() ? "{" : ",") + std::to_string(id);
    params.push_back(list + "}");
    sql += fmt::format(" AND quarantine_id = ANY(${}::bigint[])", params.size());
  }
  return sql;
}

// True when the job's table holds the quarantined record's row at the same or a later
// modifiedOn: storing it now would change nothing (the guard keeps the newer row). Only for jobs
// keyed by a record id; a record without a readable id or modifiedOn is never superseded.
bool superseded(PgConnection& db, const std::string& schema, const JobSpec& spec, std::int64_t tenant,
                const std::string& record_id, const std::string& raw) {
  if (record_id.empty() || spec.key != std::vector<std::vector<std::string>>{{"id"}} || !spec.parent.empty())
    return false;
  // On demand: the value that got the record refused (a number beyond any double) is skipped,
  // not parsed.
  simdjson::ondemand::parser parser;
  const simdjson::padded_string json(raw);
  simdjson::ondemand::document doc;
  std::string_view modified;
  if (parser.iterate(json).get(doc) != simdjson::SUCCESS ||
      doc.find_field_unordered("modifiedOn").get_string().get(modified) != simdjson::SUCCESS || !parse_timestamp(modified))
    return false;
  const std::string table = db.quote_ident(schema) + "." + db.quote_ident(spec.table);
  if (db.exec("SELECT to_regclass($1) IS NOT NULL", {table}).get(0, 0) != "t") return false;
  return db.exec(fmt::format("SELECT count(*) FROM {} WHERE tenant_id = $1 AND id = $2 AND modified_on >= $3::timestamptz",
                             table),
                 {std::to_string(tenant), record_id, std::string(modified)})
             .get_int(0, 0) > 0;
}

}  // namespace

std::optional<std::vector<QuarantinedRow>> quarantined_records(const Settings& settings,
                                                               const QuarantineFilter& filter) {
  auto connection = connect(settings);
  PgConnection& db = *connection;
  const std::string s = db.quote_ident(settings.schema);
  if (db.exec("SELECT to_regclass($1) IS NOT NULL", {s + ".quarantine"}).get(0, 0) != "t") return std::nullopt;
  Params params;
  const std::string where = where_clause(filter, params);
  PgResult r = db.exec(fmt::format("SELECT quarantine_id, tenant_id, job, coalesce(record_id::text, ''), "
                                   "to_char(seen_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), page, error "
                                   "FROM {}.quarantine{} ORDER BY quarantine_id DESC",
                                   s, where),
                       params);
  std::vector<QuarantinedRow> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back(QuarantinedRow{r.get(i, 0), r.get(i, 1), r.get(i, 2), r.get(i, 3), r.get(i, 4), r.get(i, 5), r.get(i, 6)});
  return out;
}

QuarantineRetry retry_quarantine(const Settings& settings, const QuarantineFilter& filter) {
  PgConnection db(settings.database_url, session_options(settings));
  const std::string s = db.quote_ident(settings.schema);
  QuarantineRetry result;
  if (db.exec("SELECT to_regclass($1) IS NOT NULL", {s + ".quarantine"}).get(0, 0) != "t") return result;
  Params params;
  const std::string where = where_clause(filter, params);
  PgResult r = db.exec(
      fmt::format("SELECT quarantine_id, tenant_id, job, raw, coalesce(record_id::text, '') FROM {}.quarantine{} "
                  "ORDER BY quarantine_id",
                  s, where),
      params);
  std::map<std::string, JobSpec> specs;
  for (JobSpec& spec : resolve_jobs(settings)) {
    // A record that is still refused must stay here with its new error: never quarantine twice.
    spec.quarantine = false;
    specs.emplace(spec.name, std::move(spec));
  }
  for (int i = 0; i < r.rows(); ++i) {
    const std::string qid = r.get(i, 0);
    const std::int64_t tenant = r.get_int(i, 1);
    auto spec = specs.find(r.get(i, 2));
    if (spec == specs.end()) {
      log::warn("quarantine {}: job {} is not enabled or no longer exists; left as it is", qid, r.get(i, 2));
      ++result.skipped;
      continue;
    }
    JobStore store(db, settings.schema, spec->second, tenant);
    if (!store.try_lock()) {
      log::warn("quarantine {}: job {} tenant {} is running elsewhere; left for later", qid, spec->first, tenant);
      ++result.skipped;
      continue;
    }
    if (superseded(db, settings.schema, spec->second, tenant, r.get(i, 4), r.get(i, 3))) {
      db.exec(fmt::format("DELETE FROM {}.quarantine WHERE quarantine_id = $1", s), {qid});
      ++result.superseded;
      log::info("quarantine {}: job {} tenant {} record {}: the table holds this version or a newer one; dropped", qid,
                spec->first, tenant, r.get(i, 4));
      store.unlock();
      continue;
    }
    std::string body = "{\"data\":[" + r.get(i, 3) + "]}";
    std::string error;
    try {
      PageParser parser(spec->second, settings.max_json_depth);
      ParsedPage page;
      parser.parse(body, tenant, page);
      store.commit_page(page, nullptr, 0, "quarantine " + qid);
      db.exec(fmt::format("UPDATE {}.quarantine SET stored_at = now() WHERE quarantine_id = $1", s), {qid});
      ++result.stored;
      log::info("quarantine {}: job {} tenant {} record stored", qid, spec->first, tenant);
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::bad_data) {
        store.unlock();
        throw;
      }
      db.exec(fmt::format("UPDATE {}.quarantine SET error = $2, seen_at = now() WHERE quarantine_id = $1", s),
              {qid, e.what()});
      ++result.refused;
      log::warn("quarantine {}: job {} tenant {}: still refused: {}", qid, spec->first, tenant, e.what());
    }
    store.unlock();
  }
  return result;
}

int discard_quarantine(const Settings& settings, const QuarantineFilter& filter, bool confirm) {
  PgConnection db(settings.database_url, session_options(settings));
  const std::string s = db.quote_ident(settings.schema);
  if (db.exec("SELECT to_regclass($1) IS NOT NULL", {s + ".quarantine"}).get(0, 0) != "t") return 0;
  Params params;
  const std::string where = where_clause(filter, params);
  if (!confirm)
    return static_cast<int>(db.exec(fmt::format("SELECT count(*) FROM {}.quarantine{}", s, where), params).get_int(0, 0));
  PgResult r = db.exec(fmt::format("DELETE FROM {}.quarantine{} RETURNING quarantine_id, job, tenant_id", s, where), params);
  for (int i = 0; i < r.rows(); ++i)
    log::info("quarantine {}: job {} tenant {}: discarded", r.get(i, 0), r.get(i, 1), r.get(i, 2));
  return r.rows();
}

}  // namespace stsync
