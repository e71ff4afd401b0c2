// Opening the database as the settings say: the session options that follow from them.
#pragma once
#include <memory>

#include "config.h"
#include "pg.h"

namespace stsync {

/// The PostgreSQL session settings that follow from `settings`.
SessionOptions session_options(const Settings& settings);

/// A connection to settings.database_url with those session settings.
std::unique_ptr<PgConnection> connect(const Settings& settings);

}  // namespace stsync
