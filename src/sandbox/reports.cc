// The Reporting API of the sandbox: report catalogue and data (ReportBook), and its routes.
#include "sandbox/reports.h"

#include <httplib.h>
#include <simdjson.h>
#include <fmt/format.h>

#include <algorithm>

#include "sandbox/contract.h"
#include "sandbox/dataset.h"
#include "sandbox/server.h"
#include "sandbox/server_internal.h"

namespace stsync::sandbox {
namespace {

std::uint64_t text_hash(std::string_view s) {
  std::uint64_t h = 1469598103934665603ULL;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  return h;
}

ReportParameter date_parameter(const char* name, const char* label) { return {name, label, "Date", true, false}; }

// One cell: deterministic per (day's seed, row, field), so that a field added later leaves the
// other columns' values as they were.
std::string cell(const ReportField& f, std::uint64_t day_seed, int row, const std::string& day) {
  Rng rng(mix_seed(day_seed, text_hash(f.name) + static_cast<std::uint64_t>(row)));
  const std::string& type = f.sends.empty() ? f.type : f.sends;
  if (type == "Number") return fmt::format("{}.{:02}", rng.below(250000), rng.below(100));
  if (type == "Boolean") return rng.chance(0.5) ? "true" : "false";
  if (type == "Date") return "\"" + day + "T00:00:00\"";
  if (type == "Time") return fmt::format("\"{:02}:{:02}:00\"", rng.below(24), rng.below(60));
  std::string text = fmt::format("{} {}", f.label, 1 + rng.below(40));
  std::string out;
  append_json_string(out, text);
  return out;
}

}  // namespace

ReportBook::ReportBook(std::uint64_t seed) : seed_(seed) {}

const std::vector<ReportDefinition>& ReportBook::builtin() {
  static const std::vector<ReportDefinition> reports = {
      {"operations", "Operations", 1001, "Revenue by business unit", "Completed revenue and jobs per business unit",
       {date_parameter("From", "From"), date_parameter("To", "To"), {"BusinessUnitIds", "Business units", "Number", false, true}},
       {{"BusinessUnit", "Business unit", "String"}, {"Revenue", "Revenue", "Number"}, {"CompletedJobs", "Completed jobs", "Number"},
        {"Day", "Day", "Date"}},
       40},
      {"operations", "Operations", 1002, "Daily invoice totals", "Invoices and their total for one day",
       {date_parameter("Date", "Date")},
       {{"BusinessUnit", "Business unit", "String"}, {"Invoices", "Invoices", "Number"}, {"Total", "Total", "Number"}},
       12},
      {"technician", "Technician", 2001, "Technician performance", "Jobs, revenue and hours per technician",
       {date_parameter("From", "From"), date_parameter("To", "To"), {"IncludeInactive", "Include inactive", "Boolean", false, false}},
       {{"Technician", "Technician", "String"}, {"CompletedJobs", "Completed jobs", "Number"}, {"Revenue", "Revenue", "Number"},
        {"Active", "Active", "Boolean"}, {"FirstDispatch", "First dispatch", "Time"}},
       3000},
      {"marketing", "Marketing", 3001, "Campaign attribution", "Leads and revenue attributed to each campaign",
       {{"DateType", "Date type", "Number", true, false}, date_parameter("From", "From"), date_parameter("To", "To")},
       {{"Campaign", "Campaign", "String"}, {"Leads", "Leads", "Number"}, {"Revenue", "Revenue", "Number"}},
       25},
  };
  return reports;
}

std::optional<ReportDefinition> ReportBook::report(std::int64_t tenant, const std::string& category,
                                                   std::int64_t id) const {
  for (const ReportDefinition& r : builtin()) {
    if (r.id != id || r.category != category) continue;
    ReportDefinition out = r;
    std::lock_guard lock(mutex_);
    if (auto it = fields_.find({tenant, id}); it != fields_.end()) out.fields = it->second;
    return out;
  }
  return std::nullopt;
}

std::vector<std::string> ReportBook::day_rows(std::int64_t tenant, const ReportDefinition& report,
                                              const std::string& day) const {
  int version = 0;
  {
    std::lock_guard lock(mutex_);
    if (auto it = versions_.find({tenant, report.id, day}); it != versions_.end()) version = it->second;
  }
  const std::uint64_t day_seed =
      mix_seed(seed_ ^ static_cast<std::uint64_t>(tenant), mix_seed(static_cast<std::uint64_t>(report.id), text_hash(day)));
  // Busy days and quiet ones: the count is the day's (not the version's); the numbers are both.
  Rng count_rng(day_seed);
  const int rows = static_cast<int>(1 + count_rng.below(static_cast<std::uint64_t>(report.rows_per_day)));
  const std::uint64_t version_seed = mix_seed(day_seed, static_cast<std::uint64_t>(version) + 1);
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(rows));
  for (int i = 0; i < rows; ++i) {
    std::string row = "[";
    for (size_t f = 0; f < report.fields.size(); ++f) {
      if (f) row += ',';
      // Names and dates do not change when a day is restated; the numbers do.
      const bool stable = report.fields[f].type == "String" || report.fields[f].type == "Date";
      row += cell(report.fields[f], stable ? day_seed : version_seed, i, day);
    }
    out.push_back(row + "]");
  }
  return out;
}

