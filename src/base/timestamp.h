// Timestamps as ServiceTitan sends them: RFC 3339 UTC with 0-7 fractional digits (.NET ticks).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace stsync {

/// 100-nanosecond ticks since 1970-01-01T00:00:00Z: the resolution ServiceTitan keeps.
using Ticks = std::int64_t;
inline constexpr Ticks kTicksPerSecond = 10'000'000;
inline constexpr Ticks kTicksPerMicro = 10;

/// Parses "YYYY-MM-DD", "YYYY-MM-DDTHH:MM:SS[.f…]" with "Z", "+hh:mm" or no zone (UTC).
/// Returns nullopt for anything else; more than 7 fractional digits are truncated.
std::optional<Ticks> parse_timestamp(std::string_view text);

/// Formats as RFC 3339 UTC with exactly `fraction_digits` (0-7) fractional digits.
std::string format_timestamp(Ticks t, int fraction_digits = 7);

/// Formats for PostgreSQL timestamptz input: microseconds, truncated (floor) from ticks.
std::string format_timestamp_pg(Ticks t);

/// A non-negative span for people: "45 s", "12 min", "5 h", "3652 days".
std::string describe_duration(Ticks span);

/// Wall clock now, in ticks.
Ticks now_ticks();

/// Formats as an HTTP-date (RFC 9110 IMF-fixdate), e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
std::string format_http_date(Ticks t);
/// Parses an IMF-fixdate; nullopt otherwise.
std::optional<Ticks> parse_http_date(std::string_view text);

}  // namespace stsync
