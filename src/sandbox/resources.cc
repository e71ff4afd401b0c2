// The resources: list, export and per-parent endpoints with their filters, paging and export tokens.
#include "sandbox/server.h"
#include "sandbox/server_internal.h"
#include "sandbox/contract.h"

#include <httplib.h>
#include <fmt/format.h>

#include <regex>

namespace stsync::sandbox {

std::string module_of(const CatalogueResource& resource) {
  const std::string& path = resource.list_path.empty() ? resource.export_path : resource.list_path;
  return path.substr(0, path.find('/'));
}

void Server::handle_resource(const httplib::Request& req, httplib::Response& res) {
  // The path names a catalogued resource (its list or export endpoint), the tenant and, for a
  // per-parent resource, the parent's key.
  const std::optional<RouteMatch> match = route(req.path);
  if (!match) {
    send_problem(res, 404, "Not Found");
    return;
  }
  const CatalogueResource& cat = *match->resource;
  const std::string resource = cat.name;
  const bool is_export = match->is_export;
  const std::optional<std::int64_t> tenant = parse_int(match->tenant);
  if (!tenant) {
    send_problem(res, 400, "One or more validation errors occurred.", "tenant",
                 "The value is not a valid tenant id.");
    return;
  }
  if (!authorize(req, res, *tenant)) return;
  if (throttle(res, *tenant)) {
    send_problem(res, 429, "Too Many Requests");
    return;
  }
  bool denied = false;
  {
    // The tenant's app was not granted this API's scope (POST /_sandbox/scopes).
    std::lock_guard lock(mutex_);
    const auto it = denied_.find(*tenant);
    denied = it != denied_.end() && (it->second.count(resource) || it->second.count(module_of(cat)));
  }
  if (denied) {
    send_problem(res, 403, "Forbidden", "", "The application is not authorized to access this resource.");
    return;
  }
  // The published contract: what the real API refuses with a 400, so does the sandbox.
  if (const ContractOperation* op = Contract::builtin().find(req.method, std::string_view(req.path).substr(1))) {
    if (const std::optional<ContractViolation> v = Contract::check(*op, req.params)) {
      send_problem(res, 400, "One or more validation errors occurred.", v->field, v->message);
      return;
    }
    // Ignored, as the real API ignores them; noted for the conformance tests (a filter the
    // client misspells would filter nothing there).
    if (std::vector<std::string> names = Contract::undeclared(*op, req.params); !names.empty()) {
      std::lock_guard lock(mutex_);
      for (const std::string& n : names) undeclared_params_.insert(op->path + " " + n);
    }
  }
  std::optional<FaultKind> data_fault;
  if (inject_fault(res, data_fault)) return;
  auto param = [&](const char* name) -> std::optional<std::string> {
    if (!req.has_param(name)) return std::nullopt;
    return req.get_param_value(name);
  };
  auto bad = [&](std::string_view field, std::string_view message) {
    send_problem(res, 400, "One or more validation errors occurred.", field, message);
  };
  if (options_.churn_per_request > 0)
    dataset_.apply_changes(*tenant, resource, options_.churn_per_request);
  int latency_ms;
  {
    std::lock_guard lock(mutex_);
    latency_ms = options_.latency_ms;
  }
  // The time a real API takes to answer (network and server), for fleet and scheduling tests.
  if (latency_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(latency_ms));

  std::string body;
  int served = 0;
  if (is_export) {
    ExportQuery q;
    q.batch_size = options_.export_batch;
    q.visibility_delay = static_cast<Ticks>(options_.visibility_delay_seconds) * kTicksPerSecond;
    if (auto v = param("includeRecentChanges")) {
      if (!iequals(*v, "true") && !iequals(*v, "false")) return bad("includeRecentChanges", "The value is not valid.");
      q.include_recent = iequals(*v, "true");
    }
    if (cat.export_active) {
      // Exports that take `active` hide inactive rows unless asked (True is the default).
      const std::string v = param("active").value_or("True");
      if (iequals(v, "True")) q.hide_inactive = true;
      else if (!iequals(v, "Any") && !iequals(v, "False")) return bad("active", fmt::format("The value '{}' is not valid.", v));
    }
    if (auto from = param("from"); from && !from->empty()) {
      if (auto date = parse_timestamp(*from)) {
        q.from_date = date;
      } else if (auto seq = decode_export_token(*from, *tenant, resource)) {
        q.after_seq = seq;
      } else {
        return bad("from", "The continueFrom token is invalid or has expired.");
      }
    }
    auto page = dataset_.export_page(*tenant, resource, q);
    if (!page) return send_problem(res, 404, "Tenant not found");
    served = page->rows.count;
    body.reserve(page->rows.data.size() + 200);
    // stuck_token: a broken feed that hands back the token it was given, with hasMore=true.
    // cycle_token: one that goes back to the token the client sent before this one (a cycle of
    // two pages), with hasMore=true.
    const std::string from_now = param("from").value_or("");
    std::string from_before;
    {
      std::lock_guard lock(mutex_);
      std::string& last = last_export_from_[{*tenant, resource}];
      from_before = last;
      last = from_now;
    }
    const bool stuck = data_fault == FaultKind::stuck_token && q.after_seq;
    const bool cycle = data_fault == FaultKind::cycle_token && q.after_seq && !from_before.empty();
    body = fmt::format(R"({{"hasMore":{},"continueFrom":"{}","data":[)",
                       page->has_more || stuck || cycle ? "true" : "false",
                       stuck ? from_now : cycle ? from_before : encode_export_token(*tenant, resource, page->continue_seq));
    body += page->rows.data;
    body += "]}";
  } else {
    ListQuery q;
    if (!cat.parent.empty()) {
      auto parent = dataset_.row_by_key(*tenant, cat.parent, match->parent);
      if (!parent) return send_problem(res, 404, "Not Found", "", "The parent record does not exist.");
      q.parent = *parent;
    }
    if (auto v = param("page")) {
      auto n = parse_int(*v);
      if (!n || *n < 1 || *n > 1000000) return bad("page", "The value must be a positive integer.");
      q.page = static_cast<int>(*n);
    }
    if (auto v = param("pageSize")) {
      auto n = parse_int(*v);
      if (!n || *n < 1 || *n > 5000) return bad("pageSize", "The field pageSize must be between 1 and 5000.");
      q.page_size = static_cast<int>(*n);
    }
    bool include_total = false;
    if (auto v = param("includeTotal")) include_total = iequals(*v, "true");
    // Only the date filters this endpoint declares work; others are ignored, as ASP.NET does.
    for (const WindowParam& w : cat.windows) {
      const bool modified = w.field == "modifiedOn";
      for (auto [name, slot] : {std::pair{w.after, modified ? &q.modified_on_or_after : &q.created_on_or_after},
                                std::pair{w.before, modified ? &q.modified_before : &q.created_before}}) {
        if (name.empty()) continue;
        if (auto v = param(name.c_str()); v && !v->empty()) {
          *slot = parse_timestamp(*v);
          if (!*slot) return bad(name, fmt::format("The value '{}' is not valid.", *v));
        }
      }
    }
    // ids: one comma list, or (where the contract types it as an array) the parameter repeated.
    std::optional<std::string> all_ids;
    for (size_t i = 0; i < req.get_param_value_count("ids"); ++i)
      all_ids = (all_ids ? *all_ids + "," : std::string()) + req.get_param_value("ids", i);
    if (auto v = all_ids; v && !v->empty() && cat.ids) {
      size_t start = 0;
      const FieldDef* id_field = cat.field("id");
      while (start <= v->size()) {
        size_t comma = v->find(',', start);
        if (comma == std::string::npos) comma = v->size();
        const std::string id = v->substr(start, comma - start);
        if (id_field != nullptr && id_field->type == "integer" && !parse_int(id))
          return bad("ids", "The ids must be comma-separated integers.");
        q.ids.push_back(id);
        start = comma + 1;
      }
      if (q.ids.size() > 50) return bad("ids", "At most 50 ids may be given.");
    }
    // Inactive rows: each endpoint's own parameter and default (most hide them unless asked).
    using A = ListQuery::Active;
    q.active = A::any;
    if (!cat.active_param.empty()) {
      const std::string v = param(cat.active_param.c_str()).value_or(cat.active_default);
      const std::string& p = cat.active_param;
      if (p == "activeState") {
        if (iequals(v, "ActiveOnly")) q.active = A::only;
        else if (iequals(v, "InactiveOnly")) q.active = A::inactive_only;
        else if (iequals(v, "All")) q.active = A::any;
        else return bad(p, fmt::format("The value '{}' is not valid.", v));
      } else if (p == "active") {
        if (iequals(v, "True")) q.active = A::only;
        else if (iequals(v, "False")) q.active = A::inactive_only;
        else if (iequals(v, "Any")) q.active = A::any;
        else return bad(p, fmt::format("The value '{}' is not valid.", v));
      } else if (p == "includeInactive" || p == "activeOnly") {
        if (!iequals(v, "true") && !iequals(v, "false")) return bad(p, fmt::format("The value '{}' is not valid.", v));
        q.active = iequals(v, p == "includeInactive" ? "true" : "false") ? A::any : A::only;
      }
    }
    // invoices and employees ignore sort (the API notes; the catalogue lists a sort parameter
    // for invoices without fields: see the README's notes on the catalogue).
    const ResourceDef* def = find_resource(resource);
    if (auto v = param("sort"); v && def != nullptr && def->sortable && !v->empty()) {
      using S = ListQuery::Sort;
      const bool desc = (*v)[0] == '-';
      const std::string field = ((*v)[0] == '-' || (*v)[0] == '+' || (*v)[0] == ' ') ? v->substr(1) : *v;
      if (iequals(field, "Id")) q.sort = desc ? S::id_desc : S::id_asc;
      else if (iequals(field, "ModifiedOn")) q.sort = desc ? S::modified_desc : S::modified_asc;
      else if (iequals(field, "CreatedOn")) q.sort = desc ? S::created_desc : S::created_asc;
      else return bad("sort", "The sort field is not supported.");
    }
    if (cat.response == "data_only" || cat.response == "object") {
      q.page = 1;
      q.page_size = cat.response == "object" ? 1 : 1000000;
    }
    auto page = dataset_.list(*tenant, resource, q);
    if (!page) return send_problem(res, 404, "Tenant not found");
    served = page->rows.count;
    body.reserve(page->rows.data.size() + 200);
    if (cat.response == "object") {
      // The record itself; none (a job never booked): 404.
      if (page->rows.count == 0) return send_problem(res, 404, "Not Found");
      body = page->rows.data;
    } else if (cat.response == "data_only") {
      body = "{\"data\":[" + page->rows.data + "]}";
    } else {
      body = fmt::format(R"({{"page":{},"pageSize":{},"hasMore":{},"totalCount":{},"data":[)", q.page,
                         q.page_size, page->has_more ? "true" : "false",
                         include_total ? std::to_string(page->total) : "null");
      body += page->rows.data;
      body += "]}";
    }
  }
  {
    std::lock_guard lock(mutex_);
    stats_[*tenant].records_served += served;
  }
  if (data_fault == FaultKind::slow_body) {
    // The real page, trickled out in ten chunks over slow_ms.
    int slow_ms;
    {
      std::lock_guard lock(mutex_);
      slow_ms = options_.faults.slow_ms;
    }
    auto shared = std::make_shared<std::string>(std::move(body));
    const std::int64_t who = *tenant;
    res.set_chunked_content_provider(kJson, [this, who, shared, slow_ms](size_t offset, httplib::DataSink& sink) {
      if (offset == 0) {
        std::lock_guard lock(mutex_);
        ++stats_[who].slow_bodies_started;
      }
      if (offset >= shared->size()) {
        {
          std::lock_guard lock(mutex_);
          ++stats_[who].slow_bodies_finished;
        }
        sink.done();
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(slow_ms / 10));
      const size_t n = std::min(shared->size() - offset, shared->size() / 10 + 1);
      sink.write(shared->data() + offset, n);
      return true;
    });
    return;
  }
  if (data_fault == FaultKind::endless_body) {
    // A 200 whose body never ends (a broken proxy, a server bug): valid JSON records, chunk after
    // chunk, until the client hangs up (or 64 GB).
    auto chunk = std::make_shared<std::string>();
    while (chunk->size() < (1 << 20))
      *chunk += R"({"id":1,"name":"endless","modifiedOn":"2025-01-01T00:00:00Z","active":true},)";
    res.set_chunked_content_provider(kJson, [chunk](size_t offset, httplib::DataSink& sink) {
      if (offset == 0) {
        const std::string head = R"({"hasMore":false,"continueFrom":"x","data":[)";
        return sink.write(head.data(), head.size());
      }
      if (offset > (64ULL << 30)) {
        sink.done();
        return true;
      }
      return sink.write(chunk->data(), chunk->size());
    });
    return;
  }
  if (data_fault == FaultKind::huge_page) {
    // A valid page of about huge_page_bytes: the first record carries a long string.
    std::int64_t bytes;
    {
      std::lock_guard lock(mutex_);
      bytes = options_.faults.huge_page_bytes;
    }
    const size_t pos = body.find("\"data\":[{");
    if (pos != std::string::npos && bytes > static_cast<std::int64_t>(body.size()))
      body.insert(pos + 9, "\"padding\":\"" + std::string(static_cast<size_t>(bytes) - body.size(), 'p') + "\",");
  }
  if (data_fault) corrupt_page(*data_fault, resource, body);
  send_page(req, res, std::move(body));
}

std::string Server::encode_export_token(std::int64_t tenant, const std::string& resource,
                                        std::uint64_t seq) const {
  // The issue time (sandbox clock, ms) rides along so that tokens can expire
  // (Quirks::export_token_ttl_seconds).
  const std::string plain =
      fmt::format("{}|{}|{}|{}|{}", tenant, resource, export_token_epoch_.load(), seq,
                  dataset_.now() / (kTicksPerSecond / 1000));
  return base64url(fmt::format("{}|{:x}", plain, checksum(plain)));
}

std::optional<std::uint64_t> Server::decode_export_token(std::string_view token, std::int64_t tenant,
                                                         const std::string& resource) const {
  auto plain = unbase64url(token);
  if (!plain) return std::nullopt;
  const size_t bar = plain->rfind('|');
  if (bar == std::string::npos) return std::nullopt;
  const std::string body = plain->substr(0, bar);
  if (fmt::format("{:x}", checksum(body)) != plain->substr(bar + 1)) return std::nullopt;
  const std::string prefix = fmt::format("{}|{}|{}|", tenant, resource, export_token_epoch_.load());
  if (body.rfind(prefix, 0) != 0) return std::nullopt;
  const std::string_view rest = std::string_view(body).substr(prefix.size());
  const size_t sep = rest.find('|');
  if (sep == std::string_view::npos) return std::nullopt;
  auto seq = parse_int(rest.substr(0, sep));
  auto issued_ms = parse_int(rest.substr(sep + 1));
  if (!seq || *seq < 0 || !issued_ms) return std::nullopt;
  const int ttl = dataset_.quirks().export_token_ttl_seconds;
  // Expiry by the sandbox's clock, which tests move instead of sleeping.
  if (ttl > 0 && dataset_.now() / (kTicksPerSecond / 1000) - *issued_ms > ttl * 1000LL) return std::nullopt;
  return static_cast<std::uint64_t>(*seq);
}

}  // namespace stsync::sandbox
