// One page of ServiceTitan JSON → the COPY text rows of the job's staging table, in one pass.
#pragma once
#include <simdjson.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "job_spec.h"
#include "timestamp.h"

namespace stsync {

/// A record a quarantining job could not store.
struct QuarantinedRecord {
  std::optional<std::int64_t> id;
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
  std::vector<std::int64_t> ids;  // in page order: COPY line n is record ids[n-1]
  std::string copy_rows;          // staging rows, COPY text format
  int nul_replaced = 0;           // values whose NUL characters became U+FFFD
  int control_escaped = 0;        // raw control characters inside strings, stored escaped
  std::vector<QuarantinedRecord> quarantined;  // only for jobs with quarantine = true

  void clear();
};

/// The staging table's columns, in COPY order: tenant_id, id, the typed columns, modified_on,
/// active, raw, ordinal.
std::vector<std::string> staging_columns(const JobSpec& spec);

/// Checks a page before parsing: throws Error(bad_data) when it nests deeper than `max_depth`,
/// and rewrites raw control characters inside strings as \u escapes (the same value). Returns
/// how many it escaped. Keeps simdjson's padding.
int prepare_page(std::string& body, int max_depth);

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

 private:
  struct Node {
    std::string key;
    std::vector<int> targets;   // column index, or one of the kField* specials
    std::vector<int> children;  // node indexes
  };
  int child(int node, std::string_view key) const;
  void walk(simdjson::ondemand::object object, int node);
  void capture(simdjson::ondemand::value value, int target, std::string_view key);
  void parse_record(simdjson::ondemand::value element, std::int64_t tenant, ParsedPage& out);

  const JobSpec& spec_;
  simdjson::ondemand::parser parser_;
  std::vector<Node> nodes_;  // nodes_[0] is the record itself
  // Per record, reused: one cell per column; nullopt is SQL NULL.
  std::vector<std::optional<std::string>> cells_;
  std::optional<std::int64_t> id_;
  std::optional<Ticks> modified_, created_;
  std::optional<Ticks> last_ticks_;  // the last timestamp a typed column parsed (exact, 7 digits)
  bool modified_null_ = false;
  bool active_ = true;
  int nul_replaced_ = 0;
  int max_depth_;
  std::string scratch_;
};

}  // namespace stsync
