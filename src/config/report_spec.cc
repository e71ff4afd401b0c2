#include "report_spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <regex>

#include "copy_text.h"
#include "errors.h"
#include "timestamp.h"

namespace stsync {
namespace {

[[noreturn]] void fail(const std::string& origin, const std::string& what) {
  throw Error(ErrorKind::config, fmt::format("{}: {}", origin, what));
}

// A TOML value as the JSON value the Reporting API's parameters take.
std::string json_value(const toml::node& n, const std::string& origin, const std::string& name) {
  if (const auto* s = n.as_string()) {
    std::string out;
    append_json_string(out, s->get());
    return out;
  }
  if (const auto* i = n.as_integer()) return std::to_string(i->get());
  if (const auto* f = n.as_floating_point()) return fmt::format("{}", f->get());
  if (const auto* b = n.as_boolean()) return b->get() ? "true" : "false";
  if (const auto* a = n.as_array()) {
    std::string out = "[";
    for (const toml::node& e : *a) out += (out.size() > 1 ? "," : "") + json_value(e, origin, name);
    return out + "]";
  }
  fail(origin, fmt::format("parameters.{} must be a string, a number, true/false or an array of them", name));
}

}  // namespace

std::string default_report_table(const std::string& job_name) { return "report_" + job_name; }

JobSpec parse_report_job(const toml::table& t, const std::string& origin) {
  for (const auto& [key, value] : t) {
    static const std::vector<std::string_view> kAllowed = {
        "name", "table", "description", "category", "report_id", "parameters", "date_parameter", "from_parameter",
        "to_parameter", "start_date", "lookback_days", "every", "enabled", "tenants", "page_size"};
    if (std::find(kAllowed.begin(), kAllowed.end(), key.str()) == kAllowed.end())
      fail(origin, fmt::format("unknown key '{}' in a report job (keys: name, category, report_id, parameters, "
                               "date_parameter or from_parameter and to_parameter, start_date, lookback_days, every, "
                               "enabled, tenants, table, description, page_size)",
                               key.str()));
  }
  auto text = [&](const char* key, bool required) {
    const toml::node* n = t.get(key);
    if (n == nullptr) {
      if (required) fail(origin, fmt::format("a report job needs '{}'", key));
      return std::string();
    }
    if (!n->is_string()) fail(origin, fmt::format("'{}' must be a string", key));
    return n->value_or(std::string());
  };
  auto integer = [&](const char* key, std::int64_t fallback, std::int64_t lo, std::int64_t hi) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return fallback;
    if (!n->is_integer() || *n->value<std::int64_t>() < lo || *n->value<std::int64_t>() > hi)
      fail(origin, fmt::format("'{}' must be a whole number from {} to {}", key, lo, hi));
    return *n->value<std::int64_t>();
  };
  JobSpec spec;
  spec.name = text("name", true);
  if (!std::regex_match(spec.name, std::regex("[a-z][a-z0-9_]{0,50}")))
    fail(origin, fmt::format("name '{}' must be lower case letters, digits and _ (it names a table)", spec.name));
  spec.table = text("table", false);
  if (spec.table.empty()) spec.table = default_report_table(spec.name);
  ReportSpec r;
  r.category = text("category", true);
  if (t.get("report_id") == nullptr) fail(origin, "a report job needs 'report_id' (`stsync reports` lists them)");
  r.id = integer("report_id", 0, 1, INT64_MAX);
  r.date_parameter = text("date_parameter", false);
  r.from_parameter = text("from_parameter", false);
  r.to_parameter = text("to_parameter", false);
  if (r.date_parameter.empty() == (r.from_parameter.empty() && r.to_parameter.empty()) ||
      r.from_parameter.empty() != r.to_parameter.empty())
    fail(origin, "a report job names either date_parameter (one date), or from_parameter and to_parameter (a "
                 "From/To pair, both given the same day); `stsync reports describe` shows the report's parameters");
  r.start_date = text("start_date", true);
  const std::optional<Ticks> start = parse_timestamp(r.start_date);
  if (r.start_date.size() != 10 || !start)
    fail(origin, fmt::format("start_date '{}' must be a date, YYYY-MM-DD", r.start_date));
  r.lookback_days = static_cast<int>(integer("lookback_days", 3, 0, 366));
  // The data endpoint's maximum (reporting-v2 spec): every page is a run of the report, of which
  // there are 5 a minute, so the default asks for as many rows as one may.
  r.page_size = static_cast<int>(integer("page_size", 25000, 1, 25000));
  if (const toml::node* n = t.get("parameters")) {
    const toml::table* p = n->as_table();
    if (p == nullptr) fail(origin, "'parameters' must be a table: name = value");
    for (const auto& [name, value] : *p) {
      const std::string key(name.str());
      if (key == r.date_parameter || key == r.from_parameter || key == r.to_parameter)
        fail(origin, fmt::format("parameters.{} is the date stsync fills in day by day; remove it", key));
      r.parameters.emplace_back(key, json_value(value, origin, key));
    }
  }
  spec.description = text("description", false);
  if (spec.description.empty())
    spec.description = fmt::format("stsync: rows of ServiceTitan report {}/{} (job {}), one set per tenant and day",
                                   r.category, r.id, spec.name);
  spec.every_seconds = 86400;
  if (const toml::node* n = t.get("every")) {
    const std::optional<int> every = n->is_string() ? parse_duration(*n->value<std::string>()) : std::nullopt;
    if (!every || *every < 1) fail(origin, "'every' must be a duration, such as \"6h\" or \"1d\"");
    spec.every_seconds = *every;
  }
  if (const toml::node* n = t.get("enabled")) {
    if (!n->is_boolean()) fail(origin, "'enabled' must be true or false");
    spec.enabled = *n->value<bool>();
  }
  if (const toml::node* n = t.get("tenants")) {
    const toml::array* a = n->as_array();
    if (a == nullptr) fail(origin, "'tenants' must be a list of tenant ids");
    for (const toml::node& e : *a) {
      if (!e.is_integer()) fail(origin, "'tenants' must be a list of tenant ids");
      spec.only_tenants.push_back(*e.value<std::int64_t>());
    }
  }
  // A report job is asked for by its declaration: a 403 is a failure of the job, recorded as not
  // permitted (see JobRun's rule for default jobs).
  spec.list_path.clear();
  spec.export_path.clear();
  spec.mode = SyncMode::full_listing;
  spec.key.clear();
  spec.report = std::move(r);
  return spec;
}

}  // namespace stsync
