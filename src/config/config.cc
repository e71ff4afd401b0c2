#include "config.h"

#include "suggest.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdlib>
#include <fmt/format.h>
#include <sstream>
#include <fstream>
#include <filesystem>
#include <toml++/toml.h>

#include "errors.h"
#include "report_spec.h"

namespace stsync {
namespace {

[[noreturn]] void fail(const std::string& message) { throw Error(ErrorKind::config, message); }

bool read_tenants(const toml::table& root, const std::string& path, std::vector<TenantConfig>& out);

void check_keys(const toml::table& t, std::initializer_list<std::string_view> allowed,
                const std::string& where) {
  for (const auto& [key, value] : t)
    if (std::find(allowed.begin(), allowed.end(), key.str()) == allowed.end())
      fail(fmt::format("config: unknown key '{}' in {}", key.str(), where));
}

template <typename T>
void read(const toml::table& t, const char* key, T& slot, const std::string& where) {
  const toml::node* n = t.get(key);
  if (n == nullptr) return;
  if constexpr (std::is_same_v<T, std::string>) {
    if (!n->is_string()) fail(fmt::format("config: {}.{} must be a string", where, key));
    slot = *n->value<std::string>();
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!n->is_boolean()) fail(fmt::format("config: {}.{} must be true or false", where, key));
    slot = *n->value<bool>();
  } else if constexpr (std::is_same_v<T, double>) {
    if (!n->is_number()) fail(fmt::format("config: {}.{} must be a number", where, key));
    slot = *n->value<double>();
  } else {
    if (!n->is_integer()) fail(fmt::format("config: {}.{} must be an integer", where, key));
    const std::int64_t v = *n->value<std::int64_t>();
    if (v < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
        v > static_cast<std::int64_t>(std::numeric_limits<T>::max()))
      fail(fmt::format("config: {}.{} = {} is out of range", where, key, v));
    slot = static_cast<T>(v);
  }
}

template <typename T>
void read_optional(const toml::table& t, const char* key, std::optional<T>& slot, const std::string& where) {
  if (t.get(key) == nullptr) return;
  T v{};
  read(t, key, v, where);
  slot = v;
}

// An environment value must be a number, all of it: "2m" is an error, never 2 or 0.
double env_number(const std::string& text, const char* name) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno != 0 || !std::isfinite(v))
    fail(fmt::format("{} must be a number{}, not '{}'", name,
                     std::string_view(name).find("SECONDS") != std::string_view::npos ? " of seconds" : "", text));
  return v;
}

int env_integer(const std::string& text, const char* name) {
  const double v = env_number(text, name);
  if (v != std::floor(v) || v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    fail(fmt::format("{} must be a whole number, not '{}'", name, text));
  return static_cast<int>(v);
}

std::int64_t parse_tenant_id(const std::string& text, const char* source) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v <= 0)
    fail(fmt::format("{} '{}' is not a tenant id (a positive integer)", source, text));
  return v;
}

bool parse_bool(const std::string& text, const char* name) {
  if (text == "1" || text == "true" || text == "yes") return true;
  if (text == "0" || text == "false" || text == "no") return false;
  fail(fmt::format("{} must be true or false, not '{}'", name, text));
}

MetricsBy parse_metrics_by(const std::string& text, const std::string& where) {
  if (text == "tenant_job") return MetricsBy::tenant_job;
  if (text == "tenant") return MetricsBy::tenant;
  if (text == "job") return MetricsBy::job;
  fail(fmt::format("{} must be \"tenant_job\", \"tenant\" or \"job\", not \"{}\"", where, text));
}

