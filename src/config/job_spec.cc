#include "job_spec.h"
#include "report_spec.h"

#include <algorithm>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fstream>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include "embedded.h"
#include "errors.h"

namespace stsync {
namespace {

const std::pair<const char*, ColumnType> kTypes[] = {
    {"bigint", ColumnType::bigint},   {"integer", ColumnType::integer},
    {"numeric", ColumnType::numeric}, {"text", ColumnType::text},
    {"boolean", ColumnType::boolean}, {"timestamptz", ColumnType::timestamptz},
    {"date", ColumnType::date},       {"jsonb", ColumnType::jsonb}};

[[noreturn]] void fail(const std::string& origin, const std::string& what) {
  throw Error(ErrorKind::config, "job file " + origin + ": " + what);
}

void check_keys(const toml::table& t, std::initializer_list<std::string_view> allowed,
                const std::string& origin, std::string_view where) {
  for (const auto& [key, value] : t) {
    if (std::find(allowed.begin(), allowed.end(), key.str()) == allowed.end())
      fail(origin, fmt::format("unknown key '{}' in {}", key.str(), where));
  }
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> out;
  std::stringstream parts(path);
  for (std::string part; std::getline(parts, part, '.');) out.push_back(part);
  return out;
}

std::vector<ColumnSpec> parse_columns(const toml::array* columns, const std::string& origin,
                                      std::string_view where,
                                      std::initializer_list<std::string_view> reserved) {
  if (columns == nullptr) fail(origin, fmt::format("'{}' must be an array of tables", where));
  std::vector<ColumnSpec> out;
  for (const toml::node& node : *columns) {
    const toml::table* c = node.as_table();
    if (c == nullptr) fail(origin, fmt::format("every entry of '{}' must be a table", where));
    check_keys(*c, {"path", "type", "name", "description"}, origin, "a column");
    ColumnSpec col;
    const std::string path = (*c)["path"].value_or(std::string());
    if (path.empty()) fail(origin, "a column has no 'path'");
    col.path = split_path(path);
    col.name = (*c)["name"].value_or(column_name_for(path));
    col.description = (*c)["description"].value_or(std::string());
    const std::string type = (*c)["type"].value_or(std::string("text"));
    bool known = false;
    for (const auto& [name, ty] : kTypes)
      if (type == name) {
        col.type = ty;
        known = true;
      }
    if (!known) fail(origin, fmt::format("column '{}' has unknown type '{}'", path, type));
    for (std::string_view r : reserved)
      if (col.name == r) fail(origin, fmt::format("column name '{}' is reserved by stsync", col.name));
    out.push_back(std::move(col));
  }
  return out;
}

void resolve_parents(std::vector<JobSpec>& specs) {
  std::set<std::string> names;
  for (const JobSpec& s : specs)
    if (!names.insert(s.name).second) throw Error(ErrorKind::config, fmt::format("two job files define job '{}'", s.name));
  for (JobSpec& s : specs) {
    if (s.parent.empty()) continue;
    auto p = std::find_if(specs.begin(), specs.end(), [&](const JobSpec& o) { return o.name == s.parent; });
    if (p == specs.end() || !p->parent.empty())
      throw Error(ErrorKind::config,
                  fmt::format("job {}: its parent '{}' is not a job (or is itself per-parent)", s.name, s.parent));
    s.parent_key_type = p->key_type;
    s.parent_table = p->table;
  }
}

}  // namespace

std::string_view column_type_sql(ColumnType type) {
  for (const auto& [name, t] : kTypes)
    if (t == type) return name;
  return "text";
}

std::string_view mode_name(SyncMode mode) {
  switch (mode) {
    case SyncMode::export_feed: return "export";
    case SyncMode::list_windows: return "list";
    case SyncMode::created_windows: return "created";
    case SyncMode::full_listing: return "full";
  }
  return "export";
}

bool parse_mode(std::string_view text, SyncMode& out) {
  for (SyncMode m : {SyncMode::export_feed, SyncMode::list_windows, SyncMode::created_windows, SyncMode::full_listing})
    if (text == mode_name(m)) {
      out = m;
      return true;
    }
  return false;
}

std::string JobSpec::paging(int page, int page_size, bool include_total) const {
  std::string out;
  if (list_page) out += fmt::format("page={}&", page);
  if (list_page_size) out += fmt::format("pageSize={}&", page_size);
  if (include_total && list_include_total) out += "includeTotal=true&";
  if (!out.empty()) out.pop_back();
  return out;
}

std::string JobSpec::with_query(const std::string& path, std::string parts) {
  while (!parts.empty() && parts.back() == '&') parts.pop_back();
  if (parts.empty()) return path;
  return path + (path.find('?') == std::string::npos ? "?" : "&") + parts;
}

std::optional<int> parse_duration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  long long unit = 1;
  switch (text.back()) {
    case 's': unit = 1; text.remove_suffix(1); break;
    case 'm': unit = 60; text.remove_suffix(1); break;
    case 'h': unit = 3600; text.remove_suffix(1); break;
    case 'd': unit = 86400; text.remove_suffix(1); break;
    default: break;
  }
  if (text.empty() || text.size() > 7) return std::nullopt;
  long long n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  if (n * unit > 400LL * 86400) return std::nullopt;
  return static_cast<int>(n * unit);
}

