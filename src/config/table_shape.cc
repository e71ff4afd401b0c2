#include "table_shape.h"

namespace stsync {

namespace {

using Role = TableColumn::Role;

// The change cursor: the id of the transaction that last wrote the row (inserted, updated,
// marked deleted), which a reader follows with one remembered number (README, "Reading changes").
// Added to existing tables without a default first (no rewrite), then given it.
TableColumn change_column() {
  TableColumn c;
  c.name = "change_xid";
  c.sql_type = "xid8";
  c.role = TableColumn::Role::database;
  c.default_sql = "pg_current_xact_id()";
  c.later = true;
  return c;
}

TableColumn column(std::string name, std::string type, Role role, bool not_null) {
  TableColumn c;
  c.name = std::move(name);
  c.sql_type = std::move(type);
  c.role = role;
  c.not_null = not_null;
  return c;
}

void add_typed(TableShape& s, const std::vector<ColumnSpec>& columns) {
  for (const ColumnSpec& spec : columns)
    s.columns.push_back(column(spec.name, std::string(column_type_sql(spec.type)), Role::typed, false));
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
  s.columns.push_back(column("tenant_id", "bigint", Role::key, true));
  s.columns.push_back(column("id", std::string(column_type_sql(spec.key_type)), Role::key, true));
  if (!spec.parent.empty())
    s.columns.push_back(column("parent_id", std::string(column_type_sql(spec.parent_key_type)), Role::parent, true));
  add_typed(s, spec.columns);
  // deleted_at came with a later version: in a table created now it stands where an added
  // column would, after the typed ones.
  TableColumn deleted_at = column("deleted_at", "timestamptz", Role::database, false);
  deleted_at.later = true;
  s.columns.push_back(deleted_at);
  s.columns.push_back(column("modified_on", "timestamptz", Role::record, false));
  s.columns.push_back(column("active", "boolean", Role::record, true));
  s.columns.push_back(column("raw", spec.raw_type, Role::record, true));
  TableColumn synced_at = column("synced_at", "timestamptz", Role::database, true);
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
  s.columns.push_back(column("tenant_id", "bigint", Role::key, true));
  s.columns.push_back(column("parent_id", std::string(column_type_sql(spec.key_type)), Role::key, true));
  s.columns.push_back(column("position", "integer", Role::key, true));
  add_typed(s, child.columns);
  s.columns.push_back(column("raw", "jsonb", Role::record, true));
  TableColumn synced_at = column("synced_at", "timestamptz", Role::database, true);
  synced_at.default_sql = "now()";
  s.columns.push_back(synced_at);
  s.columns.push_back(change_column());
  s.change_index_name = (child.table + "_change_idx").substr(0, 63);
  s.primary_key = {"tenant_id", "parent_id", "position"};
  return s;
}

std::vector<std::string> staging_columns(const JobSpec& spec) {
  std::vector<std::string> out;
  for (const TableColumn& c : job_table_shape(spec).row_columns()) out.push_back(c.name);
  out.push_back("ordinal");
  return out;
}

}  // namespace stsync
