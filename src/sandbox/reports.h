// ServiceTitan's Reporting API as the sandbox serves it (reporting-v2 spec): report categories,
// reports, their descriptions (parameters, fields) and their data, deterministic per tenant,
// report and day; a report's fields and past days' numbers change on request; 5 runs of the
// same report per minute per tenant, as the developer portal states.
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace stsync::sandbox {

struct ReportField {
  std::string name, label, type;  // type: String, Number, Boolean, Date, Time
  std::string sends;              // the type its values really have, when not the declared one
};
struct ReportParameter {
  std::string name, label, type;
  bool required = false, is_array = false;
};
struct ReportDefinition {
  std::string category, category_name;
  std::int64_t id = 0;
  std::string name, description;
  std::vector<ReportParameter> parameters;
  std::vector<ReportField> fields;
  int rows_per_day = 0;  // a busy day's rows; quieter days fewer
};

class ReportBook {
 public:
  explicit ReportBook(std::uint64_t seed);
  /// The reports every tenant has (before any change by the admin calls).
  static const std::vector<ReportDefinition>& builtin();
  /// One tenant's report as it is now (fields changed by the admin calls), or nullopt.
  std::optional<ReportDefinition> report(std::int64_t tenant, const std::string& category, std::int64_t id) const;
  /// The rows of one day ("YYYY-MM-DD"), each a JSON array in the order of the current fields.
  std::vector<std::string> day_rows(std::int64_t tenant, const ReportDefinition& report, const std::string& day) const;
  /// A field added ("Name:Type") or removed by the report's owner; `sends` ("Name:Type"): a field
  /// whose values are of another type than it declares (the API's declared types are unreliable).
  bool change_fields(std::int64_t tenant, std::int64_t id, const std::string& add, const std::string& remove,
                     const std::string& sends = {});
  /// The day's numbers change (late payments, edits): the next read of that day differs.
  void restate(std::int64_t tenant, std::int64_t id, const std::string& day);
  /// Counts a run of the report; false (and the seconds until one is allowed) past the limit.
  bool admit_run(std::int64_t tenant, std::int64_t id, std::int64_t now_ms, int& retry_after_seconds);
  void set_window(int runs, std::int64_t window_ms);
  std::int64_t runs(std::int64_t tenant) const;
  std::int64_t throttled(std::int64_t tenant) const;
  void reset();

 private:
  std::uint64_t seed_;
  mutable std::mutex mutex_;
  std::map<std::pair<std::int64_t, std::int64_t>, std::vector<ReportField>> fields_;  // changed fields
  std::map<std::tuple<std::int64_t, std::int64_t, std::string>, int> versions_;      // restated days
  std::map<std::pair<std::int64_t, std::int64_t>, std::deque<std::int64_t>> run_times_;
  std::map<std::int64_t, std::int64_t> runs_, throttled_;
  int max_runs_ = 5;
  std::int64_t window_ms_ = 60000;
};

}  // namespace stsync::sandbox