bool ReportBook::change_fields(std::int64_t tenant, std::int64_t id, const std::string& add, const std::string& remove,
                               const std::string& sends) {
  const auto def = std::find_if(builtin().begin(), builtin().end(), [&](const ReportDefinition& r) { return r.id == id; });
  if (def == builtin().end()) return false;
  std::lock_guard lock(mutex_);
  auto [it, fresh] = fields_.try_emplace({tenant, id}, def->fields);
  std::vector<ReportField>& fields = it->second;
  if (!remove.empty())
    std::erase_if(fields, [&](const ReportField& f) { return f.name == remove; });
  if (!add.empty()) {
    const size_t colon = add.find(':');
    const std::string name = add.substr(0, colon);
    const std::string type = colon == std::string::npos ? "String" : add.substr(colon + 1);
    std::erase_if(fields, [&](const ReportField& f) { return f.name == name; });  // a type change
    fields.push_back({name, name, type, {}});
  }
  if (!sends.empty()) {
    const size_t colon = sends.find(':');
    for (ReportField& f : fields)
      if (f.name == sends.substr(0, colon)) f.sends = colon == std::string::npos ? "String" : sends.substr(colon + 1);
  }
  return true;
}

void ReportBook::restate(std::int64_t tenant, std::int64_t id, const std::string& day) {
  std::lock_guard lock(mutex_);
  ++versions_[{tenant, id, day}];
}

bool ReportBook::admit_run(std::int64_t tenant, std::int64_t id, std::int64_t now_ms, int& retry_after_seconds) {
  std::lock_guard lock(mutex_);
  std::deque<std::int64_t>& q = run_times_[{tenant, id}];
  while (!q.empty() && q.front() <= now_ms - window_ms_) q.pop_front();
  if (static_cast<int>(q.size()) >= max_runs_) {
    ++throttled_[tenant];
    retry_after_seconds = static_cast<int>((q.front() + window_ms_ - now_ms + 999) / 1000);
    return false;
  }
  q.push_back(now_ms);
  ++runs_[tenant];
  return true;
}

void ReportBook::set_window(int runs, std::int64_t window_ms) {
  std::lock_guard lock(mutex_);
  max_runs_ = runs;
  window_ms_ = window_ms;
}

std::int64_t ReportBook::runs(std::int64_t tenant) const {
  std::lock_guard lock(mutex_);
  auto it = runs_.find(tenant);
  return it == runs_.end() ? 0 : it->second;
}

std::int64_t ReportBook::throttled(std::int64_t tenant) const {
  std::lock_guard lock(mutex_);
  auto it = throttled_.find(tenant);
  return it == throttled_.end() ? 0 : it->second;
}

void ReportBook::reset() {
  std::lock_guard lock(mutex_);
  fields_.clear();
  versions_.clear();
  run_times_.clear();
  runs_.clear();
  throttled_.clear();
}

