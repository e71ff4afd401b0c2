#include "job_table_sql.h"

#include <fmt/format.h>

#include "table_shape.h"

namespace stsync {

std::string stored_keys_sql(const std::string& table, ColumnType key_type) {
  // One index probe per key, whatever the table's size or statistics. The probe is a LATERAL
  // subquery with a LIMIT, which the planner cannot turn into a join of its choosing. Simpler
  // forms are at the mercy of the statistics: on a table not analysed yet (a first load, before
  // autovacuum) the planner believes the tenant holds a few hundred rows and scans all of them
  // for every page, or worse, once per key (seen: 0.1 s on page 2 of a first load, 0.9 s on
  // page 10). For a key alone it has nothing cheaper than the primary key (a sequential scan
  // only of a table of a few pages, whose size it reads from the table itself, not from the
  // statistics).
  return fmt::format("SELECT count(*) FROM unnest($2::{}[]) AS k(id) CROSS JOIN LATERAL "
                     "(SELECT 1 FROM {} t WHERE t.tenant_id = $1 AND t.id = k.id LIMIT 1) AS stored",
                     column_type_sql(key_type), table);
}

std::vector<std::string> parse_pg_array(std::string_view text) {
  // {a,"b c","d\"e",NULL}: elements are bare or double-quoted with backslash escapes.
  std::vector<std::string> out;
  if (text.size() < 2 || text.front() != '{' || text.back() != '}') return out;
  size_t i = 1;
  const size_t end = text.size() - 1;
  while (i < end) {
    std::string element;
    if (text[i] == '"') {
      for (++i; i < end && text[i] != '"'; ++i) {
        if (text[i] == '\\' && i + 1 < end) ++i;
        element.push_back(text[i]);
      }
      ++i;  // the closing quote
    } else {
      while (i < end && text[i] != ',') element.push_back(text[i++]);
    }
    out.push_back(std::move(element));
    if (i < end && text[i] == ',') ++i;
  }
  return out;
}

std::string pg_array_literal(const std::vector<std::string>& elements) {
  std::string out = "{";
  for (size_t i = 0; i < elements.size(); ++i) {
    if (i) out += ',';
    out += '"';
    for (char c : elements[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

JobTableSql::JobTableSql(PgConnection& db, const std::string& schema_name, const JobSpec& spec, bool rewrite_children) {
  schema = db.quote_ident(schema_name);
  table = schema + "." + db.quote_ident(spec.table);
  stage = db.quote_ident("stsync_stage_" + spec.name);
  seen = db.quote_ident("stsync_seen_" + spec.name);

  const std::vector<std::string> cols = staging_columns(spec);
  std::string col_list, typed, set_list, stored_row, incoming_row;
  for (size_t i = 0; i < cols.size(); ++i) {
    if (i) col_list += ", ";
    col_list += db.quote_ident(cols[i]);
  }
  const TableShape shape = job_table_shape(spec);
  for (const TableColumn& c : shape.data_columns()) {
    typed += db.quote_ident(c.name) + ", ";
    set_list += fmt::format("{0} = EXCLUDED.{0}, ", db.quote_ident(c.name));
    stored_row += (stored_row.empty() ? "t." : ", t.") + db.quote_ident(c.name);
    incoming_row += (incoming_row.empty() ? "EXCLUDED." : ", EXCLUDED.") + db.quote_ident(c.name);
  }
  // Same version, different typed values: the job file changed (a new column, another type).
  const std::string typed_differ =
      stored_row.empty() ? "" : fmt::format(" OR ROW({}) IS DISTINCT FROM ROW({})", stored_row, incoming_row);
  copy_stage = fmt::format("COPY {} ({}) FROM STDIN", stage, col_list);
  // The same columns but the last (ordinal) name the job table's own; synced_at takes its
  // default, now(), which is what the merge writes, and deleted_at stays NULL.
  copy_direct = fmt::format("COPY {} ({}) FROM STDIN", table, col_list.substr(0, col_list.rfind(", ")));
  any_stored = stored_keys_sql(table, spec.key_type);
  // The raw column's type as the table has it (raw_type applies when a table is created): json
  // has no equality operator, so versions are compared as text (json keeps the text verbatim).
  {
    PgResult r = db.exec("SELECT format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a "
                         "WHERE a.attrelid = to_regclass($1) AND a.attname = 'raw' AND NOT a.attisdropped",
                         {table});
    raw_type = r.rows() == 1 ? r.get(0, 0) : spec.raw_type;
  }
  const bool json_raw = raw_type == "json";
  const std::string raw_differs =
      json_raw ? "EXCLUDED.raw::text IS DISTINCT FROM t.raw::text" : "EXCLUDED.raw IS DISTINCT FROM t.raw";
  const std::string raw_same = json_raw ? "t.raw::text = s.raw::text" : "t.raw = s.raw";
  // Per key, the newest version in the page wins (pages may repeat a row); then the guard: a row
  // replaces the stored one only if its modifiedOn is later, or equal with different content (the
  // raw record, or the typed values extracted from it).
  // Rows without modifiedOn count as older than any that have one.
  // Result columns of both forms: staged, inserted, updated, the inserted and the updated records
  // (ordinals in the page for the deduplicating form, ids for the other), and for a full refresh
  // the records whose children are rebuilt.
  const std::string guard =
      "  ON CONFLICT (tenant_id, id) DO UPDATE SET " + set_list + "modified_on = EXCLUDED.modified_on,"
      "    active = EXCLUDED.active, raw = EXCLUDED.raw, synced_at = EXCLUDED.synced_at,"
      "    change_xid = EXCLUDED.change_xid, deleted_at = NULL"
      "  WHERE coalesce(EXCLUDED.modified_on, '-infinity') > coalesce(t.modified_on, '-infinity')"
      "     OR (coalesce(EXCLUDED.modified_on, '-infinity') = coalesce(t.modified_on, '-infinity')"
      "         AND (" + raw_differs + typed_differ + " OR t.deleted_at IS NOT NULL))"
      "  RETURNING id, (xmax = 0) AS inserted";
  merge = fmt::format(
      "WITH src AS ("
      "  SELECT DISTINCT ON (id) * FROM {stage}"
      "  ORDER BY id, modified_on DESC NULLS LAST, ordinal DESC"
      "), up AS ("
      "  INSERT INTO {table} AS t (tenant_id, id, {typed}modified_on, active, raw, synced_at)"
      "  SELECT tenant_id, id, {typed}modified_on, active, raw, now() FROM src"
      "{guard}"
      ")"
      " SELECT (SELECT count(*) FROM src), count(*) FILTER (WHERE up.inserted),"
      "        count(*) FILTER (WHERE NOT up.inserted),"
      "        coalesce(array_agg(src.ordinal) FILTER (WHERE up.inserted), '{{}}'),"
      "        coalesce(array_agg(src.ordinal) FILTER (WHERE NOT up.inserted), '{{}}'), {rewrite}"
      " FROM up JOIN src USING (id)",
      fmt::arg("stage", stage), fmt::arg("table", table), fmt::arg("typed", typed), fmt::arg("guard", guard),
      // A full refresh also rebuilds the children of parents the merge left alone because the
      // stored row is the same version (the job file may have gained a child table); never of
      // parents whose stored row is newer than the page's. The join reads the stored rows as they
      // were before this statement: written rows are taken from `up`.
      fmt::arg("rewrite", rewrite_children
                              ? fmt::format("(SELECT coalesce(array_agg(s.ordinal), '{{}}') FROM src s LEFT JOIN up u "
                                            "USING (id) LEFT JOIN {} t ON t.tenant_id = s.tenant_id AND t.id = s.id "
                                            "WHERE u.id IS NOT NULL OR {})",
                                            table, raw_same)
                              : std::string("NULL")));
  // A page whose ids are all different (nearly every page) needs no sort: the same merge, straight
  // from staging, returning ids.
  merge_unique = fmt::format(
      "WITH up AS ("
      "  INSERT INTO {table} AS t (tenant_id, id, {typed}modified_on, active, raw, synced_at)"
      "  SELECT tenant_id, id, {typed}modified_on, active, raw, now() FROM {stage}"
      "{guard}"
      ")"
      " SELECT (SELECT count(*) FROM {stage}), count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted),"
      "        coalesce(array_agg(id) FILTER (WHERE inserted), '{{}}'),"
      "        coalesce(array_agg(id) FILTER (WHERE NOT inserted), '{{}}'), NULL FROM up",
      fmt::arg("stage", stage), fmt::arg("table", table), fmt::arg("typed", typed), fmt::arg("guard", guard));

  // Child rows are built by the page parser; per page, the children of the parents this merge
  // wrote are deleted and the page's rows for them are copied in. The delete finds them by one
  // primary-key probe per parent, whatever the table's size or statistics: written plainly
  // (tenant_id = $1 AND parent_id = ANY($2)), statistics that describe a smaller table make the
  // planner scan every child row of the tenant per page (seen: a bitmap scan on tenant_id alone,
  // 0.2 s a page at 720,000 child rows). The LATERAL subquery behind OFFSET 0 is planned on its
  // own, as a parameterized probe per parent; the rows go by their ctid (a TID scan). The job's
  // lock keeps every other writer of these rows away meanwhile.
  analyzable.push_back(table);
  for (const ChildSpec& child : spec.children) {
    const std::string child_q = schema + "." + db.quote_ident(child.table);
    analyzable.push_back(child_q);
    std::string names;
    for (const TableColumn& c : child_table_shape(spec, child).row_columns())
      names += (names.empty() ? "" : ", ") + db.quote_ident(c.name);
    children.push_back(Child{
        child.table,
        fmt::format("DELETE FROM {0} WHERE ctid = ANY (ARRAY(SELECT c.ctid FROM unnest($2::{1}[]) AS p(id) "
                    "CROSS JOIN LATERAL (SELECT ctid FROM {0} WHERE tenant_id = $1 AND parent_id = p.id OFFSET 0) c))",
                    child_q, column_type_sql(spec.key_type)),
        fmt::format("COPY {} ({}) FROM STDIN", child_q, names)});
  }
}

}  // namespace stsync
