// The statements of one job's tables, generated from their shape (config/table_shape.h): the
// staging COPY, the guarded merge (two forms), the direct COPY of a page of new keys, the
// probe for stored keys, and per child table its delete and COPY.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "job_spec.h"
#include "pg.h"

namespace stsync {

/// A PostgreSQL array's text form ({a,"b c"}) → its elements; and back, every element quoted.
std::vector<std::string> parse_pg_array(std::string_view text);
std::string pg_array_literal(const std::vector<std::string>& elements);

/// The statement that counts how many of the keys $2 (an array) the job table `table` (quoted)
/// holds for tenant $1: one index probe per key, whatever the statistics say.
std::string stored_keys_sql(const std::string& table, ColumnType key_type);

struct JobTableSql {
  JobTableSql() = default;
  /// Reads the job table's raw column type from the catalog (the table decides, not the job
  /// file: raw_type applies when a table is created). `rewrite_children`: a full refresh, which
  /// rebuilds the children of every parent it wrote or found the same.
  JobTableSql(PgConnection& db, const std::string& schema_name, const JobSpec& spec, bool rewrite_children);

  std::string schema, table, stage, seen;  // quoted
  std::string raw_type;                    // "jsonb" or "json", as the table has it
  std::string copy_stage, copy_direct, any_stored, merge, merge_unique;
  struct Child {
    std::string table, delete_sql, copy_sql;
  };
  std::vector<Child> children;
  std::vector<std::string> analyzable;  // the job's table and its child tables, quoted
};

}  // namespace stsync
