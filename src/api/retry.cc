#include "retry.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <thread>

#include "stop.h"

namespace stsync {
namespace {
class RealClock final : public Clock {
 public:
  double monotonic() override {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
  }
  // Sleeps in short slices so that a stop request (SIGTERM) ends a backoff at once.
  void sleep(double seconds) override {
    using namespace std::chrono;
    const auto until = steady_clock::now() + duration_cast<steady_clock::duration>(duration<double>(seconds));
    while (!stop_requested()) {
      const auto left = until - steady_clock::now();
      if (left <= steady_clock::duration::zero()) return;
      std::this_thread::sleep_for(std::min<steady_clock::duration>(left, milliseconds(50)));
    }
  }
};
}  // namespace

Clock& real_clock() {
  static RealClock clock;
  return clock;
}

std::optional<double> parse_retry_after(const std::string& value,
                                        const std::optional<std::string>& date, Ticks local_now) {
  if (value.empty()) return std::nullopt;
  if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::min(std::atof(value.c_str()), 3600.0);
  auto when = parse_http_date(value);
  if (!when) return std::nullopt;
  // Compare with the server's clock when it tells us, so a skewed local clock cannot turn the
  // wait into zero or into hours.
  Ticks now = local_now;
  if (date)
    if (auto server_now = parse_http_date(*date)) now = *server_now;
  const double seconds = static_cast<double>(*when - now) / kTicksPerSecond;
  return std::clamp(seconds, 0.0, 3600.0);
}

double backoff_seconds(const RetryPolicy& policy, int attempt, std::optional<double> retry_after,
                       double random01) {
  const double ceiling =
      std::min(policy.max_backoff_seconds, policy.base_seconds * std::pow(2.0, std::max(0, attempt - 2)));
  const double jittered = ceiling * random01;
  if (retry_after) return std::max(*retry_after, jittered);
  return jittered;
}

}  // namespace stsync
