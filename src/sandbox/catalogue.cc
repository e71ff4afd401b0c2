#include "sandbox/catalogue.h"

#include <simdjson.h>

#include <stdexcept>

#include "sandbox/embedded_catalogue.h"

namespace stsync::sandbox {
namespace {

using simdjson::dom::element;
using simdjson::dom::object;

std::string str(object o, const char* key) {
  std::string_view v;
  if (o[key].get(v) == simdjson::SUCCESS) return std::string(v);
  return {};
}

bool flag(object o, const char* key) {
  bool b = false;
  if (o[key].get(b) == simdjson::SUCCESS) return b;
  return false;
}

FieldDef parse_field(object o) {
  FieldDef f;
  f.name = str(o, "name");
  f.type = str(o, "type");
  f.format = str(o, "format");
  f.nullable = flag(o, "nullable");
  f.money = flag(o, "money");
  f.items = str(o, "items");
  // A fresh array per key: get() leaves its target as it was when the key is missing.
  if (simdjson::dom::array a; o["enum"].get(a) == simdjson::SUCCESS)
    for (element e : a) {
      std::string_view v;
      if (e.get(v) == simdjson::SUCCESS) f.enum_values.emplace_back(v);
    }
  if (simdjson::dom::array a; o["fields"].get(a) == simdjson::SUCCESS)
    for (element e : a) f.fields.push_back(parse_field(e.get_object().value()));
  if (simdjson::dom::array a; o["elements"].get(a) == simdjson::SUCCESS)
    for (element e : a) f.elements.push_back(parse_field(e.get_object().value()));
  return f;
}

std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> out;
  while (!path.empty()) {
    const size_t slash = path.find('/');
    if (slash != 0) out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

}  // namespace

const FieldDef* CatalogueResource::field(std::string_view n) const {
  for (const FieldDef& f : fields)
    if (f.name == n) return &f;
  return nullptr;
}

const std::vector<CatalogueResource>& catalogue() {
  static const std::vector<CatalogueResource> resources = [] {
    std::vector<CatalogueResource> out;
    simdjson::dom::parser parser;
    simdjson::padded_string json(embedded_catalogue_json());
    object top = parser.parse(json).get_object().value();
    // Arrays are bound to locals first: value() of a temporary result dangles in a range-for.
    const simdjson::dom::array all = top["resources"].get_array().value();
    for (element e : all) {
      object o = e.get_object().value();
      CatalogueResource r;
      r.name = str(o, "name");
      r.list_path = str(o, "list_path");
      r.export_path = str(o, "export_path");
      r.export_active = flag(o, "export_active");
      r.response = str(o, "response");
      object active;
      if (o["active"].get(active) == simdjson::SUCCESS) {
        r.active_param = str(active, "param");
        r.active_default = str(active, "default");
      }
      const simdjson::dom::array windows = o["windows"].get_array().value();
      for (element w : windows) {
        object wo = w.get_object().value();
        r.windows.push_back({str(wo, "after"), str(wo, "before"), str(wo, "field")});
      }
      r.ids = flag(o, "ids");
      r.sort = flag(o, "sort");
      object parent;
      if (o["parent"].get(parent) == simdjson::SUCCESS) {
        r.parent = str(parent, "resource");
        r.parent_param = str(parent, "param");
      }
      const simdjson::dom::array key = o["key"].get_array().value();
      for (element k : key) r.key.emplace_back(k.get_string().value());
      r.size = str(o, "size");
      const simdjson::dom::array fields = o["fields"].get_array().value();
      for (element f : fields) r.fields.push_back(parse_field(f.get_object().value()));
      out.push_back(std::move(r));
    }
    return out;
  }();
  return resources;
}

const CatalogueResource* find_catalogue(std::string_view name) {
  for (const CatalogueResource& r : catalogue())
    if (r.name == name) return &r;
  return nullptr;
}

std::optional<RouteMatch> route(std::string_view path) {
  const std::vector<std::string_view> want = segments(path);
  std::optional<RouteMatch> best;
  int best_literals = -1;
  for (const CatalogueResource& r : catalogue()) {
    for (const std::string* tmpl : {&r.list_path, &r.export_path}) {
      if (tmpl->empty()) continue;
      const std::vector<std::string_view> have = segments(*tmpl);
      if (have.size() != want.size()) continue;
      RouteMatch m;
      m.resource = &r;
      m.is_export = tmpl == &r.export_path;
      int literals = 0;
      bool ok = true;
      for (size_t i = 0; i < have.size() && ok; ++i) {
        if (have[i] == "{tenant}") m.tenant = want[i];
        else if (have[i].front() == '{') m.parent = want[i];
        else if (have[i] == want[i]) ++literals;
        else ok = false;
      }
      // A literal segment beats a parameter: /customers/contacts is not customer "contacts".
      if (ok && literals > best_literals) {
        best = m;
        best_literals = literals;
      }
    }
  }
  return best;
}

}  // namespace stsync::sandbox
