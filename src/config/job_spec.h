// A job is data: one TOML file per resource in jobs/ (see jobs/invoices.toml).
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <cstdint>
#include <vector>

namespace stsync {

enum class ColumnType { bigint, integer, numeric, text, boolean, timestamptz, date, jsonb };
std::string_view column_type_sql(ColumnType type);

struct ColumnSpec {
  std::string name;               // SQL column, default: column_name_for(the path)
  std::vector<std::string> path;  // JSON field path, e.g. {"customer", "id"}
  ColumnType type = ColumnType::text;
  std::string description;        // the spec's description of the field (the column's COMMENT)
};

// export_feed: the export endpoint's continueFrom feed. list_windows: list pages by createdOn
// (first load), then modifiedOn windows. created_windows: append-only records, list pages by
// their creation field only. full_listing: every page of the list on every run (no usable date
// filter; also each parent's listing of a per-parent job).
enum class SyncMode { export_feed, list_windows, created_windows, full_listing };
std::string_view mode_name(SyncMode mode);
bool parse_mode(std::string_view text, SyncMode& out);

/// An array field of each record kept as rows of its own (invoice items), always equal to the
/// array in the parent's stored `raw`: one row per element, keyed by its position.
struct ChildSpec {
  std::vector<std::string> path;  // the array's field path in the record, e.g. {"items"}
  std::string table;              // "invoices_items"
  std::vector<ColumnSpec> columns;  // typed columns, paths relative to the element
  std::string description;          // the child table's COMMENT
};

/// How a list endpoint answers: {page, hasMore, data[]} ("paged"), {data[]} ("data"), or one
/// object that is the record ("object").
enum class ResponseShape { paged, data, object };

/// A report job (ServiceTitan's Reporting API): one report of one category, read day by day from
/// `start_date` to today, each run re-reading the last `lookback_days` days.
struct ReportSpec {
  std::string category;      // "technician"
  std::int64_t id = 0;       // the report's id in its category
  // Fixed parameters: name and value as JSON text ("true", "42", "\"x\"", "[1,2]").
  std::vector<std::pair<std::string, std::string>> parameters;
  // The day goes into one date parameter, or into a From/To pair (both the same day).
  std::string date_parameter, from_parameter, to_parameter;
  std::string start_date;    // "YYYY-MM-DD": the first day read
  int lookback_days = 3;     // days before the first unread one that each run reads again
  int page_size = 25000;     // rows per request (each request is one run of the report; the API's maximum)
};

struct JobSpec {
  std::string name;          // "invoices"
  std::string table;         // table in the stsync schema
  std::string list_path;     // "accounting/v2/tenant/{tenant}/invoices"
  std::string export_path;   // "accounting/v2/tenant/{tenant}/export/invoices"
  SyncMode mode = SyncMode::export_feed;
  std::string inactive_filter;  // query pair that makes the list endpoint return inactive rows
  std::string list_params;      // fixed query pairs the list endpoint requires ("descending=false")
  // A date filter the list endpoint requires one of (its spec's text: "Either CustomerIds,
  // modifiedOn or modifiedOnOrAfter parameter must be specified"): requests that do not set it
  // themselves send it at kListFloor, which every row is after.
  std::string list_floor;
  std::string description;  // what the table holds (its COMMENT), from the spec

