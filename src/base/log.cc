#include "log.h"

#include <cstdio>
#include <mutex>
#include <vector>

#include "copy_text.h"
#include "timestamp.h"

namespace stsync::log {
namespace {
std::mutex g_mutex;
Level g_level = Level::info;
bool g_json = false;
std::vector<std::string> g_secrets;
const char* const kNames[] = {"debug", "info", "warn", "error"};
}  // namespace

void set_level(Level level) { g_level = level; }
void set_json(bool json) { g_json = json; }
bool json() { return g_json; }

namespace {
bool g_progress_shown = false;  // a progress line is on the terminal (log lines erase it first)
}

void progress(std::string_view line) {
  std::lock_guard lock(g_mutex);
  std::string out = "\r\033[K";
  out += line;
  std::fwrite(out.data(), 1, out.size(), stderr);
  std::fflush(stderr);
  g_progress_shown = !line.empty();
}

bool parse_level(std::string_view text, Level& out) {
  for (int i = 0; i < 4; ++i)
    if (text == kNames[i]) {
      out = static_cast<Level>(i);
      return true;
    }
  return false;
}

void add_secret(std::string_view secret) {
  if (secret.size() < 4) return;  // redacting "a" would shred every line; such a secret is weak anyway
  std::lock_guard lock(g_mutex);
  g_secrets.emplace_back(secret);
}

std::string redact(std::string_view text) {
  std::string out(text);
  std::lock_guard lock(g_mutex);
  for (const std::string& s : g_secrets) {
    for (size_t pos = out.find(s); pos != std::string::npos; pos = out.find(s, pos + 3))
      out.replace(pos, s.size(), "***");
  }
  return out;
}

namespace {
struct ThreadContext {
  std::string job;
  std::int64_t tenant = 0;
  std::int64_t page = 0;
  bool set = false;
};
thread_local ThreadContext t_context;
}  // namespace

JobContext::JobContext(std::string job, std::int64_t tenant) {
  t_context = ThreadContext{std::move(job), tenant, 0, true};
}
JobContext::~JobContext() { t_context = ThreadContext{}; }
void JobContext::set_page(std::int64_t page) { t_context.page = page; }

void write(Level level, std::string_view message) { write_event(level, "log", {}, message); }

void write_event(Level level, std::string_view event, std::initializer_list<Count> counts, std::string_view message) {
  if (level < g_level) return;
  std::string line;
  if (g_json) {
    // One JSON object per line, for log shippers: what happened (event), to what (job, tenant,
    // page), how much (counts), and the words (redacted first).
    line = fmt::format("{{\"time\":\"{}\",\"level\":\"{}\",\"event\":", format_timestamp(now_ticks(), 3),
                       kNames[static_cast<int>(level)]);
    append_json_string(line, event);
    if (t_context.set) {
      line += ",\"job\":";
      append_json_string(line, t_context.job);
      line += fmt::format(",\"tenant\":{}", t_context.tenant);
      if (t_context.page > 0) line += fmt::format(",\"page\":{}", t_context.page);
    }
    for (const Count& c : counts) {
      line += ',';
      append_json_string(line, c.name);
      line += fmt::format(":{}", c.value);
    }
    line += ",\"message\":";
    append_json_string(line, redact(message));
    line += "}\n";
  } else {
    line = fmt::format("{} {:5} {}\n", format_timestamp(now_ticks(), 3), kNames[static_cast<int>(level)],
                       redact(message));
  }
  std::lock_guard lock(g_mutex);
  if (g_progress_shown) {
    std::fwrite("\r\033[K", 1, 4, stderr);  // the progress line gives way; the painter redraws it
    g_progress_shown = false;
  }
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace stsync::log
