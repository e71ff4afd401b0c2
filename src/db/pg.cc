#include "pg.h"

#include <charconv>

#include "copy_text.h"

#include <fmt/format.h>

namespace stsync {
namespace {

void ignore_notice(void*, const char*) {}

std::string first_line(const char* text) {
  std::string s = text ? text : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (char& c : s)
    if (c == '\n') c = ' ';
  return s;
}

}  // namespace

PgConnection::PgConnection(const std::string& conninfo, SessionOptions options)
    : conninfo_(conninfo), options_(options) {
  open();
}

void PgResult::check_cell(int row, int col) const {
  const int rows = PQntuples(r_.get()), cols = PQnfields(r_.get());
  if (row < 0 || row >= rows || col < 0 || col >= cols)
    throw Error(ErrorKind::db, fmt::format("a query's result has {} row(s) of {} column(s); row {}, column {} was "
                                           "read (a defect in stsync: please report it)",
                                           rows, cols, row, col));
}

std::int64_t PgResult::get_int(int row, int col) const {
  const std::string text = get(row, col);
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty())
    throw Error(ErrorKind::db, fmt::format("a query's result holds '{}' in row {}, column {} where a whole number "
                                           "was expected (a defect in stsync: please report it)",
                                           is_null(row, col) ? std::string("NULL") : text, row, col));
  return value;
}

void PgConnection::reconnect() {
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
  open();
}

void PgConnection::open() {
  // Defaults first, then the user's connection string ("dbname" is expanded), which wins.
  const std::string idle = std::to_string(options_.keepalive_idle_seconds);
  const std::string user_timeout = std::to_string(options_.tcp_user_timeout_ms);
  const char* keys[] = {"application_name", "keepalives", "keepalives_idle", "keepalives_interval",
                        "keepalives_count", "tcp_user_timeout", "connect_timeout", "dbname", nullptr};
  const char* values[] = {"stsync", "1", idle.c_str(), "10", "3", user_timeout.c_str(), "10",
                          conninfo_.c_str(), nullptr};
  conn_ = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
    std::string message = conn_ ? first_line(PQerrorMessage(conn_)) : "out of memory";
    if (conn_) PQfinish(conn_);
    conn_ = nullptr;
    last_connect_error_ = message;
    throw PgError(ErrorKind::db_unavailable,
                  fmt::format("cannot connect to PostgreSQL: {} (check DATABASE_URL or PG* "
                              "variables)",
                              message),
                  "08001", "");
  }
  PQsetNoticeProcessor(conn_, &ignore_notice, nullptr);
  // Per session, not per role or database: a child timestamp without a zone is UTC (as the API
  // means it), text is UTF-8, and no statement or lock wait lasts forever.
  exec(fmt::format("SET client_encoding = 'UTF8'; SET TimeZone = 'UTC'; SET statement_timeout = {}; "
                   "SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}",
                   options_.statement_timeout_ms, options_.lock_timeout_ms, options_.idle_in_transaction_ms));
}

PgConnection::~PgConnection() {
  if (conn_) PQfinish(conn_);
}

void PgConnection::rollback_quietly() noexcept {
  if (healthy()) PQclear(PQexec(conn_, "ROLLBACK"));
}

bool PgConnection::healthy() const { return conn_ && PQstatus(conn_) == CONNECTION_OK; }

std::string PgConnection::quote_ident(std::string_view name) const {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string PgConnection::quote_literal(std::string_view text) const {
  // libpq's own escaping, which knows the session's standard_conforming_strings.
  std::unique_ptr<char, decltype(&PQfreemem)> quoted(PQescapeLiteral(conn_, text.data(), text.size()), &PQfreemem);
  if (!quoted) throw PgError(ErrorKind::db, "PostgreSQL: cannot quote a literal", "", "");
  return quoted.get();
}

void PgConnection::fail(const PGresult* result, std::string_view what) {
  const char* state = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  const char* context = result ? PQresultErrorField(result, PG_DIAG_CONTEXT) : nullptr;
  const char* primary = result ? PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  const char* detail = result ? PQresultErrorField(result, PG_DIAG_MESSAGE_DETAIL) : nullptr;
  std::string sqlstate = state ? state : "";
  std::string message = primary ? primary : first_line(PQerrorMessage(conn_));
  if (detail) {
    // A DETAIL can quote a whole failing row ("Failing row contains (…)"): a bounded excerpt.
    std::string d = first_line(detail);
    if (d.size() > 160) d = shorten_utf8(d, 157) + "...";
    message += fmt::format(" ({})", d);
  }
  const ErrorKind kind =
      PQstatus(conn_) != CONNECTION_OK ? ErrorKind::db_unavailable : classify_sqlstate(sqlstate);
  throw PgError(kind,
                fmt::format("PostgreSQL {}: {}{}", what, message,
                            sqlstate.empty() ? "" : fmt::format(" [SQLSTATE {}]", sqlstate)),
                sqlstate, first_line(context));
}

void PgConnection::require_open() const {
  // After a failed reconnect there is no connection: say why, not libpq's "connection pointer
  // is NULL".
  if (conn_ == nullptr)
    throw PgError(ErrorKind::db_unavailable,
                  fmt::format("not connected to PostgreSQL (the last attempt failed: {})", last_connect_error_), "08003",
                  "");
}

PgResult PgConnection::exec(const std::string& sql) {
  require_open();
  // The simple protocol: several statements in one string are allowed (migrations need that).
  PGresult* raw = PQexec(conn_, sql.c_str());
  PgResult result(raw);
  const ExecStatusType status = PQresultStatus(raw);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) fail(raw, "statement failed");
  return result;
}

