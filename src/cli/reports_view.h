// `stsync reports`: the report categories and reports a tenant has, and what one report takes and
// gives, so that a report job can be declared without reading the API.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "config.h"

namespace stsync {

/// Categories and their reports (one category with `category`), as a table or JSON.
std::string render_report_catalogue(const Settings& settings, std::optional<std::int64_t> tenant,
                                    const std::string& category, bool json);
/// One report's parameters and fields, as a table or JSON.
std::string render_report_description(const Settings& settings, std::optional<std::int64_t> tenant,
                                      const std::string& category, std::int64_t id, bool json);

}  // namespace stsync
