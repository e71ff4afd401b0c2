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

// history = true: statement-level triggers on the job table copy every row an INSERT (a merge, a
// first load's COPY) or an UPDATE (a merge's new version, a row marked deleted) wrote into
// <table>_history, in the same transaction, closing the version each replaces. Set-based (one
// INSERT and one UPDATE per statement, over its transition table), written from the table's
// shape, replaced when the shape changes.
void ensure_history_trigger(PgConnection& db, const std::string& schema, const JobSpec& spec, bool seed) {
  const TableShape job = job_table_shape(spec);
  const std::string s = db.quote_ident(schema);
  const std::string table = s + "." + db.quote_ident(job.table);
  const std::string history = s + "." + db.quote_ident(job.table + "_history");
  std::string columns, values;
  for (const TableColumn& c : job.columns) {
    columns += db.quote_ident(c.name) + ", ";
    values += "n." + db.quote_ident(c.name) + ", ";
  }
  // A version begins at its modifiedOn, or when the row was found deleted (or, for a record
  // without modifiedOn, when stsync wrote it); it ends where the next begins (never before it).
  const std::string begins = "coalesce(n.deleted_at, n.modified_on, n.synced_at)";
  const std::string body = fmt::format(
      "\nBEGIN\n"
      "  UPDATE {0} h SET valid_to = greatest(h.valid_from, {3}) FROM new_rows n\n"
      "  WHERE h.tenant_id = n.tenant_id AND h.id = n.id AND h.valid_to IS NULL;\n"
      "  INSERT INTO {0} ({1}valid_from) SELECT {2}{3} FROM new_rows n;\n"
      "  RETURN NULL;\n"
      "END\n",
      history, columns, values, begins);
  const std::string function = (job.table + "_history_fn").substr(0, 63);
  PgResult current = db.exec("SELECT p.prosrc FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON "
                             "n.oid = p.pronamespace WHERE n.nspname = $1 AND p.proname = $2",
                             {schema, function});
  if (current.rows() == 0 || current.get(0, 0) != body)
    db.exec(fmt::format("CREATE OR REPLACE FUNCTION {}.{}() RETURNS trigger LANGUAGE plpgsql AS $stsync${}$stsync$", s,
                        db.quote_ident(function), body));
  for (const char* event : {"INSERT", "UPDATE"}) {
    const std::string trigger = (job.table + (event[0] == 'I' ? "_history_ins" : "_history_upd")).substr(0, 63);
    if (db.exec("SELECT count(*) FROM pg_catalog.pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2",
                {table, trigger})
            .get_int(0, 0) == 0)
      db.exec(fmt::format("CREATE TRIGGER {} AFTER {} ON {} REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
                          "EXECUTE FUNCTION {}.{}()",
                          db.quote_ident(trigger), event, table, s, db.quote_ident(function)));
  }
  // A history that starts on a table with rows: their current versions are the first it knows.
  if (seed)
    db.exec(fmt::format("INSERT INTO {0} ({1}valid_from) SELECT {2}{3} FROM {4} n", history, columns, values, begins,
                        table));
}

}  // namespace

std::map<std::string, std::string> ensure_job_tables(PgConnection& db, const std::string& schema,
                                                     const std::vector<JobSpec>& specs) {
  std::map<std::string, std::string> failed;
  Transaction tx(db);
  lock_schema(db, schema);
  {
    for (const JobSpec& spec : specs) {
      // One savepoint per job: a table that is busy fails that job only.
      db.exec("SAVEPOINT job_table");
      try {
        ensure_table(db, schema, job_table_shape(spec));
        for (const ChildSpec& child : spec.children) ensure_table(db, schema, child_table_shape(spec, child));
        if (spec.history) {
          const TableShape shape = history_table_shape(spec);
          const bool fresh = db.exec("SELECT to_regclass($1) IS NULL",
                                     {db.quote_ident(schema) + "." + db.quote_ident(shape.table)})
                                 .get(0, 0) == "t";
          ensure_table(db, schema, shape);
          ensure_history_trigger(db, schema, spec, fresh);
        }
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
