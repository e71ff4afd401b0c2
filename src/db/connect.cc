#include "connect.h"

#include <cmath>

namespace stsync {

SessionOptions session_options(const Settings& settings) {
  SessionOptions o;
  // Validated to 0 or 1 ms .. INT_MAX ms by load_settings.
  o.statement_timeout_ms = static_cast<int>(std::llround(settings.statement_timeout_seconds * 1000));
  o.lock_timeout_ms = static_cast<int>(std::llround(settings.lock_timeout_seconds * 1000));
  return o;
}

std::unique_ptr<PgConnection> connect(const Settings& settings) {
  return std::make_unique<PgConnection>(settings.database_url, session_options(settings));
}

}  // namespace stsync
