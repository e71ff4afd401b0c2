#include "errors.h"

namespace stsync {

ErrorKind classify_http_status(long status) {
  // 408 timeout, 409 "service suspended for maintenance", 425/429 throttling and every 5xx are
  // conditions of the server, not of the request: the same request may succeed later.
  if (status == 408 || status == 409 || status == 425 || status == 429 || status >= 500)
    return ErrorKind::http_transient;
  return ErrorKind::http_permanent;
}

}  // namespace stsync
