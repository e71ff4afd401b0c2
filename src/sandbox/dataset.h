// The sandbox's data: per tenant and resource, rows with pre-serialized JSON, an export feed in
// change order, a controllable clock and churn. Thread-safe: every public call takes the lock.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "sandbox/catalogue.h"
#include "sandbox/wire_text.h"

namespace stsync::sandbox {

/// Deterministic 64-bit generator (splitmix64): the same seed gives the same data everywhere.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next();
  /// Uniform in [0, n).
  std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : next() % n; }
  bool chance(double p) { return static_cast<double>(next() >> 11) / 9007199254740992.0 < p; }

 private:
  std::uint64_t state_;
};
std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b);

struct RecordMeta {
  std::int64_t tenant = 0;
  std::int64_t id = 0;             // the row's identity inside the sandbox (its JSON key derives from it)
  std::int64_t parent = 0;         // a per-parent resource: the parent row's id
  std::uint32_t version = 0;
  Ticks created = 0;
  std::optional<Ticks> modified;  // invoices may have none
  int fraction_digits = 7;        // how many fractional digits modifiedOn is written with
  bool active = true;
  // How the record's timestamps are written: 'Z' (UTC, the API's own form), an offset
  // ("+02:00", the same instant), or no zone at all (meant as UTC).
  enum class TimeStyle : std::uint8_t { utc, offset, zoneless } time_style = TimeStyle::utc;
  // The tenant's initial row counts by resource, so that a record's references (customerId,
  // job.id, …) name rows the tenant has: the data joins as a real tenant's does.
  const std::map<std::string, int>* tenant_counts = nullptr;
};

/// The id of a resource's i-th initial row (every 40th past 2^53, as real tenants have).
std::int64_t initial_row_id(int i);

/// A timestamp as the record's style writes it.
std::string styled_timestamp(Ticks t, int fraction_digits, RecordMeta::TimeStyle style);

/// Writes one record's JSON from its meta; all other fields derive from (seed, id, version).
using Generator = std::string (*)(const RecordMeta& meta, std::uint64_t seed);

struct ResourceDef {
  std::string name;              // "invoices"
  std::string module;            // "accounting"
  bool active_state_param;       // activeState=ActiveOnly|InactiveOnly|All (else active=…)
  bool sortable;                 // accepts sort=±Id|ModifiedOn|CreatedOn
  bool modified_may_be_null;     // some rows carry "modifiedOn": null
  Generator generate;            // hand-written hard cases; nullptr: generated from `cat`'s fields
  const CatalogueResource* cat = nullptr;
};
/// The resources the sandbox serves: every catalogued one; invoices and employees with their
/// hand-written generators.
const std::vector<ResourceDef>& builtin_resources();
const ResourceDef* find_resource(std::string_view name);
/// A record's JSON: the hand-written generator, or one driven by the catalogue's field types.
std::string generate_record(const ResourceDef& def, const RecordMeta& meta, std::uint64_t seed);
/// The record's key as its JSON shows it (the id, a GUID, a key field's value); empty: keyless.
std::string record_key(const ResourceDef& def, const RecordMeta& meta);

struct Row {
  RecordMeta meta;
  std::uint64_t seq = 0;  // position in the export feed; a change moves the row to the end
  std::string json;
  Ticks changed_at = 0;   // when the change happened (what the visibility delay counts from)
  bool deleted = false;   // hard-deleted (list-only resources): no longer served
};

/// Ways the real API is less kind than a tidy server; each off by default, each tested.
struct Quirks {
  bool export_disorder = false;      // the initial feed runs newest-first: months out of modifiedOn order
  int export_repeat_rows = 0;        // a page from a token starts this many rows before it (repeats)
  int export_token_ttl_seconds = 0;  // continueFrom tokens older than this are rejected (0: never)
  bool unstable_list_order = false;  // unsorted list pages come in a new random order on every call
  int filter_rounding_seconds = 0;   // list date filters are floored to this many seconds
  bool timestamp_styles = false;     // some records write timestamps with +02:00 or with no zone
  bool future_record = false;        // one record's modifiedOn is ten years ahead of the clock
};

struct TenantSetup {
  std::int64_t id;
  std::map<std::string, int> counts;  // rows per resource
};

