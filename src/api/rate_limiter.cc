#include "rate_limiter.h"

#include <cmath>

#include "stop.h"

namespace stsync {

RateLimiter::RateLimiter(double requests_per_second, Clock& clock) : clock_(clock) {
  // Fractional budgets (0.5/s) become one request per 2 s; the window has a 10% margin so that
  // scheduling and network jitter cannot squeeze N+1 arrivals into the server's one-second window.
  if (requests_per_second >= 1) {
    per_window_ = static_cast<size_t>(std::floor(requests_per_second));
    window_seconds_ = 1.1;
  } else {
    per_window_ = 1;
    window_seconds_ = 1.1 / requests_per_second;
  }
}

RateLimiter::RateLimiter(size_t per_window, double window_seconds, Clock& clock)
    : clock_(clock), per_window_(per_window), window_seconds_(window_seconds * 1.05 + 0.1) {}

void RateLimiter::acquire() {
  std::unique_lock lock(mutex_);
  for (;;) {
    const double now = clock_.monotonic();
    while (!sent_.empty() && sent_.front() <= now - window_seconds_) sent_.pop_front();
    if (sent_.size() < per_window_) {
      sent_.push_back(now);
      return;
    }
    if (stop_requested()) return;  // the caller stops before sending anything
    const double wait = sent_.front() + window_seconds_ - now;
    lock.unlock();
    clock_.sleep(wait);
    lock.lock();
  }
}

}  // namespace stsync
