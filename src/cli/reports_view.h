// `stsync reports`: the report categories and reports a tenant has, and what one report takes and
// gives, so that a report job can be declared without reading the API.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "config.h"
#include "reports.h"

namespace stsync {

/// Categories and their reports (one category with `category`), as a table or JSON.
std::string render_report_catalogue(const Settings& settings, std::optional<std::int64_t> tenant,
                                    const std::string& category, bool json);
/// One report's parameters and fields, as a table or JSON.
std::string render_report_description(const Settings& settings, std::optional<std::int64_t> tenant,
                                      const std::string& category, std::int64_t id, bool json);

/// A `[[reports]]` entry for the report, ready to paste: its Date parameter(s) as the ones stsync
/// fills day by day (one → date_parameter; a From/To or Start/End pair → from/to_parameter), the
/// other required parameters as lines to complete, the optional ones commented out.
std::string suggest_report_job(const std::string& category, const ReportDescription& report,
                               const std::string& start_date);

}  // namespace stsync
