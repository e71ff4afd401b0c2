#include "table_shape.h"

namespace stsync {

namespace {

using Role = TableColumn::Role;

// The change cursor: the id of the transaction that last wrote the row (inserted, updated,
// marked deleted), which a reader follows with one remembered number (README, "Reading changes").
// Added to existing tables without a default first (no rewrite), then given it.
TableColumn change_column() {
  TableColumn c;
  c.description =
      "stsync: id of the transaction that last wrote this row (insert, update, deleted_at). Follow it with "
      "changes_since(NULL::<table>, last) and change_horizon() in one REPEATABLE READ transaction (README)";
  c.name = "change_xid";
  c.sql_type = "xid8";
  c.role = TableColumn::Role::database;
  c.default_sql = "pg_current_xact_id()";
  c.later = true;
  return c;
}

TableColumn column(std::string name, std::string type, Role role, bool not_null, std::string description = {}) {
  TableColumn c;
  c.description = std::move(description);
  c.name = std::move(name);
  c.sql_type = std::move(type);
  c.role = role;
  c.not_null = not_null;
  return c;
}

void add_typed(TableShape& s, const std::vector<ColumnSpec>& columns) {
  for (const ColumnSpec& spec : columns) {
    std::string path;
    for (const std::string& p : spec.path) path += (path.empty() ? "" : ".") + p;
    // The spec's description where it has one; else what the column is, so that every column
    // says where it comes from.
    std::string text = spec.description.empty() ? "the record's " + path + " (the API spec has no description)"
                                                : spec.description;
    s.columns.push_back(column(spec.name, std::string(column_type_sql(spec.type)), Role::typed, false,
                               text + " (from raw: " + path + ")"));
  }
}

// The last columns of a table whose rows stsync writes whole: synced_at and the change cursor
// (with its index's name).
void add_written(TableShape& s, const std::string& synced_description) {
  TableColumn synced_at = column("synced_at", "timestamptz", Role::database, true, synced_description);
  synced_at.default_sql = "now()";
  s.columns.push_back(synced_at);
  s.columns.push_back(change_column());
  s.change_index_name = (s.table + "_change_idx").substr(0, 63);
}

}  // namespace

std::vector<TableColumn> TableShape::row_columns() const {
  std::vector<TableColumn> out;
  for (const TableColumn& c : columns)
    if (c.role != Role::database) out.push_back(c);
  return out;
}

std::vector<TableColumn> TableShape::addable_columns() const {
  std::vector<TableColumn> out;
  for (const TableColumn& c : columns)
    if (c.role == Role::typed || c.later) out.push_back(c);
  return out;
}

std::vector<TableColumn> TableShape::data_columns() const {
  std::vector<TableColumn> out;
  for (const TableColumn& c : columns)
    if (c.role == Role::parent || c.role == Role::typed) out.push_back(c);
  return out;
}

TableShape job_table_shape(const JobSpec& spec) {
  TableShape s;
  s.table = spec.table;
  s.description = (spec.description.empty() ? "ServiceTitan " + spec.name : spec.description) +
                  ". Written by stsync job " + spec.name + "; one row per (tenant_id, id); rows the API no longer "
                  "returns keep their data with deleted_at set.";
  s.columns.push_back(column("tenant_id", "bigint", Role::key, true, "stsync: the ServiceTitan tenant the row belongs to"));
  s.columns.push_back(column("id", std::string(column_type_sql(spec.key_type)), Role::key, true,
                             spec.key.size() == 1 && spec.key[0] == std::vector<std::string>{"id"}
                                 ? "The record's id in ServiceTitan"
                                 : "stsync: the record's key (its key fields, or its position in its listing)"));
  if (!spec.parent.empty())
    s.columns.push_back(column("parent_id", std::string(column_type_sql(spec.parent_key_type)), Role::parent, true,
                               "stsync: the key of the " + spec.parent + " row this record was listed under"));
  add_typed(s, spec.columns);
  // deleted_at came with a later version: in a table created now it stands where an added
  // column would, after the typed ones.
  TableColumn deleted_at = column("deleted_at", "timestamptz", Role::database, false,
                                  "stsync: when stsync found the row gone from the API (hard delete); NULL while live");
  deleted_at.later = true;
  s.columns.push_back(deleted_at);
  s.columns.push_back(column("modified_on", "timestamptz", Role::record, false,
                             "The record's modifiedOn in ServiceTitan: its version (an older one never replaces a newer)"));
  s.columns.push_back(column("active", "boolean", Role::record, true,
                             "The record's active flag (false: deactivated in ServiceTitan; true when the record has none)"));
  s.columns.push_back(column("raw", spec.raw_type, Role::record, true, "The whole record as the API sent it"));
  TableColumn synced_at = column("synced_at", "timestamptz", Role::database, true,
                                 "stsync: start of the transaction that last wrote the row (not a change cursor: see change_xid)");
  synced_at.default_sql = "now()";
  s.columns.push_back(synced_at);
  s.columns.push_back(change_column());
  s.change_index_name = (spec.table + "_change_idx").substr(0, 63);
  s.primary_key = {"tenant_id", "id"};
  if (spec.parent.empty()) {
    s.index = {"tenant_id", "modified_on"};
    s.index_name = spec.table + "_modified_on_idx";
  } else {
    s.index = {"tenant_id", "parent_id"};
    s.index_name = spec.table + "_parent_idx";
  }
  return s;
}

TableShape child_table_shape(const JobSpec& spec, const ChildSpec& child) {
  TableShape s;
  s.table = child.table;
  std::string path;
  for (const std::string& p : child.path) path += (path.empty() ? "" : ".") + p;
  s.description = (child.description.empty() ? "One row per element of " + path + " of " + spec.name
                                             : child.description) +
                  ". Child table of " + spec.table + " (parent_id = " + spec.table + ".id), rewritten with its parent.";
  s.columns.push_back(column("tenant_id", "bigint", Role::key, true, "stsync: the ServiceTitan tenant the row belongs to"));
  s.columns.push_back(column("parent_id", std::string(column_type_sql(spec.key_type)), Role::key, true,
                             "stsync: the id of the " + spec.table + " row this element belongs to"));
  s.columns.push_back(column("position", "integer", Role::key, true, "stsync: the element's position in the array (1 for the first)"));
  add_typed(s, child.columns);
  s.columns.push_back(column("raw", "jsonb", Role::record, true, "The whole element as the API sent it"));
  add_written(s, "stsync: start of the transaction that last wrote the row (not a change cursor: see change_xid)");
  s.primary_key = {"tenant_id", "parent_id", "position"};
  return s;
}

TableShape history_table_shape(const JobSpec& spec) {
  TableShape s = job_table_shape(spec);
  s.table = spec.table + "_history_past";
  s.description = "The past versions of the rows of " + spec.table +
                  " (history = true), each valid from its modifiedOn (or when it was found deleted) until the "
                  "next version's; read them with the current ones through the view " + spec.table + "_history.";
  for (TableColumn& c : s.columns) {
    c.not_null = c.name == "tenant_id" || c.name == "id";
    c.default_sql.clear();  // every value is the job row's, copied by the trigger
  }
  TableColumn valid_from = column("valid_from", "timestamptz", Role::database, false,
                                  "stsync: when this version began: its modifiedOn, or when the row was found deleted");
  TableColumn valid_to = column("valid_to", "timestamptz", Role::database, false,
                                "stsync: when the next version began; NULL for the current one");
  TableColumn version_id = column("version_id", "bigint GENERATED ALWAYS AS IDENTITY", Role::database, true,
                                  "stsync: the version's key, in the order stsync wrote them");
  s.columns.push_back(valid_from);
  s.columns.push_back(valid_to);
  s.columns.push_back(version_id);
  s.primary_key = {"version_id"};
  s.index = {"tenant_id", "id", "valid_from"};
  s.index_name = (s.table + "_row_idx").substr(0, 63);
  s.change_index_name = (s.table + "_change_idx").substr(0, 63);
  return s;
}

TableShape report_table_shape(const JobSpec& spec, const std::vector<ReportColumn>& fields) {
  TableShape s;
  s.table = spec.table;
  s.description = spec.description + ". Written by stsync job " + spec.name +
                  "; a day's rows are replaced as a whole (sync_report_days says when).";
  s.columns.push_back(column("tenant_id", "bigint", Role::key, true, "stsync: the ServiceTitan tenant the row belongs to"));
  s.columns.push_back(column("report_day", "date", Role::key, true,
                             "stsync: the day the report was run for (its date parameter(s))"));
  s.columns.push_back(column("position", "integer", Role::key, true,
                             "stsync: the row's position in the report's answer for that day (1 for the first)"));
  for (const ReportColumn& f : fields)
    s.columns.push_back(column(f.name, f.sql_type, Role::typed, false,
                               (f.label.empty() ? f.field : f.label) + " (report field " + f.field + ")"));
  add_written(s, "stsync: start of the transaction that stored the day's rows");
  s.primary_key = {"tenant_id", "report_day", "position"};
  return s;
}

std::string report_column_name(std::string_view field) {
  std::string name;
  for (char c : snake_case(field)) {
    const bool word = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    if (!word && (c < 'A' || c > 'Z')) c = '_';
    if (c == '_' && (name.empty() || name.back() == '_')) continue;
    name.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
  }
  while (!name.empty() && name.back() == '_') name.pop_back();
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) name = "field_" + name;
  name = column_name_for(name);
  for (const char* own : {"tenant_id", "report_day", "position", "synced_at", "change_xid"})
    if (name == own) name += "_value";
  return name.substr(0, 63);
}

std::string report_column_type(std::string_view data_type) {
  if (data_type == "String") return "text";
  if (data_type == "Number") return "numeric";
  if (data_type == "Boolean") return "boolean";
  if (data_type == "Date") return "date";
  return "text";
}

std::vector<std::string> staging_columns(const JobSpec& spec) {
  std::vector<std::string> out;
  for (const TableColumn& c : job_table_shape(spec).row_columns()) out.push_back(c.name);
  out.push_back("ordinal");
  return out;
}

}  // namespace stsync
