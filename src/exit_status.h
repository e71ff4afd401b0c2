// Process exit codes, one per failure class (documented in the README).
#pragma once

namespace stsync {
enum ExitStatus : int {
  kExitSuccess = 0,        // every selected job succeeded or was skipped (held by another run)
  kExitJobFailed = 1,      // at least one job failed after its retries
  kExitUsage = 2,          // bad command line or configuration
  kExitAuthRejected = 3,   // ServiceTitan rejected the credentials
  kExitDatabase = 4,       // PostgreSQL unreachable or a migration failed
};
}  // namespace stsync