PgResult PgConnection::exec(const std::string& sql, const Params& params) {
  require_open();
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  PGresult* raw = PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr,
                               values.data(), nullptr, nullptr, 0);
  PgResult result(raw);
  const ExecStatusType status = PQresultStatus(raw);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) fail(raw, "statement failed");
  return result;
}

std::int64_t PgConnection::copy_in(const std::string& copy_sql, std::string_view data) {
  return copy_in(copy_sql, std::vector<std::string_view>{data});
}

std::int64_t PgConnection::copy_in(const std::string& copy_sql, const std::vector<std::string_view>& parts) {
  require_open();
  {
    PGresult* r = PQexec(conn_, copy_sql.c_str());
    std::unique_ptr<PGresult, decltype(&PQclear)> guard(r, &PQclear);
    if (PQresultStatus(r) != PGRES_COPY_IN) fail(r, "COPY");
  }
  constexpr size_t kChunk = 1 << 20;
  for (std::string_view data : parts)
    for (size_t off = 0; off < data.size(); off += kChunk) {
      const size_t n = std::min(kChunk, data.size() - off);
      if (PQputCopyData(conn_, data.data() + off, static_cast<int>(n)) != 1) fail(nullptr, "COPY data");
    }
  if (PQputCopyEnd(conn_, nullptr) != 1) fail(nullptr, "COPY end");
  std::unique_ptr<PGresult, decltype(&PQclear)> r(PQgetResult(conn_), &PQclear);
  if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
    // Drain the remaining results so that the connection is ready for ROLLBACK.
    PGresult* rest;
    std::unique_ptr<PGresult, decltype(&PQclear)> keep(r.release(), &PQclear);
    while ((rest = PQgetResult(conn_)) != nullptr) PQclear(rest);
    fail(keep.get(), "COPY");
  }
  // The rows PostgreSQL stored: a BEFORE trigger that returns NULL makes it fewer than were sent.
  const std::int64_t stored = std::atoll(PQcmdTuples(r.get()));
  while (PGresult* rest = PQgetResult(conn_)) PQclear(rest);
  return stored;
}

Transaction::Transaction(PgConnection& db, const std::string& also, const Params& params)
    : db_(db), begin_result_(params.empty() ? db.exec(also.empty() ? "BEGIN" : "BEGIN; " + also) : PgResult(nullptr)) {
  if (!params.empty()) {
    // Parameters need the extended protocol, which takes one statement at a time.
    db_.exec("BEGIN");
    try {
      begin_result_ = db_.exec(also, params);
    } catch (...) {
      db_.rollback_quietly();
      throw;
    }
  }
}

Transaction::~Transaction() {
  if (open_) db_.rollback_quietly();
}

void Transaction::commit() {
  open_ = false;  // whatever COMMIT answers, the transaction is over (a failed COMMIT rolled back)
  db_.exec("COMMIT");
}

bool AdvisoryLock::try_acquire() {
  held_ = db_.exec("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", {key_}).get(0, 0) == "t";
  shared_ = false;
  return held_;
}

void AdvisoryLock::acquire_shared() {
  db_.exec("SELECT pg_advisory_lock_shared(hashtextextended($1, 0))", {key_});
  held_ = shared_ = true;
}

void AdvisoryLock::release() noexcept {
  if (!held_) return;
  held_ = false;
  try {
    if (db_.healthy())
      db_.exec(shared_ ? "SELECT pg_advisory_unlock_shared(hashtextextended($1, 0))"
                       : "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
               {key_});
  } catch (const std::exception&) {
    // The session broke meanwhile: its locks went with it.
  }
}

}  // namespace stsync
