// Process exit codes, one per failure class (documented in the README).
#pragma once

namespace stsync {
enum ExitStatus : int {
  kExitSuccess = 0,        // every selected job succeeded or was skipped (held by another run)
  kExitJobFailed = 1,      // at least one job failed after its retries
  kExitUsage = 2,          // bad command line or configuration
  kExitAuthRejected = 3,   // ServiceTitan rejected the credentials
  kExitDatabase = 4,       // PostgreSQL unreachable or a migration failed
  // 128 + the signal number (130 for SIGINT, 143 for SIGTERM): stopped by a signal; the runs in
  // flight are recorded as 'interrupted', every committed page stays.
};
}  // namespace stsync
