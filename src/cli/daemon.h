// `stsync daemon`: runs the due jobs forever (a fleet member like any `stsync run`), serving
// /metrics and /healthz, until SIGTERM/SIGINT.
#pragma once
#include <string>

#include "config.h"
#include "job_run.h"

namespace stsync {

struct DaemonOptions {
  double interval_seconds = 30;  // between rounds of due jobs
  std::string listen = "127.0.0.1:9464";  // /metrics and /healthz ("" or "off": none)
  std::string port_file;         // the bound port is written here (tests, port 0)
  double health_timeout_seconds = 0;  // /healthz is 503 when no round started or ended for this
                                      // long (0: max(300, 3 x interval) + 2 x max-run-time or 1 h)
  RunOptions run;                // jobs, tenant, max_run_seconds; `due` is always on
};

/// Returns the exit code: 0 after a stop request (the page in flight was committed or rolled
/// back, the runs recorded), 2 for a bad --listen.
int run_daemon(const Settings& settings, const DaemonOptions& options);

}  // namespace stsync
