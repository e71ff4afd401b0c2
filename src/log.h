// Logging to stderr, one line per event. Every line passes through redaction: registered
// secrets are replaced by "***" wherever they appear, even inside a server's error text.
#pragma once
#include <fmt/format.h>

#include <string>
#include <string_view>

namespace stsync::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

void set_level(Level level);
/// One JSON object per line ({"time","level","message"}) instead of text.
void set_json(bool json);
bool json();
/// Redraws the terminal's progress line (an empty one erases it). Only for a terminal.
void progress(std::string_view line);
/// Parses "debug", "info", "warn", "error"; returns false for anything else.
bool parse_level(std::string_view text, Level& out);
/// Registers a secret (client secret, token, app key, password). Empty strings are ignored.
void add_secret(std::string_view secret);
/// Returns `text` with every registered secret replaced by "***".
std::string redact(std::string_view text);
void write(Level level, std::string_view message);

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::debug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::error, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace stsync::log
