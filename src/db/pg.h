// A thin RAII layer over libpq: a connection, results, parameterised statements and COPY IN.
#pragma once
#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "errors.h"

namespace stsync {

/// A database error; kind() comes from classify_sqlstate (errors.h).
class PgError : public Error {
 public:
  PgError(ErrorKind kind, const std::string& message, std::string sqlstate, std::string context)
      : Error(kind, message), sqlstate_(std::move(sqlstate)), context_(std::move(context)) {}
  const std::string& sqlstate() const { return sqlstate_; }
  /// PostgreSQL's CONTEXT line, e.g. "COPY stage, line 3, column total: …".
  const std::string& context() const { return context_; }

 private:
  std::string sqlstate_, context_;
};

class PgResult {
 public:
  explicit PgResult(PGresult* r) : r_(r, &PQclear) {}
  int rows() const { return PQntuples(r_.get()); }
  bool is_null(int row, int col) const {
    check_cell(row, col);
    return PQgetisnull(r_.get(), row, col) != 0;
  }
  /// The cell as text ("" for NULL). A cell outside the result is an Error, never a read of
  /// libpq's NULL (an empty result has no row 0).
  std::string get(int row, int col) const {
    check_cell(row, col);
    return PQgetvalue(r_.get(), row, col);
  }
  std::optional<std::string> get_optional(int row, int col) const {
    if (is_null(row, col)) return std::nullopt;
    return get(row, col);
  }
  /// The cell as a 64-bit integer; NULL or text that is not one is an Error.
  std::int64_t get_int(int row, int col) const;

 private:
  void check_cell(int row, int col) const;
  std::unique_ptr<PGresult, decltype(&PQclear)> r_;
};

using Params = std::vector<std::optional<std::string>>;

/// What every stsync session sets, so that a run behaves the same whatever the server's,
/// database's or role's defaults are, and never waits or holds anything forever.
struct SessionOptions {
  int statement_timeout_ms = 300000;  // one of stsync's statements: 5 min (0: none)
  int lock_timeout_ms = 10000;        // waiting for a lock: 10 s (0: none)
  int idle_in_transaction_ms = 300000;  // a stalled stsync never keeps a transaction open
  int keepalive_idle_seconds = 30;    // TCP keepalives: a dead peer is noticed in ~1 min
  int tcp_user_timeout_ms = 60000;    // unacknowledged data: give up after 1 min
};

class PgConnection {
 public:
  /// Connects with a libpq connection string or URI (empty: the PG* environment), with TCP
  /// keepalives unless the connection string sets them, then sets the session's encoding
  /// (UTF8), time zone (UTC) and timeouts. Throws PgError(db_unavailable) with libpq's message
  /// (which never holds the password).
  explicit PgConnection(const std::string& conninfo, SessionOptions options = {});
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  PgResult exec(const std::string& sql);
  PgResult exec(const std::string& sql, const Params& params);
  /// Runs `COPY … FROM STDIN` and streams `data` (COPY text) in large chunks.
  /// Returns the number of rows PostgreSQL stored (COPY's own count).
  std::int64_t copy_in(const std::string& copy_sql, std::string_view data);
  /// The same with the data in parts, sent in order (no buffer to assemble them in).
  std::int64_t copy_in(const std::string& copy_sql, const std::vector<std::string_view>& parts);
  /// Rolls back the open transaction if the connection still works; never throws.
  void rollback_quietly() noexcept;
  /// True while the connection is usable.
  bool healthy() const;
  /// Drops the connection and opens a new one with the same parameters. Session state (temporary
  /// tables, advisory locks) is gone afterwards. Throws PgError(db_unavailable) on failure.
  void reconnect();
  /// Throws PgError(db_unavailable) naming the last connection failure when not connected.
  void require_open() const;
  /// A new connection with the same parameters.
  std::unique_ptr<PgConnection> open_another() const {
    return std::make_unique<PgConnection>(conninfo_, options_);
  }
  /// A safely quoted identifier.
  std::string quote_ident(std::string_view name) const;
  /// A safely quoted string literal (for the few statements sent as text with several parts).
  std::string quote_literal(std::string_view text) const;

 private:
  [[noreturn]] void fail(const PGresult* result, std::string_view what);
  void open();
  std::string conninfo_;
  SessionOptions options_;
  PGconn* conn_ = nullptr;
  std::string last_connect_error_;  // why the last open() failed
};

/// A transaction on `db`, libpqxx's way: the constructor sends BEGIN (with `also`, more
/// statements in the same round trip: "SELECT …" whose result is begin_result()), commit()
/// sends COMMIT, and a transaction destroyed without commit() — any exception on the way — is
/// rolled back, quietly, so the connection is clean for its next user. The only place stsync
/// sends BEGIN.
class Transaction {
 public:
  explicit Transaction(PgConnection& db, const std::string& also = {}, const Params& params = {});
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  /// The result of `also` (the BEGIN's own result without it).
  PgResult& begin_result() { return begin_result_; }
  void commit();

 private:
  PgConnection& db_;
  PgResult begin_result_;
  bool open_ = true;
};

/// A session-level advisory lock named by `key` (hashed by PostgreSQL's hashtextextended):
/// try_acquire() takes it without waiting (or shared(), waiting), the destructor releases what
/// was taken — on any exception too, and never throws (a session that is gone has lost its
/// locks already).
class AdvisoryLock {
 public:
  AdvisoryLock(PgConnection& db, std::string key) : db_(db), key_(std::move(key)) {}
  ~AdvisoryLock() { release(); }
  AdvisoryLock(const AdvisoryLock&) = delete;
  AdvisoryLock& operator=(const AdvisoryLock&) = delete;
  /// False when another session holds it.
  bool try_acquire();
  /// Shared mode, waiting for an exclusive holder (bounded by the session's lock_timeout).
  void acquire_shared();
  void release() noexcept;
  bool held() const { return held_; }
  /// After a reconnect: the old session's lock is gone with it.
  void forget() { held_ = false; }
  const std::string& key() const { return key_; }

 private:
  PgConnection& db_;
  std::string key_;
  bool held_ = false, shared_ = false;
};

}  // namespace stsync