void load_file(const std::string& path, Settings& s, std::vector<std::string>& warnings) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const std::string desc(e.description());
    if (e.source().begin.line == 0 || desc.find("File could not be opened") != std::string::npos)
      fail(fmt::format("config file {} cannot be read: {}", path, desc));
    fail(fmt::format("config file {} line {}: {}", path, e.source().begin.line, desc));
  }
  check_keys(root, {"servicetitan", "database", "run", "tenants", "jobs", "reports"}, "the top level");
  bool holds_secret = false;
  if (const toml::table* st = root["servicetitan"].as_table()) {
    check_keys(*st,
               {"environment", "auth_url", "api_url", "app_key", "requests_per_second",
                "timeout_seconds", "connect_timeout_seconds", "max_attempts",
                "retry_budget_seconds", "max_backoff_seconds", "list_safety_seconds",
                "tls_verify", "ca_file", "max_response_mb", "max_json_depth", "max_clock_skew_seconds",
                "report_runs", "report_window_seconds"},
               "[servicetitan]");
    read(*st, "environment", s.environment, "servicetitan");
    read(*st, "auth_url", s.auth_url, "servicetitan");
    read(*st, "api_url", s.api_url, "servicetitan");
    read(*st, "app_key", s.app_key, "servicetitan");
    read(*st, "requests_per_second", s.requests_per_second, "servicetitan");
    read(*st, "timeout_seconds", s.timeout_seconds, "servicetitan");
    read(*st, "connect_timeout_seconds", s.connect_timeout_seconds, "servicetitan");
    read(*st, "max_attempts", s.max_attempts, "servicetitan");
    read(*st, "retry_budget_seconds", s.retry_budget_seconds, "servicetitan");
    read(*st, "max_backoff_seconds", s.max_backoff_seconds, "servicetitan");
    read(*st, "list_safety_seconds", s.list_safety_seconds, "servicetitan");
    read(*st, "max_clock_skew_seconds", s.max_clock_skew_seconds, "servicetitan");
    read(*st, "tls_verify", s.tls_verify, "servicetitan");
    read(*st, "ca_file", s.ca_file, "servicetitan");
    std::optional<double> max_mb;
    read_optional(*st, "max_response_mb", max_mb, "servicetitan");
    if (max_mb) {
      if (!(*max_mb >= 0.01 && *max_mb <= 4096))
        fail(fmt::format("config: servicetitan.max_response_mb must be between 0.01 and 4096 (not {})", *max_mb));
      s.max_response_bytes = static_cast<std::int64_t>(*max_mb * (1 << 20));
    }
    read(*st, "max_json_depth", s.max_json_depth, "servicetitan");
    read(*st, "report_runs", s.report_runs, "servicetitan");
    read(*st, "report_window_seconds", s.report_window_seconds, "servicetitan");
    if (s.report_runs < 1 || !(s.report_window_seconds > 0))
      fail("config: servicetitan.report_runs must be at least 1 and report_window_seconds above 0");
    holds_secret |= !s.app_key.empty();
  }
  if (const toml::table* db = root["database"].as_table()) {
    check_keys(*db, {"url", "schema", "reconnect_attempts", "statement_timeout_seconds", "lock_timeout_seconds"},
               "[database]");
    read(*db, "reconnect_attempts", s.db_reconnect_attempts, "database");
    read(*db, "statement_timeout_seconds", s.statement_timeout_seconds, "database");
    read(*db, "lock_timeout_seconds", s.lock_timeout_seconds, "database");
    read(*db, "url", s.database_url, "database");
    read(*db, "schema", s.schema, "database");
    holds_secret |= s.database_url.find("password") != std::string::npos ||
                    s.database_url.find(':', s.database_url.find("//") + 2) <
                        s.database_url.find('@');
  }
  if (const toml::table* run = root["run"].as_table()) {
    check_keys(*run,
               {"parallel", "page_connections", "jobs_dir", "log_level", "tenants_file", "keep_runs_days", "metrics_by"},
               "[run]");
    std::optional<std::string> by;
    read_optional(*run, "metrics_by", by, "run");
    if (by) s.metrics_by = parse_metrics_by(*by, "config: run.metrics_by");
    read(*run, "keep_runs_days", s.keep_runs_days, "run");
    read(*run, "tenants_file", s.tenants_file, "run");
    read(*run, "parallel", s.parallel, "run");
    read(*run, "page_connections", s.page_connections, "run");
    read(*run, "jobs_dir", s.jobs_dir, "run");
    read(*run, "log_level", s.log_level, "run");
  }
  holds_secret |= read_tenants(root, path, s.tenants);
  if (const toml::table* jobs = root["jobs"].as_table()) {
    for (const auto& [name, node] : *jobs) {
      const toml::table* j = node.as_table();
      const std::string where = fmt::format("[jobs.{}]", name.str());
      if (j == nullptr) fail(fmt::format("config: {} must be a table", where));
      check_keys(*j, {"enabled", "mode", "overlap_seconds", "page_size", "include_recent_changes", "quarantine",
                      "history", "raw_type", "every"},
                 where);
      JobOptions o;
      const std::string key_where = fmt::format("jobs.{}", name.str());
      read_optional(*j, "enabled", o.enabled, key_where);
      std::optional<std::string> mode;
      read_optional(*j, "mode", mode, key_where);
      if (mode) {
        SyncMode m;
        if (!parse_mode(*mode, m))
          fail(fmt::format("config: {} mode must be 'export', 'list', 'created' or 'full'", where));
        o.mode = m;
      }
      read_optional(*j, "overlap_seconds", o.overlap_seconds, key_where);
      read_optional(*j, "page_size", o.page_size, key_where);
      read_optional(*j, "include_recent_changes", o.include_recent_changes, key_where);
      read_optional(*j, "quarantine", o.quarantine, key_where);
      read_optional(*j, "history", o.history, key_where);
      read_optional(*j, "raw_type", o.raw_type, key_where);
      std::optional<std::string> every;
      read_optional(*j, "every", every, key_where);
      if (every) {
        o.every_seconds = parse_duration(*every);
        if (!o.every_seconds || *o.every_seconds < 1)
          fail(fmt::format("config: {}.every must be a duration, such as \"15m\" or \"6h\"", key_where));
      }
      if (o.raw_type && *o.raw_type != "jsonb" && *o.raw_type != "json")
        fail(fmt::format("config: {}.raw_type must be \"jsonb\" or \"json\"", key_where));
      if (o.overlap_seconds && *o.overlap_seconds < 0) fail(fmt::format("config: {}.overlap_seconds must not be negative", key_where));
      if (o.page_size && (*o.page_size < 1 || *o.page_size > 5000))
        fail(fmt::format("config: {}.page_size must be 1..5000", key_where));
      s.jobs[std::string(name.str())] = o;
    }
  }
  if (const toml::node* reports = root.get("reports")) {
    const toml::array* list = reports->as_array();
    if (list == nullptr) fail("config: reports must be [[reports]] entries");
    for (const toml::node& n : *list) {
      const toml::table* r = n.as_table();
      if (r == nullptr) fail("config: every [[reports]] entry must be a table");
      s.reports.push_back(parse_report_job(*r, fmt::format("config: [[reports]] #{}", s.reports.size() + 1)));
    }
  }
  struct stat st {};
  if (holds_secret && ::stat(path.c_str(), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
    warnings.push_back(fmt::format(
        "config file {} holds secrets and other users can read it: run chmod 600 {}", path, path));
}

// A secret kept in a file of its own (systemd LoadCredential=, a Kubernetes Secret volume): a
// relative path is looked up in $CREDENTIALS_DIRECTORY first, then next to the file naming it.
std::string read_secret_file(const std::string& name, const std::string& beside, const std::string& where,
                             std::string* found_at = nullptr) {
  namespace fs = std::filesystem;
  std::vector<fs::path> candidates;
  if (fs::path(name).is_absolute()) {
    candidates.emplace_back(name);
  } else {
    if (const char* dir = std::getenv("CREDENTIALS_DIRECTORY")) candidates.push_back(fs::path(dir) / name);
    candidates.push_back(fs::path(beside).parent_path() / name);
  }
  for (const fs::path& p : candidates) {
    std::ifstream in(p);
    if (!in) continue;
    std::stringstream text;
    text << in.rdbuf();
    std::string secret = text.str();
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r' || secret.back() == ' ')) secret.pop_back();
    if (secret.empty()) fail(fmt::format("config: {}: client_secret_file {} is empty", where, p.string()));
    if (found_at) *found_at = p.string();
    return secret;
  }
  fail(fmt::format("config: {}: client_secret_file {} cannot be read (looked in {}{})", where, name,
                   std::getenv("CREDENTIALS_DIRECTORY") ? "$CREDENTIALS_DIRECTORY and " : "",
                   fs::path(beside).parent_path().string()));
}

// The [[tenants]] of one TOML table (the config file, or a tenants file). Returns whether a
// secret is written in it.
bool read_tenants(const toml::table& root, const std::string& path, std::vector<TenantConfig>& out) {
  bool holds_secret = false;
  const toml::node* tenants = root.get("tenants");
  if (tenants == nullptr) return false;
  const toml::array* list = tenants->as_array();
  if (list == nullptr) fail(fmt::format("config {}: 'tenants' must be an array of tables ([[tenants]])", path));
  for (const toml::node& n : *list) {
    const toml::table* t = n.as_table();
    if (t == nullptr) fail(fmt::format("config {}: every [[tenants]] entry must be a table", path));
    check_keys(*t, {"id", "client_id", "client_secret", "client_secret_file", "jobs"}, "[[tenants]]");
    TenantConfig tc;
    read(*t, "id", tc.id, "tenants");
    read(*t, "client_id", tc.client_id, "tenants");
    read(*t, "client_secret", tc.client_secret, "tenants");
    if (tc.id <= 0) fail(fmt::format("config {}: every [[tenants]] entry needs a positive 'id'", path));
    std::string secret_file;
    read(*t, "client_secret_file", secret_file, "tenants");
    if (!secret_file.empty() && !tc.client_secret.empty())
      fail(fmt::format("config {}: tenant {} has both client_secret and client_secret_file", path, tc.id));
    tc.client_id_from = fmt::format("client_id in {}", path);
    tc.client_secret_from = fmt::format("client_secret in {}", path);
    if (!secret_file.empty()) {
      std::string found_at;
      tc.client_secret = read_secret_file(secret_file, path, fmt::format("tenant {}", tc.id), &found_at);
      tc.client_secret_from = fmt::format("client_secret_file {} (named in {})", found_at, path);
    } else {
      holds_secret |= !tc.client_secret.empty();
    }
    if (const toml::node* jobs = t->get("jobs")) {
      const toml::array* a = jobs->as_array();
      if (a == nullptr) fail(fmt::format("config {}: tenant {}: 'jobs' must be an array of job names", path, tc.id));
      for (const toml::node& j : *a) {
        auto name = j.value<std::string>();
        if (!name) fail(fmt::format("config {}: tenant {}: 'jobs' must be an array of job names", path, tc.id));
        tc.jobs.push_back(*name);
      }
    }
    if (std::any_of(out.begin(), out.end(), [&](const TenantConfig& o) { return o.id == tc.id; }))
      fail(fmt::format("config {}: tenant {} is configured twice", path, tc.id));
    out.push_back(std::move(tc));
  }
  return holds_secret;
}

void load_tenants_file(const std::string& path, std::vector<TenantConfig>& out, std::vector<std::string>& warnings) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path, ec))
      if (e.path().extension() == ".toml") files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  for (const std::string& f : files) {
    toml::table root;
    try {
      root = toml::parse_file(f);
    } catch (const toml::parse_error& e) {
      fail(fmt::format("tenants file {} line {}: {}", f, e.source().begin.line, e.description()));
    }
    check_keys(root, {"tenants"}, "a tenants file");
    struct stat st {};
    if (read_tenants(root, f, out) && ::stat(f.c_str(), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
      warnings.push_back(fmt::format("tenants file {} holds secrets and other users can read it: run chmod 600 {}", f, f));
  }
}

}  // namespace

