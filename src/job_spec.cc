#include "job_spec.h"

#include <algorithm>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
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
    check_keys(*c, {"path", "type", "name"}, origin, "a column");
    ColumnSpec col;
    const std::string path = (*c)["path"].value_or(std::string());
    if (path.empty()) fail(origin, "a column has no 'path'");
    col.path = split_path(path);
    col.name = (*c)["name"].value_or(snake_case(path));
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

}  // namespace

std::string_view column_type_sql(ColumnType type) {
  for (const auto& [name, t] : kTypes)
    if (t == type) return name;
  return "text";
}

std::string json_path_sql(const std::vector<std::string>& path) {
  std::string out = "ARRAY[";
  for (size_t i = 0; i < path.size(); ++i) {
    out += i ? ",'" : "'";
    for (char ch : path[i]) out += ch == '\'' ? std::string("''") : std::string(1, ch);
    out += "'";
  }
  return out + "]::text[]";
}

std::string column_from_jsonb_sql(const ColumnSpec& c, std::string_view json) {
  const std::string text = fmt::format("({} #>> {})", json, json_path_sql(c.path));
  switch (c.type) {
    case ColumnType::jsonb: return fmt::format("nullif({} #> {}, 'null'::jsonb)", json, json_path_sql(c.path));
    case ColumnType::text: return text;
    case ColumnType::date: return fmt::format("(({}::timestamptz) AT TIME ZONE 'UTC')::date", text);
    default: return fmt::format("{}::{}", text, column_type_sql(c.type));
  }
}

std::string_view mode_name(SyncMode mode) {
  return mode == SyncMode::export_feed ? "export" : "list";
}

bool parse_mode(std::string_view text, SyncMode& out) {
  if (text == "export") out = SyncMode::export_feed;
  else if (text == "list") out = SyncMode::list_windows;
  else return false;
  return true;
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

JobSpec parse_job_spec(std::string_view text, const std::string& origin) {
  toml::table t;
  try {
    t = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    fail(origin, fmt::format("line {}: {}", e.source().begin.line, e.description()));
  }
  check_keys(t,
             {"name", "table", "list_path", "export_path", "mode", "inactive_filter", "page_size",
              "overlap_seconds", "include_recent_changes", "quarantine", "raw_type", "columns", "children"},
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
  spec.list_path = str("list_path", true);
  spec.export_path = str("export_path", false);
  spec.inactive_filter = str("inactive_filter", false);
  const std::string mode = str("mode", false);
  if (!mode.empty() && !parse_mode(mode, spec.mode))
    fail(origin, fmt::format("mode '{}' is neither 'export' nor 'list'", mode));
  if (spec.mode == SyncMode::export_feed && spec.export_path.empty())
    fail(origin, "mode 'export' needs 'export_path'");
  spec.page_size = static_cast<int>(t["page_size"].value_or<std::int64_t>(5000));
  if (spec.page_size < 1 || spec.page_size > 5000) fail(origin, "page_size must be 1..5000");
  spec.overlap_seconds = static_cast<int>(t["overlap_seconds"].value_or<std::int64_t>(300));
  spec.include_recent_changes = t["include_recent_changes"].value_or(false);
  spec.quarantine = t["quarantine"].value_or(false);
  spec.raw_type = str("raw_type", false);
  if (spec.raw_type.empty()) spec.raw_type = "jsonb";
  if (spec.raw_type != "jsonb" && spec.raw_type != "json") fail(origin, "raw_type must be \"jsonb\" or \"json\"");
  spec.columns = parse_columns(t["columns"].as_array(), origin, "columns",
                               {"tenant_id", "id", "modified_on", "active", "raw", "synced_at"});
  if (const toml::node* children = t.get("children")) {
    const toml::array* list = children->as_array();
    if (list == nullptr) fail(origin, "'children' must be an array of tables ([[children]])");
    for (const toml::node& node : *list) {
      const toml::table* c = node.as_table();
      if (c == nullptr) fail(origin, "every [[children]] entry must be a table");
      check_keys(*c, {"path", "table", "columns"}, origin, "[[children]]");
      ChildSpec child;
      child.path = split_path((*c)["path"].value_or(std::string()));
      child.table = (*c)["table"].value_or(std::string());
      if (child.path.empty() || child.table.empty()) fail(origin, "[[children]] needs 'path' and 'table'");
      child.columns = parse_columns((*c)["columns"].as_array(), origin, "children.columns",
                                    {"tenant_id", "parent_id", "position", "raw", "synced_at"});
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
  return specs;
}

}  // namespace stsync
