#include "migrate.h"

#include <fmt/format.h>

#include <cstdlib>
#include <map>
#include <set>

#include "embedded.h"
#include "table_shape.h"
#include "log.h"

namespace stsync {

namespace {
void lock_schema(PgConnection& db, const std::string& schema) {
  db.exec("SELECT pg_advisory_xact_lock(hashtextextended('stsync-migrate:' || $1, 0))", {schema});
}

// Creates the table of `shape` if missing, and adds the typed (and later) columns it lacks.
// Existing columns are never changed. The catalog is read first: ALTER TABLE takes an ACCESS
// EXCLUSIVE lock even when the column exists ("ADD COLUMN IF NOT EXISTS"), and would queue behind
// any open reporting transaction, and every reader behind it. So a routine run alters nothing;
// only a really missing column is added, and then within lock_timeout.
// Sets the table's and its columns' COMMENTs where they differ from the shape's descriptions
// (`have`: column → its comment, "" for the table's own). COMMENT takes a lock that neither
// readers nor writers wait for; nothing is sent when every comment is current.
void ensure_comments(PgConnection& db, const std::string& table, const TableShape& shape,
                     const std::map<std::string, std::string>& have) {
  auto current = [&](const std::string& key) {
    const auto it = have.find(key);
    return it == have.end() ? std::string() : it->second;
  };
  std::string sql;
  if (!shape.description.empty() && current("") != shape.description)
    sql += fmt::format("COMMENT ON TABLE {} IS {};", table, db.quote_literal(shape.description));
  for (const TableColumn& c : shape.columns)
    if (!c.description.empty() && current(c.name) != c.description)
      sql += fmt::format("COMMENT ON COLUMN {}.{} IS {};", table, db.quote_ident(c.name), db.quote_literal(c.description));
  if (sql.empty()) return;
  // A comment is documentation: one that must wait (a VACUUM of the table holds the same lock)
  // is written by a later run rather than failing this one.
  db.exec("SAVEPOINT comments");
  try {
    db.exec(sql);
    db.exec("RELEASE SAVEPOINT comments");
  } catch (const PgError& e) {
    if (e.sqlstate() != sqlstate::lock_not_available) throw;
    db.exec("ROLLBACK TO SAVEPOINT comments");
    log::warn("the comments of table {} are left for a later run: {}", table, e.what());
  }
}

void ensure_table(PgConnection& db, const std::string& schema, const TableShape& shape) {
  const std::string table = db.quote_ident(schema) + "." + db.quote_ident(shape.table);
  PgResult existing = db.exec(
      "SELECT a.attname, coalesce(col_description(c.oid, a.attnum), ''), "
      "coalesce(obj_description(c.oid, 'pg_class'), ''), to_regclass($3) IS NOT NULL FROM pg_catalog.pg_class c "
      "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
      "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
      "WHERE n.nspname = $1 AND c.relname = $2",
      {schema, shape.table, db.quote_ident(schema) + "." + db.quote_ident(shape.change_index_name)});
  auto names = [&](const std::vector<std::string>& columns) {
    std::string out;
    for (const std::string& c : columns) out += (out.empty() ? "" : ", ") + db.quote_ident(c);
    return out;
  };
  if (existing.rows() == 0) {
    std::string columns;
    for (const TableColumn& c : shape.columns)
      columns += fmt::format("{} {}{}{}, ", db.quote_ident(c.name), c.sql_type, c.not_null ? " NOT NULL" : "",
                             c.default_sql.empty() ? "" : " DEFAULT " + c.default_sql);
    db.exec(fmt::format("CREATE TABLE IF NOT EXISTS {} ({}PRIMARY KEY ({}))", table, columns, names(shape.primary_key)));
    if (!shape.index.empty())
      db.exec(fmt::format("CREATE INDEX IF NOT EXISTS {} ON {} ({})", db.quote_ident(shape.index_name), table,
                          names(shape.index)));
    db.exec(fmt::format("CREATE INDEX IF NOT EXISTS {} ON {} (change_xid)", db.quote_ident(shape.change_index_name),
                        table));
    ensure_comments(db, table, shape, {});
    return;
  }
  std::set<std::string> have;
  std::map<std::string, std::string> comments;
  for (int i = 0; i < existing.rows(); ++i) {
    have.insert(existing.get(i, 0));
    comments[existing.get(i, 0)] = existing.get(i, 1);
    comments[""] = existing.get(i, 2);
  }
  for (const TableColumn& c : shape.addable_columns()) {
    if (have.count(c.name)) continue;
    try {
      // A volatile default (change_xid's) given with ADD COLUMN would rewrite the table under an
      // exclusive lock; set afterwards, it applies to new rows only, and existing ones stay NULL.
      db.exec(fmt::format("ALTER TABLE {0} ADD COLUMN IF NOT EXISTS {1} {2}{3}", table, db.quote_ident(c.name),
                          c.sql_type,
                          c.default_sql.empty() ? ""
                                                : fmt::format(", ALTER COLUMN {} SET DEFAULT {}",
                                                              db.quote_ident(c.name), c.default_sql)));
    } catch (const PgError& e) {
      if (e.sqlstate() != sqlstate::lock_not_available) throw;
      throw PgError(ErrorKind::db_fault,
                    fmt::format("cannot add column {} to table {}: another session (a report, a dump) holds a "
                                "lock on it ({}); nothing was changed and readers were not kept waiting. The "
                                "column is added by the first run that finds the table free: end that "
                                "transaction, or run `stsync migrate` in a quiet hour",
                                c.name, table, e.what()),
                    e.sqlstate(), e.context());
    }
  }
  // The change cursor's index on a table from before it (read with the columns above). CREATE
  // INDEX takes a SHARE lock: readers go on; writers (only stsync, holding the job's lock here)
  // wait for the build.
  if (existing.get(0, 3) != "t")
    db.exec(fmt::format("CREATE INDEX IF NOT EXISTS {} ON {} (change_xid)", db.quote_ident(shape.change_index_name),
                        table));
  ensure_comments(db, table, shape, comments);
}

// history = true. The current version of each row is the job table's own; an UPDATE (a merge's
// newer version, a row marked deleted or back) copies the version it replaces into
// <table>_history_past, by a statement-level trigger in the page's transaction, set-based (one
// INSERT per statement over its transition tables). The view <table>_history is both. A first
// load (all inserts) writes nothing more than without history.
void ensure_history(PgConnection& db, const std::string& schema, const JobSpec& spec) {
  const TableShape job = job_table_shape(spec);
  const TableShape past = history_table_shape(spec);
  ensure_table(db, schema, past);
  const std::string s = db.quote_ident(schema);
  const std::string table = s + "." + db.quote_ident(job.table);
  const std::string past_table = s + "." + db.quote_ident(past.table);
  const std::string view = s + "." + db.quote_ident(job.table + "_history");
  std::string columns, old_values, names;
  for (const TableColumn& c : job.columns) {
    columns += db.quote_ident(c.name) + ", ";
    old_values += "o." + db.quote_ident(c.name) + ", ";
    names += c.name + ",";
  }
  // A version begins at its modifiedOn, or when the row was found deleted (or, for a record
  // without modifiedOn, when stsync wrote it); it ends where the next begins (never before it).
  auto begins = [](const char* row) {
    return fmt::format("coalesce({0}.deleted_at, {0}.modified_on, {0}.synced_at)", row);
  };
  const std::string body = fmt::format(
      "\nBEGIN\n"
      "  INSERT INTO {0} ({1}valid_from, valid_to)\n"
      "  SELECT {2}{3}, greatest({3}, {4}) FROM old_rows o JOIN new_rows n ON n.tenant_id = o.tenant_id AND n.id = o.id;\n"
      "  RETURN NULL;\n"
      "END\n",
      past_table, columns, old_values, begins("o"), begins("n"));
  const std::string function = (job.table + "_history_fn").substr(0, 63);
  PgResult current = db.exec("SELECT p.prosrc FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON "
                             "n.oid = p.pronamespace WHERE n.nspname = $1 AND p.proname = $2",
                             {schema, function});
  if (current.rows() == 0 || current.get(0, 0) != body)
    db.exec(fmt::format("CREATE OR REPLACE FUNCTION {}.{}() RETURNS trigger LANGUAGE plpgsql AS $stsync${}$stsync$", s,
                        db.quote_ident(function), body));
  const std::string trigger = (job.table + "_history").substr(0, 63);
  if (db.exec("SELECT count(*) FROM pg_catalog.pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2",
              {table, trigger})
          .get_int(0, 0) == 0)
    db.exec(fmt::format("CREATE TRIGGER {} AFTER UPDATE ON {} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
                        "FOR EACH STATEMENT EXECUTE FUNCTION {}.{}()",
                        db.quote_ident(trigger), table, s, db.quote_ident(function)));
  // The view, made again when the table's columns changed (a job file gained one).
  names += "valid_from,valid_to,version_id";
  const std::string have =
      db.exec("SELECT coalesce(string_agg(attname, ',' ORDER BY attnum), '') FROM pg_catalog.pg_attribute WHERE "
              "attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
              {view})
          .get(0, 0);
  if (have != names) {
    db.exec(fmt::format("DROP VIEW IF EXISTS {}", view));
    db.exec(fmt::format("CREATE VIEW {0} AS SELECT {1}valid_from, valid_to, version_id FROM {2} UNION ALL "
                        "SELECT {1}{3}, NULL::timestamptz, NULL::bigint FROM {4} n",
                        view, columns, past_table, begins("n"), table));
    db.exec(fmt::format("COMMENT ON VIEW {} IS {}", view,
                        db.quote_literal("Every version stsync has seen of the rows of " + job.table +
                                         " (history = true): the past ones (from " + past.table +
                                         ") and the current one (valid_to NULL; deleted ones with deleted_at set). "
                                         "Versions between two syncs are unknowable.")));
  }
}

}  // namespace

void ensure_table_shape(PgConnection& db, const std::string& schema, const TableShape& shape) {
  ensure_table(db, schema, shape);
}

std::map<std::string, std::string> ensure_job_tables(PgConnection& db, const std::string& schema,
                                                     const std::vector<JobSpec>& specs) {
  std::map<std::string, std::string> failed;
  Transaction tx(db);
  lock_schema(db, schema);
  {
    for (const JobSpec& spec : specs) {
      if (spec.report) continue;  // a report job's table follows the report's fields (ReportRun)
      // One savepoint per job: a table that is busy fails that job only.
      db.exec("SAVEPOINT job_table");
      try {
        ensure_table(db, schema, job_table_shape(spec));
        for (const ChildSpec& child : spec.children) ensure_table(db, schema, child_table_shape(spec, child));
        if (spec.history) ensure_history(db, schema, spec);
        db.exec("RELEASE SAVEPOINT job_table");
      } catch (const PgError& e) {
        if (e.kind() != ErrorKind::db_fault) throw;
        db.exec("ROLLBACK TO SAVEPOINT job_table");
        failed[spec.name] = e.what();
      }
    }
  }
  tx.commit();
  return failed;
}

int apply_migrations(PgConnection& db, const std::string& schema) {
  const std::string s = db.quote_ident(schema);
  Transaction tx(db);
  lock_schema(db, schema);
  {
    // Only when it is missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on the
    // database even when the schema exists, which a least-privilege role that owns a
    // pre-created schema does not have.
    if (db.exec("SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = $1", {schema}).get_int(0, 0) == 0)
      db.exec(fmt::format("CREATE SCHEMA IF NOT EXISTS {}", s));
    // Migrations that need the schema's name inside a PL/pgSQL block read it from here.
    db.exec("SELECT set_config('stsync.schema', $1, true)", {schema});
    auto with_schema = [&](std::string sql) {
      for (size_t pos; (pos = sql.find("{{schema}}")) != std::string::npos;) sql.replace(pos, 10, s);
      return sql;
    };
    // schema/000_schema_migrations.sql: the list of applied versions (version 0: run every time).
    for (const EmbeddedFile& f : embedded_migrations())
      if (std::atoi(std::string(f.name).c_str()) == 0) db.exec(with_schema(std::string(f.content)));
    std::set<int> applied;
    PgResult r = db.exec(fmt::format("SELECT version FROM {}.schema_migrations", s));
    for (int i = 0; i < r.rows(); ++i) applied.insert(static_cast<int>(r.get_int(i, 0)));
    int count = 0;
    for (const EmbeddedFile& f : embedded_migrations()) {
      const int version = std::atoi(std::string(f.name).c_str());
      if (version <= 0 || applied.count(version)) continue;
      try {
        db.exec(with_schema(std::string(f.content)));
      } catch (const PgError& e) {
        throw PgError(e.kind(), fmt::format("migration {} failed: {}", f.name, e.what()), e.sqlstate(),
                      e.context());
      }
      db.exec(fmt::format("INSERT INTO {}.schema_migrations (version, name) VALUES ($1, $2)", s),
              {std::to_string(version), std::string(f.name)});
      log::info("applied migration {} to schema {}", f.name, schema);
      ++count;
    }
    tx.commit();
    return count;
  }
}

}  // namespace stsync