void Server::handle_report(const httplib::Request& req, httplib::Response& res) {
  // /reporting/v2/tenant/{tenant}/report-categories
  // /reporting/v2/tenant/{tenant}/report-category/{category}/reports[/{id}[/data]]
  static const std::regex kPath(
      R"(^/reporting/v2/tenant/([^/]+)/(report-categories|report-category/([^/]+)/reports(/([0-9]+)(/data)?)?)$)");
  std::smatch m;
  if (!std::regex_match(req.path, m, kPath)) return send_problem(res, 404, "Not Found");
  const std::optional<std::int64_t> tenant = parse_int(m[1].str());
  if (!tenant) return send_problem(res, 400, "One or more validation errors occurred.", "tenant", "The value is not valid.");
  if (!authorize(req, res, *tenant)) return;
  if (throttle(res, *tenant)) return send_problem(res, 429, "Too Many Requests");
  bool denied = false;
  {
    std::lock_guard lock(mutex_);  // (send_problem takes it too: answer after)
    const auto it = denied_.find(*tenant);
    denied = it != denied_.end() && it->second.count("reporting");
  }
  if (denied) return send_problem(res, 403, "Forbidden", "", "The application is not authorized to access this resource.");
  if (const ContractOperation* op = Contract::builtin().find(req.method, std::string_view(req.path).substr(1)))
    if (const std::optional<ContractViolation> v = Contract::check(*op, req.params))
      return send_problem(res, 400, "One or more validation errors occurred.", v->field, v->message);
  const bool data = m[6].matched;
  if (data != (req.method == "POST")) return send_problem(res, 405, "Method Not Allowed");
  // The transient faults (5xx, 429, a cut or reset connection, a slow answer) as on every other
  // route; the data faults are the resources' pages' (a report's answer is served as it is).
  std::optional<FaultKind> data_fault;
  if (inject_fault(res, data_fault)) return;
  const std::int64_t page = req.has_param("page") ? parse_int(req.get_param_value("page")).value_or(1) : 1;
  const std::int64_t page_size =
      req.has_param("pageSize") ? parse_int(req.get_param_value("pageSize")).value_or(50) : 50;
  const bool include_total = req.has_param("includeTotal") && iequals(req.get_param_value("includeTotal"), "true");
  // The data's maximum (25,000) is the contract's (checked above); the listings declare none.
  if (page < 1 || page_size < 1)
    return send_problem(res, 400, "One or more validation errors occurred.", page < 1 ? "page" : "pageSize",
                        "The value must be at least 1.");
  // A paged envelope over `items` (JSON values).
  auto paged = [&](const std::vector<std::string>& items, const std::string& fields) {
    const size_t first = static_cast<size_t>((page - 1) * page_size);
    std::string body = "{" + fields + fmt::format("\"page\":{},\"pageSize\":{},\"hasMore\":{},", page, page_size,
                                                  first + static_cast<size_t>(page_size) < items.size() ? "true" : "false");
    body += include_total ? fmt::format("\"totalCount\":{},", items.size()) : "\"totalCount\":null,";
    body += "\"data\":[";
    for (size_t i = first; i < items.size() && i < first + static_cast<size_t>(page_size); ++i)
      body += (i > first ? "," : "") + items[i];
    return body + "]}";
  };
  auto quoted = [](const std::string& s) {
    std::string out;
    append_json_string(out, s);
    return out;
  };
  if (!m[3].matched) {  // the categories
    std::vector<std::string> items;
    std::set<std::string> seen;
    for (const ReportDefinition& r : ReportBook::builtin())
      if (seen.insert(r.category).second)
        items.push_back(fmt::format("{{\"id\":{},\"name\":{}}}", quoted(r.category), quoted(r.category_name)));
    return send_page(req, res, paged(items, ""));
  }
  const std::string category = m[3].str();
  if (!m[5].matched) {  // the reports of a category
    std::vector<std::string> items;
    for (const ReportDefinition& r : ReportBook::builtin())
      if (r.category == category)
        items.push_back(fmt::format("{{\"id\":{},\"name\":{},\"description\":{}}}", r.id, quoted(r.name),
                                    quoted(r.description)));
    if (items.empty()) return send_problem(res, 404, "Not Found", "", "The report category does not exist.");
    return send_page(req, res, paged(items, ""));
  }
  const std::optional<ReportDefinition> report = reports_.report(*tenant, category, std::stoll(m[5].str()));
  if (!report) return send_problem(res, 404, "Not Found", "", "The report does not exist.");
  std::string fields = "[";
  for (size_t i = 0; i < report->fields.size(); ++i)
    fields += fmt::format("{}{{\"name\":{},\"label\":{}{}}}", i ? "," : "", quoted(report->fields[i].name),
                          quoted(report->fields[i].label),
                          data ? "" : ",\"dataType\":" + quoted(report->fields[i].type));
  fields += "]";
  if (!data) {
    std::string parameters = "[";
    for (size_t i = 0; i < report->parameters.size(); ++i) {
      const ReportParameter& p = report->parameters[i];
      parameters += fmt::format("{}{{\"name\":{},\"label\":{},\"dataType\":{},\"isArray\":{},\"isRequired\":{},"
                                "\"acceptValues\":null}}",
                                i ? "," : "", quoted(p.name), quoted(p.label), quoted(p.type), p.is_array, p.required);
    }
    parameters += "]";
    return send_page(req, res,
                     fmt::format("{{\"id\":{},\"name\":{},\"description\":{},\"modifiedOn\":{},\"parameters\":{},"
                                 "\"fields\":{}}}",
                                 report->id, quoted(report->name), quoted(report->description),
                                 quoted(format_timestamp(dataset_.now(), 7)), parameters, fields));
  }
  // The data: a run of the report, within its own limit (5 a minute per tenant).
  int retry_after = 0;
  if (!reports_.admit_run(*tenant, report->id, steady_ms(), retry_after)) {
    res.set_header("Retry-After", std::to_string(std::max(1, retry_after)));
    return send_problem(res, 429, "Too Many Requests", "", "The report was run too often: 5 runs per minute per tenant.");
  }
  std::map<std::string, std::string> values;
  try {
    simdjson::dom::parser parser;
    simdjson::padded_string text(req.body);
    for (simdjson::dom::object p : parser.parse(text)["parameters"].get_array()) {
      std::string value;
      simdjson::dom::element v = p["value"].value();
      if (v.is_string()) value = std::string(std::string_view(v));
      else value = simdjson::minify(v);
      values[std::string(std::string_view(p["name"]))] = value;
    }
  } catch (const simdjson::simdjson_error&) {
    return send_problem(res, 400, "One or more validation errors occurred.", "parameters",
                        "The request body must be {\"parameters\": [{\"name\": …, \"value\": …}]}.");
  }
  for (const ReportParameter& p : report->parameters)
    if (p.required && !values.count(p.name))
      return send_problem(res, 400, "One or more validation errors occurred.", p.name,
                          fmt::format("The parameter {} is required.", p.name));
  // A report of one day takes a Date; the others a From/To pair.
  const bool one_day = std::any_of(report->parameters.begin(), report->parameters.end(),
                                   [](const ReportParameter& p) { return p.name == "Date"; });
  const std::optional<Ticks> from = parse_timestamp(values[one_day ? "Date" : "From"]),
                             to = parse_timestamp(values[one_day ? "Date" : "To"]);
  if (!from || !to || *to < *from)
    return send_problem(res, 400, "One or more validation errors occurred.", "To", "To must be a date on or after From.");
  std::vector<std::string> rows;
  constexpr Ticks kDay = 86400LL * kTicksPerSecond;
  for (Ticks d = *from - (*from % kDay); d <= *to; d += kDay) {
    std::vector<std::string> day = reports_.day_rows(*tenant, *report, format_timestamp(d, 0).substr(0, 10));
    rows.insert(rows.end(), std::make_move_iterator(day.begin()), std::make_move_iterator(day.end()));
  }
  send_page(req, res, paged(rows, "\"fields\":" + fields + ","));
}

}  // namespace stsync::sandbox
