#include "errors.h"

namespace stsync {

ErrorKind classify_http_status(long status) {
  // 408 timeout, 409 "service suspended for maintenance", 425/429 throttling and every 5xx are
  // conditions of the server, not of the request: the same request may succeed later.
  if (status == 408 || status == 409 || status == 425 || status == 429 || status >= 500)
    return ErrorKind::http_transient;
  return ErrorKind::http_permanent;
}

ErrorKind classify_sqlstate(std::string_view state) {
  auto cls = [&](std::string_view c) { return state.substr(0, 2) == c; };
  // 08: connection exceptions; 57P01-57P03: shutdown, crash, cannot connect now.
  if (state.empty() || cls("08") || state == "57P01" || state == "57P02" || state == "57P03")
    return ErrorKind::db_unavailable;
  // 40001 serialization failure, 40P01 deadlock: the same transaction may succeed next time.
  if (state == "40001" || state == "40P01") return ErrorKind::db_conflict;
  // 53: insufficient resources (disk full, out of memory, too many connections); 57014:
  // statement timeout or cancel; 55P03: lock not available (lock_timeout); 58: system errors
  // (I/O); XX: internal errors. None is the fault of the record being stored.
  if (cls("53") || state == "57014" || state == sqlstate::lock_not_available || cls("58") || cls("XX"))
    return ErrorKind::db_fault;
  // 22: data exception (bad text representation, out of range, untranslatable character,
  // invalid JSON text…): the value that was sent.
  if (cls("22")) return ErrorKind::db_value;
  return ErrorKind::db;
}

}  // namespace stsync
