// One page of ServiceTitan JSON → the COPY text rows of the job's staging table, in one pass.
#pragma once
#include <simdjson.h>

#include <cstdint>
#include <optional>
#include <unordered_set>
#include <string>
#include <vector>

#include "job_spec.h"
#include "page_scan.h"
#include "table_shape.h"
#include "timestamp.h"

namespace stsync {

/// A record a quarantining job could not store.
struct QuarantinedRecord {
  std::optional<std::string> id;
  std::string error;
  std::string raw;
};

struct ParsedPage {
  bool has_more = false;
  std::optional<std::string> continue_from;
  std::optional<std::int64_t> total_count;
  int records = 0;
  std::optional<Ticks> max_modified;
  // What the page's rows claim, to check that a list window's filter was honoured.
  std::optional<Ticks> min_modified, min_created, max_created;
  int without_modified = 0;  // records whose modifiedOn is null or missing
  std::vector<std::string> ids;   // keys in page order (text form): COPY line n is record ids[n-1]
  bool duplicate_ids = false;     // an id occurs twice (export repeats): the merge must pick one
  std::vector<size_t> row_ends;   // record i's staging row ends at row_ends[i] in copy_rows
  std::string copy_rows;          // staging rows, COPY text format
  /// The rows of one [[children]] table, built in the same pass: tenant_id, parent_id, position,
  /// the typed columns, raw. Record i's rows end at record_ends[i].
  struct ChildRows {
    std::string copy_rows;
    std::vector<size_t> record_ends;
  };
  std::vector<ChildRows> children;  // one per JobSpec::children
  int nul_replaced = 0;           // values whose NUL characters became U+FFFD
  int control_escaped = 0;        // raw control characters inside strings, stored escaped
  std::vector<QuarantinedRecord> quarantined;  // only for jobs with quarantine = true

  void clear();
};

class PageParser {
 public:
  /// Throws Error(config) when the spec's paths cannot be walked in one pass (a column path
  /// that is a prefix of another). A page nested deeper than `max_depth` is refused.
  explicit PageParser(const JobSpec& spec, int max_depth = 64);

  /// Parses `body`, whose capacity must extend SIMDJSON_PADDING bytes past its size (the HTTP
  /// transport guarantees it). Throws Error(bad_data) with the record's position, id and field;
  /// for a quarantining job, a record whose values are bad goes to `out.quarantined` instead
  /// (a page that is not valid JSON still throws).
  /// `out` is cleared first; its buffers are reused across pages.
  void parse(std::string& body, std::int64_t tenant, ParsedPage& out);
  /// For a per-parent job: the parent key the next pages belong to (its parent_id column, and the
  /// prefix of a positional key). For keyless records: the listing position of the next page's
  /// first record.
  void set_listing(std::string parent, std::int64_t position_base) {
    parent_ = std::move(parent);
    position_base_ = position_base;
  }

 private:
  struct Node {
    std::string key;
    std::vector<int> targets;   // column index, or one of the kField* specials
    std::vector<int> children;  // node indexes
  };
  /// The typed columns of one kind of JSON object (the record, or an element of a child array):
  /// a tree of the wanted paths, walked once per object.
  struct Walker {
    std::vector<Node> nodes;  // nodes[0] is the object itself
    const std::vector<ColumnSpec>* columns = nullptr;
    std::vector<std::optional<std::string>> cells;  // per object, reused; nullopt is SQL NULL
  };
  void add_path(Walker& w, const std::vector<std::string>& path, int target);
  int child(const Walker& w, int node, std::string_view key) const;
  std::vector<const Walker*> all_walkers() const;
  void walk(Walker& w, simdjson::ondemand::object object, int node);
  void capture(Walker& w, simdjson::ondemand::value value, int target, std::string_view key);
  void capture_array(Walker& w, const Node& n, simdjson::ondemand::value value, std::string_view key);
  static void append_cells(std::string& row, const Walker& w);
  void emit_children(std::int64_t tenant, const std::string& parent_id, ParsedPage& out);
  /// The record's key from its id or its key columns (after the walk); throws FieldError.
  void make_key(ParsedPage& out);
  void parse_record(simdjson::ondemand::object object, std::int64_t tenant, ParsedPage& out);
  template <typename ObjectOf>
  void parse_guarded(ObjectOf&& object_of, std::int64_t tenant, ParsedPage& out);
  void parse_records_of(const std::string& body, const PageLayout& layout, std::int64_t tenant, ParsedPage& out);

  const JobSpec& spec_;
  simdjson::ondemand::parser parser_;
  simdjson::ondemand::parser child_parser_;   // child arrays, parsed from their own text
  simdjson::ondemand::parser record_parser_;  // one record at a time
  std::string record_text_;
  simdjson::ondemand::document record_doc_;  // the record being parsed (outlives parse_guarded's lambda)
  Walker record_;
  std::vector<Walker> children_;                 // one per JobSpec::children
  std::vector<std::string_view> child_arrays_;   // per record: each child array's text (empty: none)
  std::optional<std::string> id_;
  bool id_is_field_ = true;               // the key is the record's "id" (else: key columns, position)
  std::vector<int> key_columns_;          // column index of each key field
  std::string parent_;                    // set_listing
  std::int64_t position_base_ = 0;
  std::optional<Ticks> modified_, created_;
  std::optional<Ticks> last_ticks_;  // the last timestamp a typed column parsed (exact, 7 digits)
  bool modified_null_ = false;
  bool active_ = true;
  int nul_replaced_ = 0;
  int max_depth_;
  std::string scratch_, child_text_, child_raw_;
  std::unordered_set<std::string> seen_ids_;
  double rows_per_json_byte_ = 1.6;  // COPY text per byte of JSON, the largest seen
};

}  // namespace stsync
