#include "reports_view.h"

#include <fmt/format.h>

#include "copy_text.h"
#include "reports.h"
#include "scheduler.h"
#include "st_client.h"
#include "table_shape.h"
#include "timestamp.h"

namespace stsync {
namespace {

// The tenant whose reports are shown: the one asked for, else the first configured.
template <typename Body>
std::string with_client(const Settings& settings, std::optional<std::int64_t> tenant, Body body) {
  RunOptions selection;
  selection.tenant = tenant;
  const std::vector<TenantConfig> tenants = selected_tenants(settings, selection);
  if (tenants.empty()) throw Error(ErrorKind::config, "reports: no tenant is configured (or --tenant names none)");
  CurlTransport transport(curl_options(settings));
  TenantSession session(tenants.front(), settings.requests_per_second, real_clock());
  RetryBudget budget(settings.retry_budget_seconds);
  ServiceTitanClient client(settings, session, transport, real_clock(), budget);
  return body(client, tenants.front().id);
}

std::string json_text(const std::string& s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

// Lower case, for matching parameter names.
std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

}  // namespace

std::string suggest_report_job(const std::string& category, const ReportDescription& report,
                               const std::string& start_date) {
  std::vector<const ReportInput*> dates;
  for (const ReportInput& p : report.parameters)
    if (p.type == "Date" && !p.is_array) dates.push_back(&p);
  // Which of two dates opens the range: "From"/"Start…" (the other closes it).
  auto opens = [](const ReportInput* p) {
    const std::string n = lower(p->name);
    return n.find("from") != std::string::npos || n.find("start") != std::string::npos;
  };
  const ReportInput* from = nullptr;
  const ReportInput* to = nullptr;
  if (dates.size() == 2 && opens(dates[0]) != opens(dates[1])) {
    from = opens(dates[0]) ? dates[0] : dates[1];
    to = opens(dates[0]) ? dates[1] : dates[0];
  }
  std::string out = "[[reports]]\n";
  out += fmt::format("name = \"{}\"\ncategory = \"{}\"\nreport_id = {}\n", report_column_name(report.name), category,
                     report.id);
  if (from) {
    out += fmt::format("from_parameter = \"{}\"\nto_parameter = \"{}\"\n", from->name, to->name);
  } else if (dates.size() == 1) {
    out += fmt::format("date_parameter = \"{}\"\n", dates[0]->name);
  } else {
    out += "# date_parameter = \"…\"   (or from_parameter and to_parameter): the report's day, filled in by stsync;";
    out += dates.empty() ? " this report takes no date\n" : " its Date parameters do not say which opens the range\n";
  }
  out += fmt::format("start_date = \"{}\"\nlookback_days = 3\nevery = \"1d\"\n", start_date);
  std::string fixed;
  for (const ReportInput& p : report.parameters) {
    if (&p == from || &p == to || (!from && dates.size() == 1 && &p == dates[0])) continue;
    const std::string example = p.type == "Boolean" ? "false"
                                : p.type == "Number" ? "0"
                                                     : "\"\"";
    fixed += fmt::format("{}{} = {}{}   # {}{}, {}\n", p.required ? "" : "# ", p.name, p.is_array ? "[" : "", example +
                         (p.is_array ? "]" : ""), p.type, p.is_array ? " list" : "",
                         p.required ? "required: set it" : "optional");
  }
  if (!fixed.empty()) out += "[reports.parameters]\n" + fixed;
  return out;
}

std::string render_report_catalogue(const Settings& settings, std::optional<std::int64_t> tenant,
                                    const std::string& category, bool json) {
  return with_client(settings, tenant, [&](ServiceTitanClient& client, std::int64_t id) {
    std::vector<ReportCategory> categories = report_categories(client, id);
    if (!category.empty()) {
      std::erase_if(categories, [&](const ReportCategory& c) { return c.id != category; });
      if (categories.empty())
        throw Error(ErrorKind::config, fmt::format("reports: tenant {} has no report category '{}'", id, category));
    }
    std::string out = json ? "[" : fmt::format("{:<16} {:>8}  {:<40} {}\n", "CATEGORY", "REPORT", "NAME", "DESCRIPTION");
    bool first = true;
    for (const ReportCategory& c : categories)
      for (const ReportSummary& r : category_reports(client, id, c.id)) {
        if (json)
          out += fmt::format("{}\n  {{\"category\":{},\"category_name\":{},\"id\":{},\"name\":{},\"description\":{}}}",
                             first ? "" : ",", json_text(c.id), json_text(c.name), r.id, json_text(r.name),
                             json_text(r.description));
        else
          out += fmt::format("{:<16} {:>8}  {:<40} {}\n", c.id, r.id, r.name, r.description);
        first = false;
      }
    if (json) return out + "\n]\n";
    return out + fmt::format("tenant {}: `stsync reports describe CATEGORY REPORT` shows a report's parameters and "
                             "fields\n",
                             id);
  });
}

std::string render_report_description(const Settings& settings, std::optional<std::int64_t> tenant,
                                      const std::string& category, std::int64_t report, bool json) {
  return with_client(settings, tenant, [&](ServiceTitanClient& client, std::int64_t id) {
    const ReportDescription d = describe_report(client, id, category, report);
    if (json) {
      std::string out = fmt::format("{{\"category\":{},\"id\":{},\"name\":{},\"description\":{},\"parameters\":[",
                                    json_text(category), d.id, json_text(d.name), json_text(d.description));
      for (size_t i = 0; i < d.parameters.size(); ++i)
        out += fmt::format("{}{{\"name\":{},\"label\":{},\"type\":{},\"required\":{},\"array\":{}}}", i ? "," : "",
                           json_text(d.parameters[i].name), json_text(d.parameters[i].label),
                           json_text(d.parameters[i].type), d.parameters[i].required, d.parameters[i].is_array);
      out += "],\"fields\":[";
      for (size_t i = 0; i < d.fields.size(); ++i)
        out += fmt::format("{}{{\"name\":{},\"label\":{},\"type\":{}}}", i ? "," : "", json_text(d.fields[i].name),
                           json_text(d.fields[i].label), json_text(d.fields[i].type));
      return out + "]}\n";
    }
    std::string out = fmt::format("report {}/{}: {}\n{}\n\nparameters:\n", category, d.id, d.name, d.description);
    for (const ReportInput& p : d.parameters)
      out += fmt::format("  {:<24} {:<8} {}{}  ({})\n", p.name, p.type, p.required ? "required" : "optional",
                         p.is_array ? ", a list" : "", p.label);
    out += "fields:\n";
    for (const ReportOutput& f : d.fields) out += fmt::format("  {:<24} {:<8} ({})\n", f.name, f.type, f.label);
    // A job for it, ready to paste (README "Reports"), starting 30 days back.
    const std::string start = format_timestamp(now_ticks() - 30LL * 86400 * kTicksPerSecond, 0).substr(0, 10);
    return out + "\na report job for it (add to the config; README, \"Reports\"):\n" +
           suggest_report_job(category, d, start);
  });
}

}  // namespace stsync
