// The sandbox's admin calls (/_sandbox/…): ground truth, changes, deletes, faults, settings, clock.
#include "sandbox/server.h"
#include "sandbox/server_internal.h"

#include <httplib.h>
#include <fmt/format.h>

namespace stsync::sandbox {

void Server::handle_admin(const httplib::Request& req, httplib::Response& res) {
  const std::string what = req.path.substr(std::string("/_sandbox/").size());
  auto param = [&](const char* name) { return req.get_param_value(name); };
  auto tenant = parse_int(param("tenant"));
  const std::string resource = param("resource");
  if (what == "health") {
    res.set_content(R"({"status":"ok"})", kJson);
  } else if (what == "truth" && tenant) {
    auto truth = dataset_.truth(*tenant, resource);
    if (!truth) return send_problem(res, 404, "Unknown tenant or resource");
    res.set_content(std::move(*truth), kJson);
  } else if (what == "changes" && tenant && req.method == "POST") {
    auto n = parse_int(param("n"));
    const int applied = dataset_.apply_changes(*tenant, resource, n ? static_cast<int>(*n) : 1);
    if (applied < 0) return send_problem(res, 404, "Unknown tenant or resource");
    res.set_content(fmt::format(R"({{"applied":{}}})", applied), kJson);
  } else if (what == "deletes" && tenant && req.method == "POST") {
    // Hard deletes (or, with restore=1, their undoing): gone from listings and export feeds.
    auto n = parse_int(param("n"));
    auto keys = dataset_.delete_rows(*tenant, resource, n ? static_cast<int>(*n) : 1, param("restore") == "1");
    std::string out = "{\"keys\":[";
    for (size_t i = 0; i < keys.size(); ++i) {
      if (i) out += ',';
      append_json_string(out, keys[i]);
    }
    res.set_content(out + "]}", kJson);
  } else if (what == "scopes" && tenant && req.method == "POST") {
    // deny=a,b: resources (or API modules, e.g. "payroll") answering 403 for this tenant.
    std::lock_guard lock(mutex_);
    std::set<std::string>& denied = denied_[*tenant];
    denied.clear();
    const std::string list = param("deny");
    for (size_t start = 0; start < list.size();) {
      size_t comma = list.find(',', start);
      if (comma == std::string::npos) comma = list.size();
      if (comma > start) denied.insert(list.substr(start, comma - start));
      start = comma + 1;
    }
    res.set_content(fmt::format(R"({{"denied":{}}})", denied.size()), kJson);
  } else if (what == "clock") {
    if (auto s = parse_int(param("advance_seconds")); s && req.method == "POST")
      dataset_.advance_clock(*s * kTicksPerSecond);
    res.set_content(fmt::format(R"({{"now":"{}"}})", format_timestamp(dataset_.now())), kJson);
  } else if (what == "faults" && req.method == "POST") {
    std::lock_guard lock(mutex_);
    if (req.has_param("clear")) {
      options_.faults.rate = 0;
      queued_faults_.clear();
    }
    if (req.has_param("rate")) options_.faults.rate = std::atof(param("rate").c_str());
    if (auto s = parse_int(param("seed"))) fault_rng_ = Rng(static_cast<std::uint64_t>(*s));
    if (auto s = parse_int(param("slow_ms"))) options_.faults.slow_ms = static_cast<int>(*s);
    if (auto s = parse_int(param("huge_page_bytes"))) options_.faults.huge_page_bytes = *s;
    auto parse_list = [&](const std::string& list, std::vector<FaultKind>& out) {
      size_t start = 0;
      while (start < list.size()) {
        size_t comma = list.find(',', start);
        if (comma == std::string::npos) comma = list.size();
        auto kind = parse_fault(list.substr(start, comma - start));
        if (!kind) return false;
        out.push_back(*kind);
        start = comma + 1;
      }
      return true;
    };
    std::vector<FaultKind> kinds, next;
    if (!parse_list(param("kinds"), kinds) || !parse_list(param("next"), next)) {
      res.status = 400;
      res.set_content(R"({"error":"unknown fault kind"})", kJson);
      return;
    }
    if (req.has_param("kinds")) options_.faults.kinds = kinds;
    for (FaultKind k : next) queued_faults_.push_back(k);
    res.set_content(fmt::format(R"({{"rate":{},"queued":{}}})", options_.faults.rate,
                                queued_faults_.size()),
                    kJson);
  } else if (what == "settings" && req.method == "POST") {
    std::lock_guard lock(mutex_);
    auto set = [&](const char* name, int& slot) {
      if (auto v = parse_int(param(name))) slot = static_cast<int>(*v);
    };
    set("churn_per_request", options_.churn_per_request);
    set("export_batch", options_.export_batch);
    set("rate_limit", options_.rate_limit_per_second);
    set("token_ttl", options_.token_ttl_seconds);
    set("visibility_delay", options_.visibility_delay_seconds);
    set("latency_ms", options_.latency_ms);
    res.set_content(R"({"status":"ok"})", kJson);
  } else if (what == "quirks" && req.method == "POST") {
    Quirks q = dataset_.quirks();
    auto flag = [&](const char* name, bool& slot) {
      if (req.has_param(name)) slot = param(name) == "1" || param(name) == "true";
    };
    auto number = [&](const char* name, int& slot) {
      if (auto v = parse_int(param(name))) slot = static_cast<int>(*v);
    };
    flag("export_disorder", q.export_disorder);
    number("export_repeat_rows", q.export_repeat_rows);
    number("export_token_ttl_seconds", q.export_token_ttl_seconds);
    flag("unstable_list_order", q.unstable_list_order);
    number("filter_rounding_seconds", q.filter_rounding_seconds);
    flag("timestamp_styles", q.timestamp_styles);
    flag("future_record", q.future_record);
    dataset_.set_quirks(q);
    res.set_content(R"({"status":"ok","note":"export_disorder, timestamp_styles and future_record apply at reset"})",
                    kJson);
  } else if (what == "reset" && req.method == "POST") {
    dataset_.reset();
    std::lock_guard lock(mutex_);
    tokens_.clear();
    stats_.clear();
    undeclared_params_.clear();
    reports_.reset();
    queued_faults_.clear();
    options_.faults.rate = 0;
    faults_injected_ = 0;
    res.set_content(R"({"status":"ok"})", kJson);
  } else if (what == "revoke-tokens" && req.method == "POST") {
    std::lock_guard lock(mutex_);
    tokens_.clear();
    res.set_content(R"({"status":"ok"})", kJson);
  } else if (what == "invalidate-export-tokens" && req.method == "POST") {
    std::lock_guard lock(mutex_);
    ++export_token_epoch_;
    res.set_content(R"({"status":"ok"})", kJson);
  } else if (what == "report-fields" && tenant && req.method == "POST") {
    // The report's owner adds (add=Name:Type) or removes (remove=Name) a field; sends=Name:Type:
    // the field's values are of another type than it declares.
    if (!reports_.change_fields(*tenant, parse_int(param("report")).value_or(0), param("add"), param("remove"),
                                param("sends")))
      return send_problem(res, 404, "Unknown report");
    res.set_content(R"({"status":"ok"})", kJson);
  } else if (what == "report-restate" && tenant && req.method == "POST") {
    // A past day's numbers change (late payments, edits).
    reports_.restate(*tenant, parse_int(param("report")).value_or(0), param("day"));
    res.set_content(R"({"status":"ok"})", kJson);
  } else if (what == "report-limit" && req.method == "POST") {
    // The runs of one report allowed per tenant in a window (default 5 per 60,000 ms).
    reports_.set_window(static_cast<int>(parse_int(param("runs")).value_or(5)),
                        parse_int(param("window_ms")).value_or(60000));
    res.set_content(R"({"status":"ok"})", kJson);
  } else if (what == "report-truth" && tenant) {
    // One day's rows of a report as it is now: {"fields": [names], "data": [rows]}.
    const ReportDefinition* def = nullptr;
    for (const ReportDefinition& r : ReportBook::builtin())
      if (r.id == parse_int(param("report")).value_or(0)) def = &r;
    if (def == nullptr) return send_problem(res, 404, "Unknown report");
    const std::optional<ReportDefinition> report = reports_.report(*tenant, def->category, def->id);
    std::string body = "{\"fields\":[";
    for (size_t i = 0; i < report->fields.size(); ++i) {
      if (i) body += ',';
      append_json_string(body, report->fields[i].name);
    }
    body += "],\"data\":[";
    const std::vector<std::string> rows = reports_.day_rows(*tenant, *report, param("day"));
    for (size_t i = 0; i < rows.size(); ++i) body += (i ? "," : "") + rows[i];
    res.set_content(body + "]}", kJson);
  } else if (what == "undeclared-params") {
    // Parameters requests carried that the operation's contract does not declare (ignored).
    std::lock_guard lock(mutex_);
    std::string body = "[";
    for (const std::string& n : undeclared_params_) {
      if (body.size() > 1) body += ',';
      append_json_string(body, n);
    }
    res.set_content(body + "]", kJson);
  } else if (what == "stats") {
    std::lock_guard lock(mutex_);
    std::string body = fmt::format(R"({{"faults_injected":{},"tenants":{{)", faults_injected_);
    bool first = true;
    for (const auto& [t, s] : stats_) {
      if (!first) body += ',';
      first = false;
      body += fmt::format(
          R"("{}":{{"requests":{},"throttled":{},"token_requests":{},"records_served":{},"max_per_second":{},)"
          R"("slow_bodies_started":{},"slow_bodies_finished":{},"report_runs":{},"report_throttled":{}}})",
          t, s.requests, s.throttled, s.token_requests, s.records_served, s.max_per_second, s.slow_bodies_started,
          s.slow_bodies_finished, reports_.runs(t), reports_.throttled(t));
    }
    body += "}}";
    res.set_content(body, kJson);
  } else {
    send_problem(res, 404, "Unknown sandbox admin call");
  }
}

}  // namespace stsync::sandbox
