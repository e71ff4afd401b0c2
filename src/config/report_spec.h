// A report job's declaration, from a job file that names a `report_id` or a config [[reports]]
// entry (the same keys): see the README, "Reports".
#pragma once
#include <string>

#include <toml++/toml.h>

#include "job_spec.h"

namespace stsync {

/// Parses a report job's declaration. Throws Error(config) naming `origin` and the problem.
JobSpec parse_report_job(const toml::table& t, const std::string& origin);

/// The table a report job writes unless it names one: "report_" + its name.
std::string default_report_table(const std::string& job_name);

}  // namespace stsync