  std::string export_filter;    // query pair(s) the export endpoint needs to return every row
  bool enabled = true;          // false: runs only when named (--jobs, or enabled in the config)
  bool named = false;           // the user asked for this job by name: a 403 fails it (else: "not permitted")
  int every_seconds = 3600;     // cadence: how often the job is due
  // The row's key: record fields whose values identify it (default {"id"}). Empty: the record's
  // position in its listing (records without any identity). Several fields: a text key, the
  // JSON array of their values.
  std::vector<std::vector<std::string>> key = {{"id"}};
  ColumnType key_type = ColumnType::bigint;  // bigint or text
  // A per-parent job: list_path holds {parent}, filled with each key of the parent job's table.
  std::string parent;
  ColumnType parent_key_type = ColumnType::bigint;  // resolved from the parent job when loaded
  std::string parent_table;                         // likewise
  // The creation field and its window parameters (the first pass of a list walk, and the whole
  // walk of an append-only job).
  std::vector<std::string> created_field = {"createdOn"};
  std::string created_after = "createdOnOrAfter", created_before = "createdBefore";
  ResponseShape response = ResponseShape::paged;
  bool ids_param = false;        // the list takes ids=… (confirms a row is gone before marking it)
  bool ids_repeated = false;     // …as the parameter repeated (ids=1&ids=2: an array), not one comma list
  std::string list_sort;         // sort=… for complete listings ("+Id": new rows go to the end)
  int reconcile_every_seconds = 7 * 86400;  // list jobs: sweep for hard deletes this often (0: never)
  int page_size = 5000;         // list mode
  int overlap_seconds = 300;    // re-read this much before the watermark
  bool include_recent_changes = false;
  bool quarantine = false;          // bad records go to the quarantine table; the job goes on
  bool history = false;             // every version seen of a row kept in <table>_history
  // The type of the job table's `raw` column when stsync creates it: "jsonb" (the default:
  // decomposed, indexable, operators work directly) or "json" (validated text, kept byte for
  // byte; about half the COPY cost; queries cast it: raw::jsonb).
  std::string raw_type = "jsonb";
  /// What every list request starts its query with: the inactive filter, the fixed parameters
  /// and the required floor (unless the request sets that filter itself: `with_floor` false),
  /// each followed by '&' (empty when there are none).
  std::string list_query_prefix(bool with_floor = true) const {
    std::string out;
    for (const std::string* part : {&inactive_filter, &list_params})
      if (!part->empty()) out += *part + "&";
    if (with_floor && !list_floor.empty()) out += list_floor + "=" + kListFloor + "&";
    return out;
  }
  static constexpr const char* kListFloor = "1970-01-01T00%3A00%3A00Z";
  // The paging parameters the list endpoint declares (its spec may lack some, or all: the API
  // ignores what it does not declare, so they are not sent).
  bool list_page = true, list_page_size = true, list_include_total = true;
  /// "page=…&pageSize=…&includeTotal=true", with only the declared ones ("" when none).
  std::string paging(int page, int page_size, bool include_total = true) const;
  /// `path` (which may hold a query already) with the query `parts` added ('&'-separated
  /// pieces, each may end with '&'); `path` itself when there are none.
  static std::string with_query(const std::string& path, std::string parts);
  std::vector<ColumnSpec> columns;  // typed columns besides tenant_id, id, parent_id, modified_on, active, raw, deleted_at
  std::vector<ChildSpec> children;
  std::optional<ReportSpec> report;  // set: a report job (the fields above about endpoints do not apply)
  std::vector<std::int64_t> only_tenants;  // runs only for these tenants (empty: for every tenant)
};

/// "15m", "6h", "7d", "90s" or a bare number of seconds; nullopt when malformed or negative.
std::optional<int> parse_duration(std::string_view text);

/// The jobs' names, for messages ("did you mean …").
std::vector<std::string> job_names(const std::vector<JobSpec>& specs);
/// An endpoint path of a job file with its `{tenant}` placeholder filled in.
std::string tenant_path(const std::string& path, std::int64_t tenant);
/// The key's text form for messages: "id", "employeeId", "(technicianId, jobId)", "position".
std::string key_description(const JobSpec& spec);

/// "customer.id" → "customer_id", "hourlyRate" → "hourly_rate", "salesTaxCode.taxRate" →
/// "sales_tax_code_tax_rate".
std::string snake_case(std::string_view dotted_path);
/// A column's default name: the snake_case of its path, with "_value" after a PostgreSQL reserved
/// keyword ("order" → order_value), so that no column needs quoting.
std::string column_name_for(std::string_view dotted_path);


/// Parses one job file's text. Throws Error(config) naming `origin` and the problem.
JobSpec parse_job_spec(std::string_view toml_text, const std::string& origin);
/// Loads every *.toml of `dir`, or the job files built into the binary when `dir` is empty.
/// Resolves each per-parent job's parent (its key type); throws Error(config) for an unknown one.
std::vector<JobSpec> load_job_specs(const std::string& dir);

}  // namespace stsync
