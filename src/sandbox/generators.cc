// Record generators: every field the API doc lists, with the hard cases real tenants produce.
#include <fmt/format.h>

#include <algorithm>
#include <string>

#include "sandbox/dataset.h"

namespace stsync::sandbox {
namespace {

// Text that has broken real pipelines: Unicode, quotes, backslashes, control characters, a NUL,
// COPY's null marker, SQL-looking text, and long text.
const char* const kNastyText[] = {
    "Replaced water heater — 50 gal ✓",
    "Ünïcødé: 日本語のテキスト, emoji 🚀🔧, RTL עברית",
    "He said \"fix it\" \\ then left",
    "tab\there, newline\nthere, CRLF\r\nend",
    "\\N",
    "O'Brien; DROP TABLE invoices;--",
    "back\\slash\\\\double and \\n literal",
    "",
    "   leading and trailing spaces   ",
};
const char kNulText[] = "nul\0inside";

std::string nasty_text(Rng& rng) {
  // Most text is ordinary; about one value in four is one of the hard cases.
  if (rng.chance(0.75)) return fmt::format("Service call #{} at unit {}", rng.below(100000), rng.below(500));
  const std::uint64_t n = rng.below(std::size(kNastyText) + 3);
  if (n == std::size(kNastyText)) return std::string(kNulText, sizeof(kNulText) - 1);
  if (n == std::size(kNastyText) + 1) return std::string(1500 + rng.below(500), 'x') + " long";
  if (n == std::size(kNastyText) + 2) return fmt::format("Service call #{}", rng.below(100000));
  return kNastyText[n];
}

const char* const kFirstNames[] = {"Ana", "Björn", "Chloé", "Dmitri", "Eve", "Fatima", "José",
                                   "Kwame", "Li", "Zoë"};
const char* const kLastNames[] = {"García", "O'Neil", "Smith", "Nguyễn", "Müller", "Kowalski",
                                  "Okafor", "Tanaka"};

class JsonObject {
 public:
  explicit JsonObject(std::string& out) : out_(out) { out_.push_back('{'); }
  ~JsonObject() { out_.push_back('}'); }
  JsonObject& key(std::string_view k) {
    if (!first_) out_.push_back(',');
    first_ = false;
    append_json_string(out_, k);
    out_.push_back(':');
    return *this;
  }
  JsonObject& str(std::string_view k, std::string_view v) {
    key(k);
    append_json_string(out_, v);
    return *this;
  }
  JsonObject& raw(std::string_view k, std::string_view v) {
    key(k);
    out_ += v;
    return *this;
  }
  JsonObject& num(std::string_view k, std::int64_t v) { return raw(k, std::to_string(v)); }
  JsonObject& null(std::string_view k) { return raw(k, "null"); }
  JsonObject& boolean(std::string_view k, bool v) { return raw(k, v ? "true" : "false"); }
  std::string& out() { return out_; }

