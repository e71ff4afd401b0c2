// Versioned migrations from schema/ (compiled in), applied in one transaction and recorded.
#pragma once
#include <string>

#include "pg.h"

namespace stsync {

/// Applies every migration not yet recorded in {schema}.schema_migrations, in version order,
/// in one transaction under an advisory lock (concurrent runs wait, then find nothing to do).
/// Returns how many were applied. Throws PgError.
int apply_migrations(PgConnection& db, const std::string& schema);

}  // namespace stsync
