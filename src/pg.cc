#include "pg.h"

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

bool unavailable_state(std::string_view sqlstate) {
  // 08: connection exceptions; 57P01-57P03: admin/crash shutdown, cannot connect now.
  return sqlstate.rfind("08", 0) == 0 || sqlstate == "57P01" || sqlstate == "57P02" ||
         sqlstate == "57P03";
}

}  // namespace

PgConnection::PgConnection(const std::string& conninfo) : conninfo_(conninfo) { open(); }

void PgConnection::reconnect() {
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
  open();
}

void PgConnection::open() {
  conn_ = PQconnectdb(conninfo_.c_str());
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
    std::string message = conn_ ? first_line(PQerrorMessage(conn_)) : "out of memory";
    if (conn_) PQfinish(conn_);
    conn_ = nullptr;
    throw PgError(ErrorKind::db_unavailable,
                  fmt::format("cannot connect to PostgreSQL: {} (check DATABASE_URL or PG* "
                              "variables)",
                              message),
                  "08001", "");
  }
  PQsetNoticeProcessor(conn_, &ignore_notice, nullptr);
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

void PgConnection::fail(const PGresult* result, std::string_view what) {
  const char* state = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  const char* context = result ? PQresultErrorField(result, PG_DIAG_CONTEXT) : nullptr;
  const char* primary = result ? PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  const char* detail = result ? PQresultErrorField(result, PG_DIAG_MESSAGE_DETAIL) : nullptr;
  std::string sqlstate = state ? state : "";
  std::string message = primary ? primary : first_line(PQerrorMessage(conn_));
  if (detail) message += fmt::format(" ({})", first_line(detail));
  const bool gone = PQstatus(conn_) != CONNECTION_OK || unavailable_state(sqlstate) || sqlstate.empty();
  throw PgError(gone ? ErrorKind::db_unavailable : ErrorKind::db,
                fmt::format("PostgreSQL {}: {}{}", what, message,
                            sqlstate.empty() ? "" : fmt::format(" [SQLSTATE {}]", sqlstate)),
                sqlstate, first_line(context));
}

PgResult PgConnection::exec(const std::string& sql) {
  // The simple protocol: several statements in one string are allowed (migrations need that).
  PGresult* raw = PQexec(conn_, sql.c_str());
  PgResult result(raw);
  const ExecStatusType status = PQresultStatus(raw);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) fail(raw, "statement failed");
  return result;
}

PgResult PgConnection::exec(const std::string& sql, const Params& params) {
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

void PgConnection::copy_in(const std::string& copy_sql, std::string_view data) {
  {
    PGresult* r = PQexec(conn_, copy_sql.c_str());
    std::unique_ptr<PGresult, decltype(&PQclear)> guard(r, &PQclear);
    if (PQresultStatus(r) != PGRES_COPY_IN) fail(r, "COPY");
  }
  constexpr size_t kChunk = 1 << 20;
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
  while (PGresult* rest = PQgetResult(conn_)) PQclear(rest);
}

}  // namespace stsync
