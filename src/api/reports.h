// ServiceTitan's Reporting API, the discovery half: which report categories and reports a tenant
// has, and what a report takes (parameters) and gives (fields). `stsync reports` shows them, so
// that a user can declare a report job without reading the API.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "st_client.h"

namespace stsync {

struct ReportCategory {
  std::string id, name;
};
struct ReportSummary {
  std::int64_t id = 0;
  std::string name, description;
};
struct ReportInput {
  std::string name, label, type;  // type: String, Number, Boolean, Date, Time
  bool required = false, is_array = false;
};
struct ReportOutput {
  std::string name, label, type;
};
struct ReportDescription {
  std::int64_t id = 0;
  std::string name, description;
  std::vector<ReportInput> parameters;
  std::vector<ReportOutput> fields;
};

/// Every category of the tenant (all pages).
std::vector<ReportCategory> report_categories(ServiceTitanClient& client, std::int64_t tenant);
/// The reports of one category (all pages).
std::vector<ReportSummary> category_reports(ServiceTitanClient& client, std::int64_t tenant, const std::string& category);
/// One report's parameters and fields.
ReportDescription describe_report(ServiceTitanClient& client, std::int64_t tenant, const std::string& category,
                                  std::int64_t id);

}  // namespace stsync
