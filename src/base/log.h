// Logging to stderr, one line per event. Every line passes through redaction: registered
// secrets are replaced by "***" wherever they appear, even inside a server's error text.
#pragma once
#include <fmt/format.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace stsync::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

void set_level(Level level);
/// One JSON object per line ({"time","level","event","job","tenant","page",counts…,"message"})
/// instead of text.
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

/// What the calling thread works on, carried by its log lines as JSON fields (`job`, `tenant`,
/// `page`): set for the length of a job's run. Text lines already say it in their words.
class JobContext {
 public:
  JobContext(std::string job, std::int64_t tenant);
  ~JobContext();
  JobContext(const JobContext&) = delete;
  JobContext& operator=(const JobContext&) = delete;
  /// The page in flight (1-based), for the lines that follow.
  static void set_page(std::int64_t page);
};

/// A count carried as a JSON field by an event's line ("inserted": 720).
struct Count {
  std::string_view name;
  std::int64_t value;
};
/// A named event (`job_succeeded`, `run_finished`, …): in JSON, `event` and each count are
/// fields of the line, besides the thread's job context; in text, only the message is written.
void write_event(Level level, std::string_view event, std::initializer_list<Count> counts, std::string_view message);
template <typename... Args>
void event(Level level, std::string_view name, std::initializer_list<Count> counts, fmt::format_string<Args...> f,
           Args&&... args) {
  write_event(level, name, counts, fmt::format(f, std::forward<Args>(args)...));
}

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
