#include "migrate.h"

#include <fmt/format.h>

#include <cstdlib>
#include <set>

#include "embedded.h"
#include "log.h"

namespace stsync {

namespace {
void lock_schema(PgConnection& db, const std::string& schema) {
  db.exec("SELECT pg_advisory_xact_lock(hashtextextended('stsync-migrate:' || $1, 0))", {schema});
}

// Creates `table` if missing as (leading, the typed columns, trailing), and adds typed columns
// the table lacks. Existing columns are never changed.
void ensure_table(PgConnection& db, const std::string& table, std::string_view leading,
                  const std::vector<ColumnSpec>& columns, std::string_view trailing) {
  std::string typed;
  for (const ColumnSpec& c : columns)
    typed += fmt::format("{} {}, ", db.quote_ident(c.name), column_type_sql(c.type));
  db.exec(fmt::format("CREATE TABLE IF NOT EXISTS {} ({}, {}{})", table, leading, typed, trailing));
  for (const ColumnSpec& c : columns)
    db.exec(fmt::format("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}", table, db.quote_ident(c.name),
                        column_type_sql(c.type)));
}

}  // namespace

void ensure_job_tables(PgConnection& db, const std::string& schema, const std::vector<JobSpec>& specs) {
  const std::string s = db.quote_ident(schema);
  db.exec("BEGIN");
  try {
    lock_schema(db, schema);
    for (const JobSpec& spec : specs) {
      ensure_table(db, s + "." + db.quote_ident(spec.table), "tenant_id bigint NOT NULL, id bigint NOT NULL",
                   spec.columns,
                   "modified_on timestamptz, active boolean NOT NULL, raw jsonb NOT NULL, "
                   "synced_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant_id, id)");
      for (const ChildSpec& child : spec.children)
        ensure_table(db, s + "." + db.quote_ident(child.table),
                     "tenant_id bigint NOT NULL, parent_id bigint NOT NULL, position integer NOT NULL",
                     child.columns,
                     "raw jsonb NOT NULL, synced_at timestamptz NOT NULL DEFAULT now(), "
                     "PRIMARY KEY (tenant_id, parent_id, position)");
    }
    db.exec("COMMIT");
  } catch (...) {
    db.rollback_quietly();
    throw;
  }
}

int apply_migrations(PgConnection& db, const std::string& schema) {
  const std::string s = db.quote_ident(schema);
  db.exec("BEGIN");
  try {
    lock_schema(db, schema);
    db.exec(fmt::format("CREATE SCHEMA IF NOT EXISTS {}", s));
    db.exec(fmt::format(
        "CREATE TABLE IF NOT EXISTS {}.schema_migrations (version integer PRIMARY KEY, "
        "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
        s));
    std::set<int> applied;
    PgResult r = db.exec(fmt::format("SELECT version FROM {}.schema_migrations", s));
    for (int i = 0; i < r.rows(); ++i) applied.insert(static_cast<int>(r.get_int(i, 0)));
    int count = 0;
    for (const EmbeddedFile& f : embedded_migrations()) {
      const int version = std::atoi(std::string(f.name).c_str());
      if (version <= 0 || applied.count(version)) continue;
      std::string sql(f.content);
      for (size_t pos; (pos = sql.find("{{schema}}")) != std::string::npos;) sql.replace(pos, 10, s);
      try {
        db.exec(sql);
      } catch (const PgError& e) {
        throw PgError(e.kind(), fmt::format("migration {} failed: {}", f.name, e.what()), e.sqlstate(),
                      e.context());
      }
      db.exec(fmt::format("INSERT INTO {}.schema_migrations (version, name) VALUES ($1, $2)", s),
              {std::to_string(version), std::string(f.name)});
      log::info("applied migration {} to schema {}", f.name, schema);
      ++count;
    }
    db.exec("COMMIT");
    return count;
  } catch (...) {
    db.rollback_quietly();
    throw;
  }
}

}  // namespace stsync
