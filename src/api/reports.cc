#include "reports.h"

#include <simdjson.h>
#include <fmt/format.h>

#include <functional>

#include "errors.h"
#include "http.h"

namespace stsync {
namespace {

// A member's text (empty when missing or not text) and flag (false when missing).
std::string text_of(simdjson::dom::object o, std::string_view key) {
  std::string_view s;
  return o[key].get(s) == simdjson::SUCCESS ? std::string(s) : std::string();
}

bool flag_of(simdjson::dom::object o, std::string_view key) {
  bool b = false;
  return o[key].get(b) == simdjson::SUCCESS && b;
}

// GETs every page of a paged listing, calling `each` for every item of `data`.
void each_item(ServiceTitanClient& client, const std::string& path, const std::string& what,
               const std::function<void(simdjson::dom::object)>& each) {
  simdjson::dom::parser parser;
  for (int page = 1; page <= 1000; ++page) {
    HttpResponse r = client.get(fmt::format("{}?page={}&pageSize=500", path, page), what);
    try {
      simdjson::dom::element doc = parser.parse(r.body);
      for (simdjson::dom::object item : doc["data"].get_array()) each(item);
      if (!flag_of(doc, "hasMore")) return;
    } catch (const simdjson::simdjson_error& e) {
      throw Error(ErrorKind::bad_data, fmt::format("{}: the response is not the listing the API documents ({})", what,
                                                   e.what()));
    }
  }
}

}  // namespace

std::vector<ReportCategory> report_categories(ServiceTitanClient& client, std::int64_t tenant) {
  std::vector<ReportCategory> out;
  each_item(client, fmt::format("reporting/v2/tenant/{}/report-categories", tenant),
            fmt::format("tenant {} report categories", tenant),
            [&](simdjson::dom::object o) { out.push_back({text_of(o, "id"), text_of(o, "name")}); });
  return out;
}

std::vector<ReportSummary> category_reports(ServiceTitanClient& client, std::int64_t tenant, const std::string& category) {
  std::vector<ReportSummary> out;
  each_item(client, fmt::format("reporting/v2/tenant/{}/report-category/{}/reports", tenant, url_encode(category)),
            fmt::format("tenant {} reports of category {}", tenant, category), [&](simdjson::dom::object o) {
              std::int64_t id = 0;
              if (o["id"].get(id) != simdjson::SUCCESS) id = 0;  // a report without an id: listed as 0
              out.push_back({id, text_of(o, "name"), text_of(o, "description")});
            });
  return out;
}

ReportDescription describe_report(ServiceTitanClient& client, std::int64_t tenant, const std::string& category,
                                  std::int64_t id) {
  const std::string what = fmt::format("tenant {} report {}/{}", tenant, category, id);
  HttpResponse r = client.get(
      fmt::format("reporting/v2/tenant/{}/report-category/{}/reports/{}", tenant, url_encode(category), id), what);
  ReportDescription out;
  try {
    simdjson::dom::parser parser;
    simdjson::dom::object doc = parser.parse(r.body).get_object();
    if (doc["id"].get(out.id) != simdjson::SUCCESS) out.id = id;
    out.name = text_of(doc, "name");
    out.description = text_of(doc, "description");
    for (simdjson::dom::object p : doc["parameters"].get_array())
      out.parameters.push_back({text_of(p, "name"), text_of(p, "label"),
                                text_of(p, "dataType"), flag_of(p, "isRequired"),
                                flag_of(p, "isArray")});
    for (simdjson::dom::object f : doc["fields"].get_array())
      out.fields.push_back({text_of(f, "name"), text_of(f, "label"),
                            text_of(f, "dataType")});
  } catch (const simdjson::simdjson_error& e) {
    throw Error(ErrorKind::bad_data, fmt::format("{}: the description is not what the API documents ({})", what, e.what()));
  }
  return out;
}

}  // namespace stsync
