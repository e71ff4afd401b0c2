// Stop requests: SIGTERM (systemd stop, Kubernetes pod termination) and SIGINT (Ctrl-C) set a
// flag that every long wait checks: HTTP transfers, backoff sleeps, the rate limiter, the walks.
// A job then stops after the page in flight (committed or rolled back), records its run as
// `interrupted`, and the process exits with 128 + the signal number (143, 130).
#pragma once

namespace stsync {

/// Installs the handlers (once). A second signal while stopping ends the process at once; the
/// next run marks what was left running as interrupted and resumes from the committed page.
void install_stop_handlers();
bool stop_requested();
/// The signal that asked to stop; 0 when none did.
int stop_signal();
/// "SIGTERM", "SIGINT", … for messages.
const char* stop_signal_name();

}  // namespace stsync