 private:
  std::string& out_;
  bool first_ = true;
};

std::string money(std::int64_t cents) {
  return fmt::format("{}{}.{:02}", cents < 0 ? "-" : "", std::abs(cents) / 100,
                     std::abs(cents) % 100);
}

std::string date_only(Ticks t) {
  Ticks day = 86400 * kTicksPerSecond;
  return format_timestamp(t - ((t % day) + day) % day, 0);
}

void id_name(JsonObject& o, std::string_view k, std::int64_t id, std::string_view name) {
  o.key(k);
  JsonObject inner(o.out());
  inner.num("id", id).str("name", name);
}

void address(JsonObject& o, std::string_view k, Rng& rng) {
  o.key(k);
  JsonObject a(o.out());
  a.str("street", fmt::format("{} North Brand Boulevard", 100 + rng.below(900)));
  if (rng.chance(0.5)) {
    a.null("unit");
  } else {
    a.str("unit", fmt::format("Apt {}", rng.below(50)));
  }
  a.str("city", rng.chance(0.2) ? "São Paulo" : "Glendale").str("state", "CA");
  a.str("zip", fmt::format("{:05}", rng.below(100000))).str("country", "USA");
}

void modified_on(JsonObject& o, const RecordMeta& m) {
  if (m.modified) {
    o.str("modifiedOn", styled_timestamp(*m.modified, m.fraction_digits, m.time_style));
  } else {
    o.null("modifiedOn");
  }
}

// The resource a reference names: "customer" (customerId, customer.id) → customers,
// "businessUnit" → business_units, "technician" → technicians; empty when the tenant has none.
const ResourceDef* referenced_resource(std::string_view stem) {
  std::string snake;
  for (char c : stem) {
    if (std::isupper(static_cast<unsigned char>(c))) {
      snake += '_';
      snake += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else {
      snake += c;
    }
  }
  if (const ResourceDef* d = find_resource(snake + "s")) return d;
  return find_resource(snake + "es");
}

// An id of one of the tenant's initial rows of the resource `stem` names, so that the sandbox's
// data joins (invoices to customers, assignments to technicians) as a real tenant's does.
std::optional<std::int64_t> reference_id(const RecordMeta& m, std::string_view stem, Rng& rng) {
  if (m.tenant_counts == nullptr) return std::nullopt;
  const ResourceDef* d = referenced_resource(stem);
  if (d == nullptr) return std::nullopt;
  const auto it = m.tenant_counts->find(d->name);
  if (it == m.tenant_counts->end() || it->second <= 0) return std::nullopt;
  return initial_row_id(static_cast<int>(rng.below(static_cast<std::uint64_t>(it->second))));
}

std::string generate_invoice(const RecordMeta& m, std::uint64_t seed) {
  Rng rng(mix_seed(seed, mix_seed(static_cast<std::uint64_t>(m.id), m.version * 7919ULL + 1)));
  std::string out;
  out.reserve(2048);
  {
    JsonObject o(out);
    o.num("id", m.id).str("syncStatus", rng.chance(0.5) ? "Pending" : "Exported");
    if (rng.chance(0.1)) {
      o.null("summary");
    } else {
      o.str("summary", nasty_text(rng));
    }
    o.str("referenceNumber", std::to_string(m.id - 3));
    o.str("invoiceDate", date_only(m.created)).str("dueDate", date_only(m.created + 30 * 864000000000LL));
    const std::int64_t sub_cents = static_cast<std::int64_t>(rng.below(5'000'000));
    const std::int64_t tax_cents = sub_cents * 825 / 10000;
    const std::int64_t total_cents = sub_cents + tax_cents;
    o.str("subTotal", money(sub_cents)).str("salesTax", money(tax_cents));
    if (rng.chance(0.3)) {
      o.null("salesTaxCode");
    } else {
      o.key("salesTaxCode");
      JsonObject tc(o.out());
      // 20 significant digits: a double would keep 15-17 of them.
      tc.num("id", 7).str("name", "CA Sales Tax").raw("taxRate", "0.08250000000000000001");
    }
    o.str("total", money(total_cents)).str("balance", money(rng.chance(0.5) ? 0 : total_cents));
    o.str("discountTotal", money(-static_cast<std::int64_t>(rng.below(1000))));
    id_name(o, "invoiceType", 1 + static_cast<std::int64_t>(rng.below(3)), "Standard");
    const std::int64_t customer_fallback = 5000 + static_cast<std::int64_t>(rng.below(900));
    id_name(o, "customer", reference_id(m, "customer", rng).value_or(customer_fallback),
            fmt::format("{} {}", kFirstNames[rng.below(10)], kLastNames[rng.below(8)]));
    address(o, "customerAddress", rng);
    const std::int64_t location_fallback = 7000 + static_cast<std::int64_t>(rng.below(900));
    id_name(o, "location", reference_id(m, "location", rng).value_or(location_fallback), "Main house");
    address(o, "locationAddress", rng);
    id_name(o, "businessUnit", 319, "Plumbing - Service");
    o.str("termName", "Due Upon Receipt").str("createdBy", "admin");
    if (rng.chance(0.7)) {
      o.null("batch");
    } else {
      o.key("batch");
      JsonObject b(o.out());
      b.num("id", 88).str("number", "B-88").str("name", "Nightly batch");
    }
    o.null("depositedOn");
    o.str("createdOn", styled_timestamp(m.created, m.fraction_digits, m.time_style));
    modified_on(o, m);
    o.null("adjustmentToId");
    if (rng.chance(0.3)) {
      o.null("job");
    } else {
      o.key("job");
      JsonObject j(o.out());
      const std::int64_t job_fallback = 20000 + static_cast<std::int64_t>(rng.below(10000));
      j.num("id", reference_id(m, "job", rng).value_or(job_fallback))
          .str("number", std::to_string(rng.below(99999)))
          .str("type", "Service");
    }
    o.null("projectId");
    {
      o.key("royalty");
      JsonObject r(o.out());
      r.str("status", "Pending").null("date").null("sentOn").null("memo");
    }
    {
      o.key("employeeInfo");
      JsonObject e(o.out());
      e.num("id", 21).str("name", "admin").str("modifiedOn", "2021-06-22T16:23:12.9688553Z");
    }
    o.null("commissionEligibilityDate");
    o.str("sentStatus", "NotSent").str("reviewStatus", "NeedsReview");
    if (rng.chance(0.5)) {
      o.null("assignedTo");
    } else {
      id_name(o, "assignedTo", 21, "admin");
    }
    // items: null (not provided), an empty array, or a few items.
    const std::uint64_t item_kind = rng.below(5);
    if (item_kind == 0) {
      o.null("items");
    } else {
      o.key("items");
      out.push_back('[');
      const std::uint64_t n = item_kind == 1 ? 0 : item_kind - 1;
      for (std::uint64_t i = 0; i < n; ++i) {
        if (i) out.push_back(',');
        JsonObject it(out);
        it.num("id", m.id * 10 + static_cast<std::int64_t>(i)).str("description", nasty_text(rng));
        it.str("quantity", i == 0 ? "12345678901.234567891" : "1.0000000");
        it.str("cost", money(static_cast<std::int64_t>(rng.below(10000))));
        it.str("totalCost", "0.00").str("price", money(static_cast<std::int64_t>(rng.below(50000))));
        it.str("total", money(static_cast<std::int64_t>(rng.below(50000))));
        it.num("skuId", 300 + static_cast<std::int64_t>(rng.below(50))).str("skuName", "SKU-ÄÖ");
        it.str("type", "Service").num("order", static_cast<std::int64_t>(i + 1));
        it.raw("soldHours", i == 0 ? "1.5" : "0");
        it.str("createdOn", styled_timestamp(m.created, 7, m.time_style));
        modified_on(it, m);
        // Zone-less dates are what a session outside UTC would move to the previous day.
        it.str("serviceDate", styled_timestamp(*parse_timestamp(date_only(m.created)), 0, m.time_style));
      }
      out.push_back(']');
    }
    if (rng.chance(0.5)) {
      o.null("customFields");
    } else {
      o.key("customFields");
      out.push_back('[');
      {
        JsonObject cf(out);
        cf.str("name", "Gate code").str("value", nasty_text(rng));
      }
      out.push_back(']');
    }
    o.boolean("active", m.active);
    if (rng.chance(0.5)) {
      o.null("paidOn");
    } else {
      o.str("paidOn", date_only(m.created + 864000000000LL * 3));
    }
  }
  return out;
}

void write_employee(std::string& out, const RecordMeta& m, Rng& rng);

std::string generate_employee(const RecordMeta& m, std::uint64_t seed) {
  Rng rng(mix_seed(seed ^ 0xE11E, mix_seed(static_cast<std::uint64_t>(m.id), m.version * 31ULL + 5)));
  std::string out;
  out.reserve(1024);
  write_employee(out, m, rng);
  return out;
}

void write_employee(std::string& out, const RecordMeta& m, Rng& rng) {
  JsonObject o(out);
  const char* first = kFirstNames[rng.below(10)];
  const char* last = kLastNames[rng.below(8)];
  o.num("id", m.id).num("userId", m.id + 100000);
  o.str("name", rng.chance(0.2) ? nasty_text(rng) : fmt::format("{} {}", first, last));
  o.str("firstName", first).str("lastName", last);
  o.str("role", rng.chance(0.7) ? "Technician" : "Dispatch");
  o.raw("roleIds", fmt::format("[{},{}]", 1 + rng.below(5), 10 + rng.below(5)));
  if (rng.chance(0.2)) {
    o.null("businessUnitId");
  } else {
    o.num("businessUnitId", 319);
  }
  if (rng.chance(0.5)) {
    o.null("managerId");
  } else {
    o.num("managerId", 1000);
  }
  o.str("email", fmt::format("employee{}@example.com", m.id));
  o.str("phoneNumber", fmt::format("+1555{:07}", rng.below(10000000)));
  o.str("loginName", fmt::format("emp{}", m.id));
  {
    o.key("home");
    JsonObject h(out);
    h.str("street", "1 Main St").null("unit").str("country", "USA").str("city", "Glendale");
    h.str("state", "CA").str("zip", "91203").str("streetAddress", "1 Main St");
    h.raw("latitude", "34.1425078").raw("longitude", "-118.255075");
  }
  o.str("createdOn", styled_timestamp(m.created, m.fraction_digits, m.time_style));
  modified_on(o, m);
  o.boolean("active", m.active).boolean("accountLocked", rng.chance(0.05));
  if (rng.chance(0.3)) {
    o.null("agentId");
  } else {
    o.num("agentId", 2147483647 - static_cast<std::int64_t>(rng.below(1000)));
  }
  // hourlyRate is a JSON number; some carry 20 significant digits, which a double would round.
  switch (rng.below(4)) {
    case 0: o.raw("hourlyRate", "12345678.901234567891"); break;
    case 1: o.raw("hourlyRate", "0"); break;
    case 2: o.raw("hourlyRate", fmt::format("{}.{:02}", 15 + rng.below(60), rng.below(100))); break;
    default: o.raw("hourlyRate", fmt::format("{}", 20 + rng.below(40))); break;
  }
  o.str("startDate", date_only(m.created));
  if (m.active) {
    o.null("terminationDate");
  } else {
    o.str("terminationDate", date_only(m.modified.value_or(m.created)));
  }
  o.raw("customFields", "[]");
  o.key("permissions");
  out += fmt::format("[{{\"id\":{},\"value\":\"true\"}}]", 1 + rng.below(90));
}

// A GUID derived from the row's id: the same row keeps it across versions and runs.
std::string guid_for(std::int64_t id, std::uint64_t salt) {
  Rng r(mix_seed(static_cast<std::uint64_t>(id), salt));
  const std::uint64_t a = r.next(), b = r.next();
  return fmt::format("{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xfff,
                     0x8000 | ((b >> 48) & 0x3fff), b & 0xffffffffffffULL);
}

bool is_integer_type(const FieldDef& f) { return f.type == "integer"; }


// Values for one field, by its declared type: the hard cases real tenants produce (ids past
// 2^53, 20-digit decimals, Unicode and control characters, nulls, 0–7 fractional digits).
void generic_value(std::string& out, const FieldDef& f, Rng& rng, int depth, std::string_view resource,
                   bool may_be_null = true);

void generic_object(std::string& out, const std::vector<FieldDef>& fields, Rng& rng, int depth,
                    std::string_view resource) {
  JsonObject o(out);
  for (const FieldDef& f : fields) {
    o.key(f.name);
    generic_value(out, f, rng, depth + 1, resource);
  }
}

void generic_value(std::string& out, const FieldDef& f, Rng& rng, int depth, std::string_view resource,
                   bool may_be_null) {
  if (may_be_null && f.nullable && rng.chance(0.12)) {
    out += "null";
    return;
  }
  if (f.type == "integer") {
    if (f.format == "int32") out += std::to_string(static_cast<std::int64_t>(rng.below(100000)) - 50);
    else if (rng.chance(0.08)) out += std::to_string(9007199254740993LL + static_cast<std::int64_t>(rng.below(1000)));
    else out += std::to_string(1 + rng.below(5000000));
  } else if (f.type == "number") {
    switch (rng.below(5)) {
      case 0: out += "12345678901.234567891"; break;
      case 1: out += "0"; break;
      case 2: out += fmt::format("-{}.{:02}", rng.below(1000), rng.below(100)); break;
      default: out += fmt::format("{}.{:02}", rng.below(100000), rng.below(100)); break;
    }
  } else if (f.type == "boolean") {
    out += rng.chance(0.5) ? "true" : "false";
  } else if (f.type == "string") {
    if (f.format == "date-time") {
      const Ticks t = 1735689600LL * kTicksPerSecond + static_cast<Ticks>(rng.below(400ULL * 86400)) * kTicksPerSecond +
                      static_cast<Ticks>(rng.below(10000000));
      append_json_string(out, styled_timestamp(t, static_cast<int>(rng.below(8)), RecordMeta::TimeStyle::utc));
    } else if (f.format == "date") {
      const Ticks t = 1735689600LL * kTicksPerSecond + static_cast<Ticks>(rng.below(400)) * 86400 * kTicksPerSecond;
      std::string d = date_only(t).substr(0, 10);
      // Dates the spec declares as dates but the API writes as midnight date-times (tap evidence).
      if (f.name == "postDate" || (resource == "service_agreements" && (f.name == "startDate" || f.name == "endDate")))
        d += "T00:00:00";
      append_json_string(out, d);
    } else if (f.format == "guid") {
      append_json_string(out, guid_for(static_cast<std::int64_t>(rng.next() >> 1), 7));
    } else if (!f.enum_values.empty()) {
      append_json_string(out, f.enum_values[rng.below(f.enum_values.size())]);
    } else if (f.money) {
      append_json_string(out, rng.chance(0.2) ? std::string("12345678901.234567891")
                                              : fmt::format("{}.{:02}", rng.below(100000), rng.below(100)));
    } else {
      append_json_string(out, nasty_text(rng));
    }
  } else if (f.type == "object") {
    if (depth > 3 || f.fields.empty()) {
      out += fmt::format("{{\"key\":\"k{}\",\"value\":{}}}", rng.below(100), rng.below(1000));
    } else {
      generic_object(out, f.fields, rng, depth, resource);
    }
  } else if (f.type == "array") {
    const std::uint64_t n = rng.below(4);
    out.push_back('[');
    for (std::uint64_t i = 0; i < n; ++i) {
      if (i) out.push_back(',');
      if (!f.elements.empty() && depth <= 3) {
        generic_object(out, f.elements, rng, depth, resource);
      } else if (f.items == "integer") {
        out += std::to_string(1 + rng.below(100000));
      } else if (f.items == "object") {
        out += fmt::format("{{\"id\":{}}}", 1 + rng.below(1000));
      } else {
        append_json_string(out, fmt::format("tag-{}", rng.below(1000)));
      }
    }
    out.push_back(']');
  } else {
    append_json_string(out, nasty_text(rng));
  }
}

std::string generate_generic(const ResourceDef& def, const RecordMeta& m, std::uint64_t seed) {
  const CatalogueResource& cat = *def.cat;
  std::uint64_t salt = 1469598103934665603ULL;
  for (char c : def.name) salt = (salt ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  Rng rng(mix_seed(seed ^ salt, mix_seed(static_cast<std::uint64_t>(m.id), m.version * 7919ULL + 1)));
  const std::string key = record_key(def, m);
  std::string out;
  out.reserve(1024);
  JsonObject o(out);
  for (const FieldDef& f : cat.fields) {
    o.key(f.name);
    const bool window_field = std::any_of(cat.windows.begin(), cat.windows.end(), [&](const WindowParam& w) {
      return w.field == f.name && w.field != "modifiedOn";
    });
    if (f.name == "id" || (!cat.key.empty() && f.name == cat.key.front())) {
      if (is_integer_type(f)) out += key;
      else append_json_string(out, key);
    } else if (f.name == "modifiedOn") {
      if (m.modified) append_json_string(out, styled_timestamp(*m.modified, m.fraction_digits, m.time_style));
      else out += "null";
    } else if (f.name == "createdOn" || window_field) {
      append_json_string(out, styled_timestamp(m.created, m.fraction_digits, m.time_style));
    } else if (f.name == "active" && f.type == "boolean") {
      out += m.active ? "true" : "false";
    } else {
      // A key field is never null and never changes: it is the record's identity (derived from
      // the row's id alone, not its version).
      const bool in_key = std::find(cat.key.begin(), cat.key.end(), f.name) != cat.key.end();
      const bool reference = is_integer_type(f) && f.name.size() > 2 && f.name.ends_with("Id");
      if (in_key) {
        Rng stable(mix_seed(seed ^ salt, static_cast<std::uint64_t>(m.id) * 31 + f.name.size()));
        generic_value(out, f, stable, 0, def.name, false);
      } else if (const std::optional<std::int64_t> ref =
                     reference ? reference_id(m, std::string_view(f.name).substr(0, f.name.size() - 2), rng)
                               : std::nullopt;
                 ref && !(f.nullable && rng.chance(0.12))) {
        out += std::to_string(*ref);  // a row of the tenant's: customerId, technicianId, jobId, …
      } else {
        generic_value(out, f, rng, 0, def.name);
      }
    }
  }
  return out;
}

}  // namespace

std::string record_key(const ResourceDef& def, const RecordMeta& m) {
  if (def.cat == nullptr) return std::to_string(m.id);
  const FieldDef* f = def.cat->field("id");
  if (f == nullptr && !def.cat->key.empty()) f = def.cat->field(def.cat->key.front());
  if (f == nullptr) return {};  // keyless records
  if (f->type == "integer") return std::to_string(m.id);
  if (f->format == "guid" || f->name == "id") return guid_for(m.id, 0x5eed);
  return fmt::format("K{}", m.id);
}

std::string generate_record(const ResourceDef& def, const RecordMeta& meta, std::uint64_t seed) {
  if (def.generate != nullptr) return def.generate(meta, seed);
  return generate_generic(def, meta, seed);
}

const std::vector<ResourceDef>& builtin_resources() {
  static const std::vector<ResourceDef> defs = [] {
    std::vector<ResourceDef> out = {
        {"invoices", "accounting", true, false, true, &generate_invoice, find_catalogue("invoices")},
        {"employees", "settings", false, false, false, &generate_employee, find_catalogue("employees")},
    };
    for (const CatalogueResource& r : catalogue()) {
      if (r.name == "invoices" || r.name == "employees") continue;
      const FieldDef* modified = r.field("modifiedOn");
      out.push_back(ResourceDef{r.name, r.list_path.substr(0, r.list_path.find('/')), r.active_param == "activeState",
                                r.sort, modified != nullptr && modified->nullable, nullptr, &r});
    }
    return out;
  }();
  return defs;
}
const ResourceDef* find_resource(std::string_view name) {
  for (const ResourceDef& d : builtin_resources())
    if (d.name == name) return &d;
  return nullptr;
}

}  // namespace stsync::sandbox
