// The per-tenant request budget: at most N requests in any sliding window of one second,
// shared by every worker that talks to the tenant (retries and token calls included); and the
// same rule for the runs of one report (N per minute).
#pragma once
#include <deque>
#include <mutex>

#include "retry.h"

namespace stsync {

class RateLimiter {
 public:
  RateLimiter(double requests_per_second, Clock& clock);
  /// At most `per_window` in any `window_seconds` (plus a margin for the server's own clock and
  /// the network's jitter).
  RateLimiter(size_t per_window, double window_seconds, Clock& clock);
  /// Blocks until one more request fits the budget, then records it.
  void acquire();

 private:
  Clock& clock_;
  size_t per_window_;
  double window_seconds_;
  std::mutex mutex_;
  std::deque<double> sent_;  // monotonic times of the requests in the current window
};

}  // namespace stsync
