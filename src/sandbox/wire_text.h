// The sandbox's own text of the wire: times as ServiceTitan writes them (RFC 3339 with 0-7
// fractional digits, HTTP dates) and JSON strings. Written apart from the product's
// timestamp/copy_text code on purpose: the sandbox is the tests' oracle, and an oracle that
// shares the product's code cannot see that code's bugs. It uses <chrono>'s calendar, not the
// product's day arithmetic.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace stsync::sandbox {

/// 100-nanosecond ticks since 1970-01-01T00:00:00Z (ServiceTitan's resolution).
using Ticks = std::int64_t;
inline constexpr Ticks kTicksPerSecond = 10'000'000;

/// The wall clock, in ticks.
Ticks now_ticks();

/// "YYYY-MM-DDTHH:MM:SS[.f…]Z" with exactly `fraction_digits` (0-7) digits, truncated.
std::string format_timestamp(Ticks t, int fraction_digits = 7);

/// Reads "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SS[.f…]" with "Z", "±hh:mm" or no zone (UTC), as the
/// API's filters accept them; nullopt for anything else (the API answers 400).
std::optional<Ticks> parse_timestamp(std::string_view text);

/// "Sun, 06 Nov 1994 08:49:37 GMT".
std::string format_http_date(Ticks t);

/// Appends `value` as a JSON string (quotes, backslashes and control characters escaped).
void append_json_string(std::string& out, std::string_view value);

}  // namespace stsync::sandbox
