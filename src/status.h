// `stsync status`: per tenant and job, the watermark, token, rows, last run and last error.
#pragma once
#include <string>

#include "config.h"

namespace stsync {

/// Reads the state and history tables. Returns a text table, or JSON when `json` is set.
/// Throws PgError when the database cannot be read.
std::string render_status(const Settings& settings, bool json);

/// `stsync jobs`: every job file (with the config's overrides): name, table, mode, key, parent,
/// endpoint, enabled, cadence, child tables and the last result, when the database can be read.
std::string render_jobs(const Settings& settings, bool json);

}  // namespace stsync