std::string key_description(const JobSpec& spec) {
  if (spec.report) return "(report_day, position)";
  if (spec.key.empty()) return spec.parent.empty() ? "position" : "(parent, position)";
  auto dotted = [](const std::vector<std::string>& path) {
    std::string out;
    for (const std::string& p : path) out += (out.empty() ? "" : ".") + p;
    return out;
  };
  if (spec.key.size() == 1) return dotted(spec.key[0]);
  std::string out = "(";
  for (size_t i = 0; i < spec.key.size(); ++i) out += (i ? ", " : "") + dotted(spec.key[i]);
  return out + ")";
}

std::string snake_case(std::string_view path) {
  std::string out;
  for (char c : path) {
    if (c == '.') {
      out.push_back('_');
    } else if (c >= 'A' && c <= 'Z') {
      if (!out.empty() && out.back() != '_') out.push_back('_');
      out.push_back(static_cast<char>(c - 'A' + 'a'));
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// PostgreSQL's reserved keywords (pg_get_keywords(), categories R and T, PostgreSQL 15): a column
// named like one must be quoted in every query.
bool reserved_keyword(std::string_view name) {
  static const std::set<std::string_view> words = {
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "authorization", "binary",
    "both", "case", "cast", "check", "collate", "collation", "column", "concurrently", "constraint",
    "create", "cross", "current_catalog", "current_date", "current_role", "current_schema", "current_time",
    "current_timestamp", "current_user", "default", "deferrable", "desc", "distinct", "do", "else", "end",
    "except", "false", "fetch", "for", "foreign", "freeze", "from", "full", "grant", "group", "having",
    "ilike", "in", "initially", "inner", "intersect", "into", "is", "isnull", "join", "lateral", "leading",
    "left", "like", "limit", "localtime", "localtimestamp", "natural", "not", "notnull", "null", "offset",
    "on", "only", "or", "order", "outer", "overlaps", "placing", "primary", "references", "returning",
    "right", "select", "session_user", "similar", "some", "symmetric", "table", "tablesample", "then", "to",
    "trailing", "true", "union", "unique", "user", "using", "variadic", "verbose", "when", "where", "window",
    "with"};
  return words.count(name) > 0;
}

std::string column_name_for(std::string_view path) {
  std::string name = snake_case(path);
  // No column needs quoting: a reserved word gets "_value" ("order" → order_value).
  if (reserved_keyword(name)) name += "_value";
  return name;
}

JobSpec parse_job_spec(std::string_view text, const std::string& origin) {
  toml::table t;
  try {
    t = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    fail(origin, fmt::format("line {}: {}", e.source().begin.line, e.description()));
  }
  if (t.contains("report_id")) return parse_report_job(t, "job file " + origin);
  check_keys(t,
             {"name", "table", "list_path", "export_path", "mode", "inactive_filter", "list_params", "list_floor", "page_size",
              "overlap_seconds", "include_recent_changes", "quarantine", "history", "raw_type", "columns", "children",
              "export_filter", "enabled", "every", "key", "key_type", "parent", "created_field", "created_params",
              "response", "ids_param", "list_sort", "reconcile_every", "list_paging", "description"},
             origin, "the top level");
  JobSpec spec;
  auto str = [&](const char* key, bool required) {
    auto v = t[key].value<std::string>();
    if (!v && required) fail(origin, fmt::format("'{}' is required", key));
    return v.value_or("");
  };
  spec.name = str("name", true);
  spec.table = str("table", false);
  if (spec.table.empty()) spec.table = spec.name;
  spec.list_path = str("list_path", false);
  spec.export_path = str("export_path", false);
  spec.inactive_filter = str("inactive_filter", false);
  spec.list_params = str("list_params", false);
  spec.list_floor = str("list_floor", false);
  spec.description = str("description", false);
  if (const toml::array* paging = t["list_paging"].as_array()) {
    spec.list_page = spec.list_page_size = spec.list_include_total = false;
    for (const toml::node& n : *paging) {
      const std::string name = n.value_or(std::string());
      if (name == "page") spec.list_page = true;
      else if (name == "pageSize") spec.list_page_size = true;
      else if (name == "includeTotal") spec.list_include_total = true;
      else fail(origin, fmt::format("list_paging: '{}' is not page, pageSize or includeTotal", name));
    }
  }
  spec.export_filter = str("export_filter", false);
  const std::string mode = str("mode", false);
  if (!mode.empty() && !parse_mode(mode, spec.mode))
    fail(origin, fmt::format("mode '{}' is not one of 'export', 'list', 'created', 'full'", mode));
  if (spec.mode == SyncMode::export_feed && spec.export_path.empty())
    fail(origin, "mode 'export' needs 'export_path'");
  if (spec.mode != SyncMode::export_feed && spec.list_path.empty())
    fail(origin, fmt::format("mode '{}' needs 'list_path'", mode_name(spec.mode)));
  if (const toml::node* n = t.get("enabled")) {
    if (!n->is_boolean()) fail(origin, "'enabled' must be true or false");
    spec.enabled = n->value_or(true);
  }
  auto duration = [&](const char* key, int fallback) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return fallback;
    std::optional<int> d;
    if (n->is_string()) d = parse_duration(n->value_or(std::string()));
    else if (n->is_integer() && n->value_or<std::int64_t>(-1) >= 0) d = static_cast<int>(n->value_or<std::int64_t>(0));
    if (!d) fail(origin, fmt::format("'{}' must be a duration such as \"15m\", \"6h\" or \"7d\"", key));
    return *d;
  };
  spec.every_seconds = duration("every", 3600);
  if (spec.every_seconds < 1) fail(origin, "'every' must be at least 1s");
  spec.reconcile_every_seconds = duration("reconcile_every", 7 * 86400);
  if (const toml::node* n = t.get("key")) {
    const toml::array* a = n->as_array();
    if (a == nullptr) fail(origin, "'key' must be an array of field paths, e.g. [\"employeeId\"]");
    spec.key.clear();
    for (const toml::node& k : *a) {
      auto v = k.value<std::string>();
      if (!v || v->empty()) fail(origin, "every entry of 'key' must be a field path");
      spec.key.push_back(split_path(*v));
    }
  }
  const std::string key_type = str("key_type", false);
  if (key_type == "text") spec.key_type = ColumnType::text;
  else if (!key_type.empty() && key_type != "bigint") fail(origin, "key_type must be \"bigint\" or \"text\"");
  if (spec.key.size() != 1 && spec.key_type != ColumnType::text)
    fail(origin, "a key of several fields (or none) is text: set key_type = \"text\"");
  spec.parent = str("parent", false);
  if (!spec.parent.empty() && spec.list_path.find("{parent}") == std::string::npos)
    fail(origin, "a job with a 'parent' needs {parent} in its list_path");
  if (spec.parent.empty() && spec.list_path.find("{parent}") != std::string::npos)
    fail(origin, "list_path holds {parent} but the job names no 'parent'");
  if (!spec.parent.empty() && spec.mode != SyncMode::full_listing)
    fail(origin, "a per-parent job reads each parent's whole listing: mode must be \"full\"");
  const std::string created_field = str("created_field", false);
  if (!created_field.empty()) spec.created_field = split_path(created_field);
  if (const toml::node* n = t.get("created_params")) {
    const toml::array* a = n->as_array();
    if (a == nullptr || a->size() != 2 || !(*a)[0].is_string() || !(*a)[1].is_string())
      fail(origin, "'created_params' must be two parameter names: [\"…OnOrAfter\", \"…Before\"]");
    spec.created_after = (*a)[0].value_or(std::string());
    spec.created_before = (*a)[1].value_or(std::string());
  }
  const std::string response = str("response", false);
  if (response == "data") spec.response = ResponseShape::data;
  else if (response == "object") spec.response = ResponseShape::object;
  else if (!response.empty() && response != "paged") fail(origin, "response must be \"paged\", \"data\" or \"object\"");
  if (spec.response != ResponseShape::paged && spec.mode != SyncMode::full_listing)
    fail(origin, "an unpaged response (data, object) can only be read whole: mode must be \"full\"");
  // true (ids=1,2) or "repeated" (ids=1&ids=2, where the spec types ids as an array).
  if (const auto form = t["ids_param"].value<std::string>()) {
    if (*form != "repeated") fail(origin, fmt::format("ids_param '{}' is not true, false or \"repeated\"", *form));
    spec.ids_param = spec.ids_repeated = true;
  } else {
    spec.ids_param = t["ids_param"].value_or(false);
  }
  spec.list_sort = str("list_sort", false);
  spec.page_size = static_cast<int>(t["page_size"].value_or<std::int64_t>(5000));
  if (spec.page_size < 1 || spec.page_size > 5000) fail(origin, "page_size must be 1..5000");
  spec.overlap_seconds = static_cast<int>(t["overlap_seconds"].value_or<std::int64_t>(300));
  spec.include_recent_changes = t["include_recent_changes"].value_or(false);
  spec.quarantine = t["quarantine"].value_or(false);
  spec.history = t["history"].value_or(false);
  spec.raw_type = str("raw_type", false);
  if (spec.raw_type.empty()) spec.raw_type = "jsonb";
  if (spec.raw_type != "jsonb" && spec.raw_type != "json") fail(origin, "raw_type must be \"jsonb\" or \"json\"");
  spec.columns = parse_columns(t["columns"].as_array(), origin, "columns",
                               {"tenant_id", "id", "modified_on", "active", "raw", "synced_at", "deleted_at",
                                "parent_id", "change_xid"});
  // A key other than the record's id is read from the typed columns: each key field must be one.
  if (!(spec.key.size() == 1 && spec.key[0] == std::vector<std::string>{"id"}))
    for (const auto& k : spec.key)
      if (std::none_of(spec.columns.begin(), spec.columns.end(), [&](const ColumnSpec& c) { return c.path == k; }))
        fail(origin, fmt::format("key field '{}' must also be a typed column", fmt::join(k, ".")));
  if (const toml::node* children = t.get("children")) {
    const toml::array* list = children->as_array();
    if (list == nullptr) fail(origin, "'children' must be an array of tables ([[children]])");
    for (const toml::node& node : *list) {
      const toml::table* c = node.as_table();
      if (c == nullptr) fail(origin, "every [[children]] entry must be a table");
      check_keys(*c, {"path", "table", "columns", "description"}, origin, "[[children]]");
      ChildSpec child;
      child.path = split_path((*c)["path"].value_or(std::string()));
      child.table = (*c)["table"].value_or(std::string());
      child.description = (*c)["description"].value_or(std::string());
      if (child.path.empty() || child.table.empty()) fail(origin, "[[children]] needs 'path' and 'table'");
      child.columns = parse_columns((*c)["columns"].as_array(), origin, "children.columns",
                                    {"tenant_id", "parent_id", "position", "raw", "synced_at", "change_xid"});
      spec.children.push_back(std::move(child));
    }
  }
  return spec;
}

std::vector<JobSpec> load_job_specs(const std::string& dir) {
  std::vector<JobSpec> specs;
  if (dir.empty()) {
    for (const EmbeddedFile& f : embedded_jobs())
      specs.push_back(parse_job_spec(f.content, std::string(f.name)));
    resolve_parents(specs);
    return specs;
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path().extension() == ".toml") files.push_back(entry.path());
  if (ec) throw Error(ErrorKind::config, fmt::format("jobs directory {}: {}", dir, ec.message()));
  std::sort(files.begin(), files.end());
  for (const fs::path& p : files) {
    std::ifstream in(p);
    std::stringstream text;
    text << in.rdbuf();
    specs.push_back(parse_job_spec(text.str(), p.string()));
  }
  resolve_parents(specs);
  return specs;
}

std::string tenant_path(const std::string& path, std::int64_t tenant) {
  std::string out = path;
  const size_t pos = out.find("{tenant}");
  if (pos != std::string::npos) out.replace(pos, 8, std::to_string(tenant));
  return out;
}

std::vector<std::string> job_names(const std::vector<JobSpec>& specs) {
  std::vector<std::string> out;
  for (const JobSpec& j : specs) out.push_back(j.name);
  return out;
}

}  // namespace stsync
