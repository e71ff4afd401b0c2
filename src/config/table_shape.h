// The one definition of a job's tables: their columns in order, with types, from the job file.
// The DDL (db/migrate), the staging table and the merge (db/store) and the COPY rows the page
// parser writes (api/page_parser) are all generated from it, so they cannot disagree.
#pragma once
#include <string>
#include <vector>

#include "job_spec.h"

namespace stsync {

struct TableColumn {
  enum class Role {
    key,       // tenant_id and the row's key (a child row's: parent_id, position)
    parent,    // a per-parent job's parent_id
    typed,     // one of the job file's columns: a value taken from the record
    record,    // modified_on, active, raw: the record's version and the record itself
    database,  // set by PostgreSQL, not carried by a page: synced_at, deleted_at, change_xid
  };
  std::string name;
  std::string sql_type;     // "bigint", "timestamptz", "jsonb" …
  Role role = Role::typed;
  bool not_null = false;
  std::string default_sql;  // "now()" for synced_at
  bool later = false;       // missing from the table's first version: added to existing tables
  std::string description;  // the column's COMMENT
};

struct TableShape {
  std::string table;
  std::string description;  // the table's COMMENT
  /// Every column, in the table's order: for a job table tenant_id, id, [parent_id], the typed
  /// columns, deleted_at, modified_on, active, raw, synced_at, change_xid; for a child table
  /// tenant_id, parent_id, position, the typed columns, raw, synced_at, change_xid.
  std::vector<TableColumn> columns;
  std::vector<std::string> primary_key;
  /// The secondary index's columns (job tables: (tenant_id, modified_on), per-parent ones
  /// (tenant_id, parent_id); none for child tables) and its name.
  std::vector<std::string> index;
  std::string index_name;
  /// The index on change_xid that a reader of changes follows (created on tables that lack it).
  std::string change_index_name;

  /// The columns a page's rows carry, in COPY order.
  std::vector<TableColumn> row_columns() const;
  /// The columns a run adds to an existing table that lacks them: the typed ones (a job file
  /// gained a column) and the later ones.
  std::vector<TableColumn> addable_columns() const;
  /// The values a later version of a row may change besides its version: parent_id and the
  /// typed columns (the merge compares and sets them).
  std::vector<TableColumn> data_columns() const;
};

TableShape job_table_shape(const JobSpec& spec);
TableShape child_table_shape(const JobSpec& spec, const ChildSpec& child);
/// A history job's <table>_history_past (the versions its rows had before their current one):
/// every column of its job table (none NOT NULL, no defaults), then valid_from, valid_to and
/// version_id (the key); indexed by (tenant_id, id, valid_from).
TableShape history_table_shape(const JobSpec& spec);

/// A report's output field as a column of its report table.
struct ReportColumn {
  std::string field;     // the report's field name ("CompletedJobs")
  std::string name;      // the column ("completed_jobs")
  std::string sql_type;  // from the field's declared type (report_column_type)
  std::string label;     // the field's label (the column's COMMENT)
};
/// A report job's table: tenant_id, report_day, position (the key: a day's rows in the order the
/// report gave them), one column per field, synced_at, change_xid.
TableShape report_table_shape(const JobSpec& spec, const std::vector<ReportColumn>& fields);
/// The column of a report field: snake_case of its name, letters, digits and _ only, with
/// "_value" after a reserved keyword or a name of stsync's own columns.
std::string report_column_name(std::string_view field);
/// The column type of a declared field type: String → text, Number → numeric, Boolean →
/// boolean, Date → date; anything else (Time, unknown) → text.
std::string report_column_type(std::string_view data_type);

/// The staging table's columns, in COPY order: the job table's row columns (tenant_id, id,
/// [parent_id,] the typed columns, modified_on, active, raw), then ordinal.
std::vector<std::string> staging_columns(const JobSpec& spec);

}  // namespace stsync