struct DatasetOptions {
  std::uint64_t seed = 42;
  std::vector<TenantSetup> tenants;
  Ticks clock_start = 0;        // sandbox time at start; 0 = the real time when it starts
  bool clock_frozen = true;     // false: sandbox time also flows with real time
  Quirks quirks;                // build-time ones (disorder, styles, future) apply at reset
};

/// One page of a list or export call, already serialized as the JSON array's elements.
struct PageRows {
  std::string data;  // "{…},{…}" without brackets
  int count = 0;
};

struct ListQuery {
  std::optional<Ticks> modified_on_or_after, modified_before, created_on_or_after, created_before;
  std::vector<std::string> ids;          // record keys as the JSON shows them
  std::optional<std::int64_t> parent;    // a per-parent resource: the parent row's id
  enum class Active { only, inactive_only, any } active = Active::only;
  enum class Sort { none, id_asc, id_desc, modified_asc, modified_desc, created_asc, created_desc };
  Sort sort = Sort::none;
  int page = 1;
  int page_size = 50;
};
struct ListResult {
  PageRows rows;
  bool has_more = false;
  std::int64_t total = 0;
};

struct ExportQuery {
  std::optional<std::uint64_t> after_seq;  // from a continueFrom token
  std::optional<Ticks> from_date;          // from a date
  bool include_recent = false;
  bool hide_inactive = false;              // an export with active=True (its default)
  int batch_size = 1000;
  Ticks visibility_delay = 15 * 60 * kTicksPerSecond;
};
struct ExportResult {
  PageRows rows;
  bool has_more = false;
  std::uint64_t continue_seq = 0;
};

class Dataset {
 public:
  explicit Dataset(DatasetOptions options);

  /// Regenerates everything from the seed, as at start.
  void reset();
  Quirks quirks() const;
  /// Build-time quirks take effect at the next reset().
  void set_quirks(const Quirks& quirks);
  Ticks now() const;
  void advance_clock(Ticks by);
  bool has_tenant(std::int64_t tenant) const;
  std::vector<std::int64_t> tenants() const;

  /// nullopt when the tenant or resource is unknown.
  std::optional<ListResult> list(std::int64_t tenant, const std::string& resource,
                                 const ListQuery& q) const;
  std::optional<ExportResult> export_page(std::int64_t tenant, const std::string& resource,
                                          const ExportQuery& q) const;
  /// Applies n random changes (updates, deactivations, reactivations, new rows) at now().
  /// Returns how many were applied; -1 when the tenant or resource is unknown.
  int apply_changes(std::int64_t tenant, const std::string& resource, int n);
  /// Every current row, ordered by id, as a JSON array: what a finished export would deliver.
  std::optional<std::string> truth(std::int64_t tenant, const std::string& resource) const;
  /// The id of the row of `resource` whose JSON key is `key` (a parent named in a path).
  std::optional<std::int64_t> row_by_key(std::int64_t tenant, const std::string& resource,
                                         const std::string& key) const;
  /// Hard-deletes (`restore`: brings back) up to n rows of a list-only resource at now().
  /// Returns the keys affected.
  std::vector<std::string> delete_rows(std::int64_t tenant, const std::string& resource, int n, bool restore);

 private:
  struct Table {
    const ResourceDef* def = nullptr;
    std::vector<Row> rows;
    std::unordered_map<std::int64_t, size_t> by_id;
    std::unordered_map<std::string, size_t> by_key;
    std::map<std::uint64_t, size_t> feed;  // seq → row index
    std::uint64_t next_seq = 1;
    std::int64_t next_id = 0;
    Rng churn_rng{0};
  };
  void build_locked();
  void build_table_locked(const TenantSetup& tenant, const std::string& resource, int count);
  Table* table_locked(std::int64_t tenant, const std::string& resource);
  const Table* table_locked(std::int64_t tenant, const std::string& resource) const;
  void touch_locked(Table& t, size_t index);
  void touch_parent_locked(const Table& t, const RecordMeta& child);
  Ticks now_locked() const;

  DatasetOptions options_;
  mutable std::mutex mutex_;
  std::map<std::pair<std::int64_t, std::string>, Table> tables_;
  std::map<std::int64_t, std::map<std::string, int>> tenant_counts_;  // what RecordMeta::tenant_counts points to
  Ticks clock_offset_ = 0;
  Ticks real_start_ = 0;
  mutable std::uint64_t list_calls_ = 0;  // seeds the unstable order of each list call
};

}  // namespace stsync::sandbox
