// Backoff: exponential with full jitter, Retry-After honoured, bounded per request and per job.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "timestamp.h"

namespace stsync {

/// The time seam: real in production, fake in tests so retry logic runs in microseconds.
class Clock {
 public:
  virtual ~Clock() = default;
  /// Monotonic seconds.
  virtual double monotonic() = 0;
  virtual void sleep(double seconds) = 0;
};
Clock& real_clock();

struct RetryPolicy {
  int max_attempts = 6;          // per request, the first one included
  double base_seconds = 0.5;
  double max_backoff_seconds = 60;
};

/// Parses Retry-After: delta-seconds, or an HTTP-date measured against the response's own Date
/// header (server time), or against `local_now` when the response carries no Date.
std::optional<double> parse_retry_after(const std::string& value, const std::optional<std::string>& date,
                                        Ticks local_now);

/// How long to wait before attempt `attempt` (2 = first retry). Full jitter over the exponential
/// ceiling; a server's Retry-After is a floor. `random01` is in [0, 1).
double backoff_seconds(const RetryPolicy& policy, int attempt, std::optional<double> retry_after,
                       double random01);

/// The backoff one job may still spend, shared by all its requests.
class RetryBudget {
 public:
  explicit RetryBudget(double seconds) : remaining_(seconds) {}
  /// Takes `seconds` from the budget; false (and nothing taken) when it does not hold them.
  bool take(double seconds) {
    if (seconds > remaining_) return false;
    remaining_ -= seconds;
    return true;
  }
  double remaining() const { return remaining_; }

 private:
  double remaining_;
};

}  // namespace stsync