EnvLookup process_environment() {
  return [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

Settings load_settings(const std::optional<std::string>& path, const EnvLookup& env,
                       std::vector<std::string>& warnings) {
  Settings s;
  std::optional<std::string> file = path;
  if (!file) file = env("STSYNC_CONFIG");
  if (file && !file->empty()) load_file(*file, s, warnings);
  if (auto v = env("STSYNC_TENANTS_FILE")) s.tenants_file = *v;
  if (!s.tenants_file.empty()) load_tenants_file(s.tenants_file, s.tenants, warnings);

  if (auto v = env("ST_ENVIRONMENT")) s.environment = *v;
  if (auto v = env("ST_AUTH_URL")) s.auth_url = *v;
  if (auto v = env("ST_API_URL")) s.api_url = *v;
  if (auto v = env("ST_APP_KEY")) s.app_key = *v;
  std::string database_url_from = "database.url";
  if (auto v = env("DATABASE_URL")) {
    s.database_url = *v;
    database_url_from = "DATABASE_URL";
  }
  if (auto v = env("STSYNC_SCHEMA")) s.schema = *v;
  if (auto v = env("STSYNC_JOBS_DIR")) s.jobs_dir = *v;
  if (auto v = env("STSYNC_LOG_LEVEL")) s.log_level = *v;
  if (auto v = env("STSYNC_CA_FILE")) s.ca_file = *v;
  if (auto v = env("STSYNC_TLS_VERIFY")) s.tls_verify = parse_bool(*v, "STSYNC_TLS_VERIFY");
  if (auto v = env("STSYNC_REQUESTS_PER_SECOND")) s.requests_per_second = env_number(*v, "STSYNC_REQUESTS_PER_SECOND");
  if (auto v = env("STSYNC_PARALLEL")) s.parallel = env_integer(*v, "STSYNC_PARALLEL");
  if (auto v = env("STSYNC_METRICS_BY")) s.metrics_by = parse_metrics_by(*v, "STSYNC_METRICS_BY");
  if (auto v = env("STSYNC_KEEP_RUNS_DAYS")) s.keep_runs_days = env_integer(*v, "STSYNC_KEEP_RUNS_DAYS");
  if (auto v = env("STSYNC_PAGE_CONNECTIONS")) s.page_connections = env_integer(*v, "STSYNC_PAGE_CONNECTIONS");
  if (auto v = env("STSYNC_MAX_ATTEMPTS")) s.max_attempts = env_integer(*v, "STSYNC_MAX_ATTEMPTS");
  if (auto v = env("STSYNC_RETRY_BUDGET_SECONDS")) s.retry_budget_seconds = env_number(*v, "STSYNC_RETRY_BUDGET_SECONDS");
  if (auto v = env("STSYNC_MAX_BACKOFF_SECONDS")) s.max_backoff_seconds = env_number(*v, "STSYNC_MAX_BACKOFF_SECONDS");
  if (auto v = env("STSYNC_TIMEOUT_SECONDS")) s.timeout_seconds = env_integer(*v, "STSYNC_TIMEOUT_SECONDS");
  if (auto v = env("STSYNC_DB_RECONNECT_ATTEMPTS"))
    s.db_reconnect_attempts = env_integer(*v, "STSYNC_DB_RECONNECT_ATTEMPTS");
  if (auto v = env("STSYNC_STATEMENT_TIMEOUT_SECONDS"))
    s.statement_timeout_seconds = env_number(*v, "STSYNC_STATEMENT_TIMEOUT_SECONDS");
  if (auto v = env("STSYNC_MAX_EXPORT_PAGES")) s.max_export_pages = env_integer(*v, "STSYNC_MAX_EXPORT_PAGES");
  if (auto v = env("STSYNC_MAX_CLOCK_SKEW_SECONDS"))
    s.max_clock_skew_seconds = env_number(*v, "STSYNC_MAX_CLOCK_SKEW_SECONDS");
  if (auto v = env("STSYNC_LOCK_TIMEOUT_SECONDS")) s.lock_timeout_seconds = env_number(*v, "STSYNC_LOCK_TIMEOUT_SECONDS");
  if (auto v = env("STSYNC_MAX_RESPONSE_MB")) {
    const double mb = env_number(*v, "STSYNC_MAX_RESPONSE_MB");
    if (!(mb >= 0.01 && mb <= 4096))
      fail(fmt::format("STSYNC_MAX_RESPONSE_MB must be between 0.01 and 4096 (not {})", mb));
    s.max_response_bytes = static_cast<std::int64_t>(mb * (1 << 20));
  }

  // One tenant from the environment alone: ST_TENANT_ID with ST_CLIENT_ID/ST_CLIENT_SECRET.
  // It replaces the credentials of the same tenant from the file, or is added to the list.
  auto env_id = env("ST_CLIENT_ID");
  auto env_secret = env("ST_CLIENT_SECRET");
  if (auto v = env("ST_TENANT_ID")) {
    const std::int64_t id = parse_tenant_id(*v, "ST_TENANT_ID");
    auto it = std::find_if(s.tenants.begin(), s.tenants.end(),
                           [&](const TenantConfig& t) { return t.id == id; });
    if (it == s.tenants.end()) {
      s.tenants.push_back(TenantConfig{id, "", ""});
      it = std::prev(s.tenants.end());
    }
    if (env_id) it->client_id = *env_id, it->client_id_from = "ST_CLIENT_ID";
    if (env_secret) it->client_secret = *env_secret, it->client_secret_from = "ST_CLIENT_SECRET";
  } else if ((env_id || env_secret) && s.tenants.size() == 1) {
    if (env_id) s.tenants[0].client_id = *env_id, s.tenants[0].client_id_from = "ST_CLIENT_ID";
    if (env_secret) s.tenants[0].client_secret = *env_secret, s.tenants[0].client_secret_from = "ST_CLIENT_SECRET";
  }

  if (s.environment != "production" && s.environment != "integration")
    fail(fmt::format("ST_ENVIRONMENT must be 'production' or 'integration', not '{}'", s.environment));
  const bool production = s.environment == "production";
  if (s.auth_url.empty())
    s.auth_url = production ? "https://auth.servicetitan.io" : "https://auth-integration.servicetitan.io";
  if (s.api_url.empty())
    s.api_url = production ? "https://api.servicetitan.io" : "https://api-integration.servicetitan.io";
  while (!s.auth_url.empty() && s.auth_url.back() == '/') s.auth_url.pop_back();
  while (!s.api_url.empty() && s.api_url.back() == '/') s.api_url.pop_back();
  // At least one request every 10 s: a rate far below that (1e-7) would make a run wait for months.
  if (!(s.requests_per_second >= 0.1 && s.requests_per_second <= 60))
    fail(fmt::format("requests_per_second must be between 0.1 and 60 (ServiceTitan's limit per tenant), not {}",
                     s.requests_per_second));
  if (s.parallel < 1 || s.parallel > 64) fail("parallel must be between 1 and 64");
  if (s.keep_runs_days < 0 || s.keep_runs_days > 36500)
    fail(fmt::format("keep_runs_days must be between 0 (keep every run) and 36500, not {}", s.keep_runs_days));
  if (s.page_connections < 1 || s.page_connections > 2) fail("page_connections must be 1 or 2");
  if (s.max_attempts < 1) fail("max_attempts must be at least 1");
  // Durations: a negative one is a mistake, never "no limit".
  auto non_negative = [](double v, const char* name) {
    if (v < 0) fail(fmt::format("{} must not be negative ({})", name, v));
  };
  if (s.timeout_seconds < 1) fail("timeout_seconds must be at least 1");
  if (s.connect_timeout_seconds < 1) fail("connect_timeout_seconds must be at least 1");
  non_negative(s.retry_budget_seconds, "retry_budget_seconds");
  if (s.max_backoff_seconds <= 0) fail("max_backoff_seconds must be above 0");
  non_negative(s.list_safety_seconds, "list_safety_seconds");
  non_negative(s.db_reconnect_attempts, "database.reconnect_attempts");
  // PostgreSQL takes these in whole milliseconds up to INT_MAX: 0 means "none", anything between 0
  // and 1 ms would round to "none" and anything above ~24.8 days would overflow.
  auto pg_timeout = [](double v, const char* name) {
    if (v == 0) return;
    if (!(v >= 0.001 && v <= 2147483.0))
      fail(fmt::format("{} must be 0 (no timeout) or between 0.001 and 2147483 seconds, not {}", name, v));
  };
  pg_timeout(s.statement_timeout_seconds, "database.statement_timeout_seconds");
  pg_timeout(s.lock_timeout_seconds, "database.lock_timeout_seconds");
  if (s.max_export_pages < 1) fail(fmt::format("STSYNC_MAX_EXPORT_PAGES must be at least 1, not {}", s.max_export_pages));
  if (!(s.max_clock_skew_seconds >= 1 && s.max_clock_skew_seconds <= 366.0 * 86400))
    fail(fmt::format("servicetitan.max_clock_skew_seconds must be between 1 and 31622400 (366 days), not {}",
                     s.max_clock_skew_seconds));
  if (s.max_json_depth < 4 || s.max_json_depth > 1024) fail("max_json_depth must be 4..1024");
  if (s.schema.empty()) fail("the schema name must not be empty");
  // libpq would read anything else as a database name and connect to the local socket instead.
  // (The value is not repeated: it may hold a password.)
  if (!s.database_url.empty() && s.database_url.rfind("postgresql://", 0) != 0 &&
      s.database_url.rfind("postgres://", 0) != 0 && s.database_url.find('=') == std::string::npos)
    fail(fmt::format("{} is neither a postgresql:// URL nor a key=value connection string (e.g. host=db "
                     "user=stsync dbname=warehouse); leave it unset to use libpq's PG* variables",
                     database_url_from));
  return s;
}

std::vector<JobSpec> resolve_jobs(const Settings& settings) {
  std::vector<JobSpec> specs = load_job_specs(settings.jobs_dir);
  for (const JobSpec& report : settings.reports) {
    if (std::any_of(specs.begin(), specs.end(), [&](const JobSpec& j) { return j.name == report.name; }))
      fail(fmt::format("config: [[reports]] {} has the name of another job: give it a name of its own", report.name));
    specs.push_back(report);
  }
  for (const auto& [name, o] : settings.jobs) {
    if (std::none_of(specs.begin(), specs.end(), [&](const JobSpec& j) { return j.name == name; }))
      fail(fmt::format("config: [jobs.{}] names no job{} (`stsync jobs` lists them)", name,
                       did_you_mean(name, job_names(specs))));
  }
  std::vector<JobSpec> out;
  for (JobSpec& spec : specs) {
    auto it = settings.jobs.find(spec.name);
    if (it != settings.jobs.end()) {
      const JobOptions& o = it->second;
      if (o.enabled) {
        spec.enabled = *o.enabled;
        spec.named = *o.enabled;  // enabled by the user: a 403 is a failure, not "not permitted"
      }
      if (o.mode) spec.mode = *o.mode;
      if (o.overlap_seconds) spec.overlap_seconds = *o.overlap_seconds;
      if (o.page_size) spec.page_size = *o.page_size;
      if (o.include_recent_changes) spec.include_recent_changes = *o.include_recent_changes;
      if (o.quarantine) spec.quarantine = *o.quarantine;
      if (o.history) spec.history = *o.history;
      if (o.raw_type) spec.raw_type = *o.raw_type;
      if (o.every_seconds) spec.every_seconds = *o.every_seconds;
    }
    out.push_back(std::move(spec));
  }
  return out;
}

}  // namespace stsync
