// The one exception type of stsync. Its kind says what the caller should do; retryable() is the
// single place that decides whether an error is worth another attempt.
#pragma once
#include <stdexcept>
#include <string>
#include <string_view>

namespace stsync {

enum class ErrorKind {
  network,          // connection refused/reset, timeout, body cut off: retry
  http_transient,   // 429, 5xx, 409 maintenance: retry (honour Retry-After)
  http_permanent,   // 400, 403, 404 …: a request that will never succeed as it is
  auth_rejected,    // the token endpoint refused the credentials
  token_rejected,   // an export continueFrom token the API no longer accepts
  bad_data,         // a page or record stsync cannot store (invalid JSON, wrong types…)
  config,           // configuration or usage
  db_unavailable,   // PostgreSQL unreachable or the connection broke: reconnect and retry
  db_conflict,      // serialization failure or deadlock: roll back and run the transaction again
  db_fault,         // disk full, out of memory, statement or lock timeout: the server's condition,
                    // not the record's; the job fails and the next run resumes
  db_value,         // PostgreSQL refused a value (SQLSTATE class 22): the record's fault
  db,               // any other database error (constraint, syntax, permission, migration)
  interrupted,      // a stop signal (SIGTERM, SIGINT) arrived: stop after the page in flight
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message, long http_status = 0)
      : std::runtime_error(message), kind_(kind), http_status_(http_status) {}
  ErrorKind kind() const { return kind_; }
  long http_status() const { return http_status_; }
  /// True for errors that another attempt may cure. The only retryability decision in stsync.
  bool retryable() const {
    return kind_ == ErrorKind::network || kind_ == ErrorKind::http_transient ||
           kind_ == ErrorKind::db_unavailable || kind_ == ErrorKind::db_conflict;
  }

 private:
  ErrorKind kind_;
  long http_status_;
};

/// A 403 on a resource: the tenant's app was not granted that API's scope (or the app key is
/// wrong). The one test of it: a job nobody named records it as "not permitted", `check` as DENY.
inline bool lacks_scope(const Error& e) { return e.kind() == ErrorKind::http_permanent && e.http_status() == 403; }

/// Maps an HTTP status of a resource call to the kind of error it is (2xx is not an error).
ErrorKind classify_http_status(long status);

/// Maps a PostgreSQL SQLSTATE to the kind of error it is: the one place that tells a broken
/// connection, a conflict worth repeating, a server in trouble and a refused value apart.
/// An empty SQLSTATE (libpq found no server answer) means the connection is gone.
ErrorKind classify_sqlstate(std::string_view sqlstate);

/// The SQLSTATEs that some caller treats specially beyond their kind, named here beside the
/// classifier so that no SQLSTATE is written anywhere else.
namespace sqlstate {
inline constexpr std::string_view unique_violation = "23505";   // a key already stored
inline constexpr std::string_view lock_not_available = "55P03";  // lock_timeout expired
inline constexpr std::string_view undefined_table = "42P01";
}  // namespace sqlstate

}  // namespace stsync
