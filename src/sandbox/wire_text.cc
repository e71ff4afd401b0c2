#include "sandbox/wire_text.h"

#include <fmt/format.h>

#include <chrono>

namespace stsync::sandbox {
namespace {

using std::chrono::days;
using std::chrono::sys_days;
using std::chrono::year_month_day;

struct Split {
  year_month_day date;
  std::int64_t second_of_day;
  std::int64_t fraction;  // ticks below the second
};

Split split(Ticks t) {
  std::int64_t seconds = t / kTicksPerSecond, fraction = t % kTicksPerSecond;
  if (fraction < 0) {
    fraction += kTicksPerSecond;
    --seconds;
  }
  std::int64_t day = seconds / 86400, second_of_day = seconds % 86400;
  if (second_of_day < 0) {
    second_of_day += 86400;
    --day;
  }
  return {year_month_day{sys_days{days{day}}}, second_of_day, fraction};
}

std::optional<int> number(std::string_view s, size_t pos, size_t n) {
  if (pos + n > s.size()) return std::nullopt;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

}  // namespace

Ticks now_ticks() {
  return std::chrono::duration_cast<std::chrono::duration<Ticks, std::ratio<1, kTicksPerSecond>>>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string format_timestamp(Ticks t, int fraction_digits) {
  const Split s = split(t);
  std::string out = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", static_cast<int>(s.date.year()),
                                static_cast<unsigned>(s.date.month()), static_cast<unsigned>(s.date.day()),
                                s.second_of_day / 3600, s.second_of_day / 60 % 60, s.second_of_day % 60);
  if (fraction_digits > 0) {
    const std::string digits = fmt::format("{:07}", s.fraction);
    out += "." + digits.substr(0, static_cast<size_t>(std::min(fraction_digits, 7)));
  }
  return out + "Z";
}

std::optional<Ticks> parse_timestamp(std::string_view s) {
  const auto y = number(s, 0, 4), mo = number(s, 5, 2), d = number(s, 8, 2);
  if (!y || !mo || !d || s[4] != '-' || s[7] != '-') return std::nullopt;
  const year_month_day date{std::chrono::year{*y}, std::chrono::month{static_cast<unsigned>(*mo)},
                            std::chrono::day{static_cast<unsigned>(*d)}};
  if (!date.ok()) return std::nullopt;
  std::int64_t seconds = static_cast<std::int64_t>(sys_days{date}.time_since_epoch().count()) * 86400;
  Ticks fraction = 0;
  size_t pos = 10;
  if (pos < s.size()) {
    if (s[pos] != 'T' && s[pos] != 't' && s[pos] != ' ') return std::nullopt;
    const auto h = number(s, pos + 1, 2), mi = number(s, pos + 4, 2), sec = number(s, pos + 7, 2);
    if (!h || !mi || !sec || s.size() < pos + 9 || s[pos + 3] != ':' || s[pos + 6] != ':' || *h > 23 || *mi > 59 ||
        *sec > 59)
      return std::nullopt;
    seconds += *h * 3600 + *mi * 60 + *sec;
    pos += 9;
    if (pos < s.size() && s[pos] == '.') {
      const size_t first = ++pos;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') ++pos;
      if (pos == first) return std::nullopt;
      std::string digits(s.substr(first, std::min<size_t>(pos - first, 7)));
      digits.resize(7, '0');
      fraction = std::stoll(digits);
    }
    if (pos < s.size()) {
      const std::string_view zone = s.substr(pos);
      if (zone == "Z" || zone == "z") {
      } else if (zone.size() == 6 && (zone[0] == '+' || zone[0] == '-') && zone[3] == ':') {
        const auto oh = number(zone, 1, 2), om = number(zone, 4, 2);
        if (!oh || !om || *oh > 23 || *om > 59) return std::nullopt;
        seconds -= (zone[0] == '+' ? 1 : -1) * (*oh * 3600 + *om * 60);
      } else {
        return std::nullopt;
      }
    }
  }
  return seconds * kTicksPerSecond + fraction;
}

std::string format_http_date(Ticks t) {
  static const char* const kWeekday[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* const kMonth[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const Split s = split(t);
  const std::chrono::weekday wd{sys_days{s.date}};
  return fmt::format("{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT", kWeekday[wd.c_encoding()],
                     static_cast<unsigned>(s.date.day()), kMonth[static_cast<unsigned>(s.date.month()) - 1],
                     static_cast<int>(s.date.year()), s.second_of_day / 3600, s.second_of_day / 60 % 60,
                     s.second_of_day % 60);
}

void append_json_string(std::string& out, std::string_view value) {
  static const char* const kHex = "0123456789abcdef";
  out += '"';
  for (const char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20) {
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += ch;
    }
  }
  out += '"';
}

}  // namespace stsync::sandbox
