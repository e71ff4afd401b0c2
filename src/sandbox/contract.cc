#include "sandbox/contract.h"

#include <simdjson.h>

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "sandbox/embedded_contract.h"
#include "sandbox/wire_text.h"

namespace stsync::sandbox {

namespace {

std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> out;
  for (size_t at = 0; at <= path.size();) {
    size_t end = path.find('/', at);
    if (end == std::string_view::npos) end = path.size();
    out.push_back(path.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

bool same_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

bool is_integer(std::string_view v) {
  if (v.empty() || v.size() > 20) return false;
  size_t i = v[0] == '-' ? 1 : 0;
  if (i == v.size()) return false;
  for (; i < v.size(); ++i)
    if (v[i] < '0' || v[i] > '9') return false;
  return true;
}

bool is_number(std::string_view v) {
  if (v.empty()) return false;
  try {
    size_t used = 0;
    std::stod(std::string(v), &used);
    return used == v.size();
  } catch (const std::exception&) {
    return false;
  }
}

bool is_boolean(std::string_view v) {
  std::string lower(v);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower == "true" || lower == "false";
}

// Whether `v` is a value of `type` (`format`) as ASP.NET's model binding reads a query string.
bool valid(std::string_view type, std::string_view format, std::string_view v) {
  if (type == "integer") return is_integer(v);
  if (type == "number") return is_number(v);
  if (type == "boolean") return is_boolean(v);
  if (format == "date-time" || format == "date") return parse_timestamp(v).has_value();
  return true;
}

}  // namespace

const Contract& Contract::builtin() {
  static const Contract contract(embedded_contract_json());
  return contract;
}

Contract::Contract(std::string_view json) {
  simdjson::dom::parser parser;
  simdjson::padded_string text(json);
  simdjson::dom::element doc = parser.parse(text);
  for (simdjson::dom::object op : doc["operations"].get_array()) {
    ContractOperation o;
    o.method = std::string(std::string_view(op["method"]));
    o.path = std::string(std::string_view(op["path"]));
    for (simdjson::dom::object p : op["params"].get_array()) {
      ContractParam c;
      c.name = std::string(std::string_view(p["name"]));
      c.type = std::string(std::string_view(p["type"]));
      if (std::string_view s; p["format"].get(s) == simdjson::SUCCESS) c.format = std::string(s);
      if (std::string_view s; p["items"].get(s) == simdjson::SUCCESS) c.items = std::string(s);
      if (bool b; p["required"].get(b) == simdjson::SUCCESS) c.required = b;
      if (std::int64_t m; p["maximum"].get(m) == simdjson::SUCCESS) c.maximum = m;
      if (simdjson::dom::array a; p["enum"].get(a) == simdjson::SUCCESS)
        for (std::string_view e : a) c.enums.emplace_back(e);
      o.params.push_back(std::move(c));
    }
    if (simdjson::dom::object rule; op["one_of"].get(rule) == simdjson::SUCCESS) {
      for (std::string_view n : rule["names"].get_array()) o.one_of.emplace_back(n);
      o.one_of_message = std::string(std::string_view(rule["message"]));
    }
    operations_.push_back(std::move(o));
  }
}

const ContractOperation* Contract::find(std::string_view method, std::string_view path) const {
  const std::vector<std::string_view> want = segments(path);
  const ContractOperation* best = nullptr;
  int best_literals = -1;
  for (const ContractOperation& op : operations_) {
    if (op.method != method) continue;
    const std::vector<std::string_view> have = segments(op.path);
    if (have.size() != want.size()) continue;
    int literals = 0;
    bool match = true;
    for (size_t i = 0; i < have.size() && match; ++i) {
      if (have[i].size() > 1 && have[i].front() == '{' && have[i].back() == '}') continue;
      match = have[i] == want[i];
      ++literals;
    }
    // A literal segment beats a template one (…/jobs/cancel-reasons over …/jobs/{id}).
    if (match && literals > best_literals) {
      best = &op;
      best_literals = literals;
    }
  }
  return best;
}

std::optional<ContractViolation> Contract::check(const ContractOperation& op,
                                                 const std::multimap<std::string, std::string>& query) {
  for (const ContractParam& p : op.params) {
    const auto [begin, end] = query.equal_range(p.name);
    if (begin == end) {
      if (p.required) return ContractViolation{p.name, fmt::format("The {} field is required.", p.name)};
      continue;
    }
    for (auto it = begin; it != end; ++it) {
      const std::string& v = it->second;
      // An array is sent as the parameter repeated (ids=1&ids=2); each value has the items' type.
      const bool ok = p.type == "array" ? valid(p.items, "", v) : valid(p.type, p.format, v);
      if (!ok || (!p.enums.empty() && std::find(p.enums.begin(), p.enums.end(), v) == p.enums.end()))
        return ContractViolation{p.name, fmt::format("The value '{}' is not valid.", v)};
      if (p.maximum && is_integer(v) && std::stoll(v) > *p.maximum)
        return ContractViolation{p.name, fmt::format("The field {} must be between 1 and {}.", p.name, *p.maximum)};
    }
  }
  if (!op.one_of.empty()) {
    const bool given = std::any_of(query.begin(), query.end(), [&](const auto& q) {
      return std::any_of(op.one_of.begin(), op.one_of.end(), [&](const std::string& n) { return same_name(n, q.first); });
    });
    if (!given) return ContractViolation{op.one_of.front(), op.one_of_message};
  }
  return std::nullopt;
}

std::vector<std::string> Contract::undeclared(const ContractOperation& op,
                                              const std::multimap<std::string, std::string>& query) {
  std::vector<std::string> out;
  for (auto it = query.begin(); it != query.end(); it = query.upper_bound(it->first)) {
    const bool declared = std::any_of(op.params.begin(), op.params.end(),
                                      [&](const ContractParam& p) { return same_name(p.name, it->first); });
    if (!declared) out.push_back(it->first);
  }
  return out;
}

}  // namespace stsync::sandbox
