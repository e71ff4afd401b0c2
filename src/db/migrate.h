// Versioned migrations from schema/ (compiled in), applied in one transaction and recorded.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "job_spec.h"
#include "pg.h"
#include "table_shape.h"

namespace stsync {

/// Applies every migration not yet recorded in {schema}.schema_migrations, in version order,
/// in one transaction under an advisory lock (concurrent runs wait, then find nothing to do).
/// Returns how many were applied. Throws PgError.
int apply_migrations(PgConnection& db, const std::string& schema);

/// Makes every job's table match its job file: creates a missing table (tenant_id, id, the typed
/// columns, modified_on, active, raw, synced_at) and adds missing typed columns. Reads the
/// catalog first, so that a routine run takes no lock on an existing table. One transaction,
/// under the migrations' lock. Returns the jobs whose table could not be altered within
/// lock_timeout (another session holds it), with the message; those jobs must not run.
std::map<std::string, std::string> ensure_job_tables(PgConnection& db, const std::string& schema,
                                                     const std::vector<JobSpec>& specs);

/// Creates the table of `shape` if missing and adds the columns it lacks (the catalog read first:
/// an existing table with every column is not locked; a missing column is added within
/// lock_timeout, else PgError(db_fault)). In the caller's transaction.
void ensure_table_shape(PgConnection& db, const std::string& schema, const TableShape& shape);

}  // namespace stsync
