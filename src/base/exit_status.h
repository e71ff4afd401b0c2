// Process exit codes, one per failure class (documented in the README).
#pragma once
#include "errors.h"

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

/// The exit status for an error: the one mapping. `whole_command`: the error ended the command
/// itself (a migration, the database at start, a status query): every database error is then
/// kExitDatabase. A job's failure counts as kExitDatabase only when PostgreSQL was unreachable;
/// a refused row or a server fault fails the job (kExitJobFailed), and the other jobs went on.
inline ExitStatus exit_status_for(ErrorKind kind, bool whole_command) {
  switch (kind) {
    case ErrorKind::config: return kExitUsage;
    case ErrorKind::auth_rejected: return kExitAuthRejected;
    case ErrorKind::db_unavailable: return kExitDatabase;
    case ErrorKind::db:
    case ErrorKind::db_fault:
    case ErrorKind::db_conflict: return whole_command ? kExitDatabase : kExitJobFailed;
    default: return kExitJobFailed;
  }
}

}  // namespace stsync
