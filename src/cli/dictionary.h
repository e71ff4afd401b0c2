// What the tables are, for the people who build on them: a data dictionary (markdown) and a dbt
// sources file, both generated from the job files (their descriptions come from ServiceTitan's
// specs), the same text the tables' COMMENTs carry.
#pragma once
#include <string>
#include <vector>

#include "job_spec.h"

namespace stsync {

/// `stsync docs`: every job table and child table with its columns, types, keys, parent and
/// child links and descriptions.
std::string render_data_dictionary(const std::vector<JobSpec>& specs, const std::string& schema);

/// `stsync dbt`: a dbt sources.yml: tables, columns with descriptions, loaded_at_field, freshness
/// from each job's cadence, not_null and unique tests on the key.
std::string render_dbt_sources(const std::vector<JobSpec>& specs, const std::string& schema);

}  // namespace stsync
