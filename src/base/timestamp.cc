#include "timestamp.h"

#include <chrono>
#include <cstdio>
#include <fmt/format.h>

namespace stsync {
namespace {

// Howard Hinnant's days_from_civil: exact proleptic Gregorian arithmetic without time zones.
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

struct Civil {
  std::int64_t year;
  unsigned month, day;
};

Civil civil_from_days(std::int64_t z) {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2), m, d};
}

bool read_digits(std::string_view s, size_t pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return true;
}

bool valid_date(int y, int m, int d) {
  static const int days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (m < 1 || m > 12 || d < 1 || d > days[m - 1]) return false;
  if (m == 2 && d == 29) return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return true;
}

Ticks floor_div(Ticks a, Ticks b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

const char* const kWeekdays[] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};
const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                               "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

}  // namespace

std::optional<Ticks> parse_timestamp(std::string_view s) {
  int y, mo, d, h = 0, mi = 0, sec = 0;
  if (!read_digits(s, 0, 4, y) || s.size() < 10 || s[4] != '-' || !read_digits(s, 5, 2, mo) ||
      s[7] != '-' || !read_digits(s, 8, 2, d) || !valid_date(y, mo, d))
    return std::nullopt;
  size_t pos = 10;
  Ticks fraction = 0;
  std::int64_t offset_seconds = 0;
  if (pos < s.size()) {
    if (s[pos] != 'T' && s[pos] != 't' && s[pos] != ' ') return std::nullopt;
    if (!read_digits(s, pos + 1, 2, h) || s.size() < pos + 9 || s[pos + 3] != ':' ||
        !read_digits(s, pos + 4, 2, mi) || s[pos + 6] != ':' || !read_digits(s, pos + 7, 2, sec))
      return std::nullopt;
    if (h > 23 || mi > 59 || sec > 59) return std::nullopt;
    pos += 9;
    if (pos < s.size() && s[pos] == '.') {
      ++pos;
      size_t digits = 0;
      Ticks scale = kTicksPerSecond / 10;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
        if (digits < 7) {
          fraction += (s[pos] - '0') * scale;
          scale /= 10;
        }
        ++digits;
        ++pos;
      }
      if (digits == 0) return std::nullopt;
    }
    if (pos < s.size()) {
      char z = s[pos];
      if ((z == 'Z' || z == 'z') && pos + 1 == s.size()) {
        pos += 1;
      } else if ((z == '+' || z == '-') && s.size() == pos + 6 && s[pos + 3] == ':') {
        int oh, om;
        if (!read_digits(s, pos + 1, 2, oh) || !read_digits(s, pos + 4, 2, om) || oh > 23 ||
            om > 59)
          return std::nullopt;
        offset_seconds = (oh * 3600 + om * 60) * (z == '+' ? 1 : -1);
        pos += 6;
      } else {
        return std::nullopt;
      }
    }
  }
  const std::int64_t seconds =
      days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset_seconds;
  return seconds * kTicksPerSecond + fraction;
}

std::string format_timestamp(Ticks t, int fraction_digits) {
  const Ticks seconds = floor_div(t, kTicksPerSecond);
  const Ticks frac = t - seconds * kTicksPerSecond;
  const std::int64_t days = floor_div(seconds, 86400);
  const std::int64_t rem = seconds - days * 86400;
  const Civil c = civil_from_days(days);
  std::string out = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", c.year, c.month, c.day,
                                rem / 3600, (rem / 60) % 60, rem % 60);
  if (fraction_digits > 0) {
    std::string f = fmt::format("{:07}", frac);
    out += '.';
    out += f.substr(0, static_cast<size_t>(std::min(fraction_digits, 7)));
  }
  out += 'Z';
  return out;
}

std::string format_timestamp_pg(Ticks t) {
  std::string s = format_timestamp(floor_div(t, kTicksPerMicro) * kTicksPerMicro, 7);
  // "…SS.fffffffZ" → "…SS.ffffff+00"
  s.erase(s.size() - 2);
  s += "+00";
  return s;
}

Ticks now_ticks() {
  using namespace std::chrono;
  return duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count() / 100;
}

std::string format_http_date(Ticks t) {
  const Ticks seconds = floor_div(t, kTicksPerSecond);
  const std::int64_t days = floor_div(seconds, 86400);
  const std::int64_t rem = seconds - days * 86400;
  const Civil c = civil_from_days(days);
  const int weekday = static_cast<int>(((days % 7) + 7) % 7);
  return fmt::format("{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT", kWeekdays[weekday], c.day,
                     kMonths[c.month - 1], c.year, rem / 3600, (rem / 60) % 60, rem % 60);
}

std::optional<Ticks> parse_http_date(std::string_view s) {
  // "Sun, 06 Nov 1994 08:49:37 GMT"
  if (s.size() != 29 || s[3] != ',' || s.substr(26) != "GMT") return std::nullopt;
  int d, y, h, mi, sec;
  if (!read_digits(s, 5, 2, d) || !read_digits(s, 12, 4, y) || !read_digits(s, 17, 2, h) ||
      !read_digits(s, 20, 2, mi) || !read_digits(s, 23, 2, sec))
    return std::nullopt;
  int month = 0;
  for (int i = 0; i < 12; ++i)
    if (s.substr(8, 3) == kMonths[i]) month = i + 1;
  if (month == 0 || !valid_date(y, month, d) || h > 23 || mi > 59 || sec > 60)
    return std::nullopt;
  return (days_from_civil(y, month, d) * 86400 + h * 3600 + mi * 60 + sec) * kTicksPerSecond;
}

std::string describe_duration(Ticks span) {
  const std::int64_t seconds = span / kTicksPerSecond;
  if (seconds < 120) return std::to_string(seconds) + " s";
  if (seconds < 7200) return std::to_string(seconds / 60) + " min";
  if (seconds < 172800) return std::to_string(seconds / 3600) + " h";
  return std::to_string(seconds / 86400) + " days";
}

}  // namespace stsync
