// A job is data: one TOML file per resource in jobs/ (see jobs/invoices.toml).
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace stsync {

enum class ColumnType { bigint, integer, numeric, text, boolean, timestamptz, date, jsonb };
std::string_view column_type_sql(ColumnType type);

struct ColumnSpec {
  std::string name;               // SQL column, default: snake_case of the path
  std::vector<std::string> path;  // JSON field path, e.g. {"customer", "id"}
  ColumnType type = ColumnType::text;
};

enum class SyncMode { export_feed, list_windows };
std::string_view mode_name(SyncMode mode);
bool parse_mode(std::string_view text, SyncMode& out);

/// An array field of each record kept as rows of its own (invoice items), always equal to the
/// array in the parent's stored `raw`: one row per element, keyed by its position.
struct ChildSpec {
  std::vector<std::string> path;  // the array's field path in the record, e.g. {"items"}
  std::string table;              // "invoice_items"
  std::vector<ColumnSpec> columns;  // typed columns, paths relative to the element
};

struct JobSpec {
  std::string name;          // "invoices"
  std::string table;         // table in the stsync schema
  std::string list_path;     // "accounting/v2/tenant/{tenant}/invoices"
  std::string export_path;   // "accounting/v2/tenant/{tenant}/export/invoices"
  SyncMode mode = SyncMode::export_feed;
  std::string inactive_filter;  // query pair that makes the list endpoint return inactive rows
  int page_size = 5000;         // list mode
  int overlap_seconds = 300;    // re-read this much before the watermark
  bool include_recent_changes = false;
  bool quarantine = false;          // bad records go to the quarantine table; the job goes on
  // The type of the job table's `raw` column when stsync creates it: "jsonb" (the default:
  // decomposed, indexable, operators work directly) or "json" (validated text, kept byte for
  // byte; about half the COPY cost; queries cast it: raw::jsonb).
  std::string raw_type = "jsonb";
  std::vector<ColumnSpec> columns;  // typed columns besides tenant_id, id, modified_on, active, raw
  std::vector<ChildSpec> children;
};

/// "customer.id" → "customer_id", "hourlyRate" → "hourly_rate", "salesTaxCode.taxRate" →
/// "sales_tax_code_tax_rate".
std::string snake_case(std::string_view dotted_path);

/// SQL that extracts column `c` from the jsonb expression `json` (PostgreSQL does the casts:
/// numerics stay exact; a timestamp's 7th fractional digit is rounded).
std::string column_from_jsonb_sql(const ColumnSpec& c, std::string_view json);
/// `'{a,b}'`-free form of a field path for #> and #>>: ARRAY['a','b'] with quotes escaped.
std::string json_path_sql(const std::vector<std::string>& path);

/// Parses one job file's text. Throws Error(config) naming `origin` and the problem.
JobSpec parse_job_spec(std::string_view toml_text, const std::string& origin);
/// Loads every *.toml of `dir`, or the job files built into the binary when `dir` is empty.
std::vector<JobSpec> load_job_specs(const std::string& dir);

}  // namespace stsync
