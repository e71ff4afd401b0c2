// `stsync check`: can this configuration reach PostgreSQL and ServiceTitan, and which jobs may
// each tenant's app run? Writes nothing.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config.h"

namespace stsync {

struct CheckOptions {
  bool verbose = false;                // every probe's line, not only the failures
  std::optional<std::int64_t> tenant;  // only this tenant
};
/// `stsync check`: one database round trip, then per tenant a token and one small request per
/// job the tenant runs (its own `jobs` list, else every enabled job); writes nothing. Returns
/// the failures (every line with `verbose`) and a summary line last; sets `exit_code`.
std::vector<std::string> check_connectivity(const Settings& settings, const CheckOptions& options, int& exit_code);

}  // namespace stsync
