#include "verify.h"

#include <fmt/format.h>

#include <set>

#include "connect.h"
#include "copy_text.h"
#include "exit_status.h"
#include "figures.h"
#include "log.h"
#include "page_parser.h"
#include "scheduler.h"
#include "st_client.h"

namespace stsync {

std::string why_uncountable(const JobSpec& spec) {
  if (!spec.parent.empty()) return "per-parent: its source is counted parent by parent (one request each)";
  if (spec.list_path.empty()) return "no list endpoint: an export feed does not count";
  if (spec.mode == SyncMode::export_feed && spec.reconcile_every_seconds <= 0)
    return "its list answers only rows asked for by id";
  if (spec.response != ResponseShape::paged || !spec.list_include_total || !spec.list_page_size)
    return "its list does not take includeTotal";
  return {};
}

std::vector<VerifyLine> verify_counts(const Settings& settings, const VerifyOptions& options) {
  RunOptions selection;
  selection.tenant = options.tenant;
  const std::vector<TenantConfig> tenants = selected_tenants(settings, selection);
  const std::vector<JobSpec> all = resolve_jobs(settings);
  std::set<std::string> names;
  for (const JobSpec& spec : all) names.insert(spec.name);
  std::unique_ptr<PgConnection> db = connect(settings);
  const auto live = live_rows(*db, settings, names, options.tenant);
  CurlTransport transport(curl_options(settings));
  std::vector<VerifyLine> lines;
  for (const TenantConfig& t : tenants) {
    TenantSession session(t, settings.requests_per_second, real_clock());
    RetryBudget budget(settings.retry_budget_seconds);
    ServiceTitanClient client(settings, session, transport, real_clock(), budget);
    for (const JobSpec& spec : all) {
      const bool runs = options.jobs.empty()
                            ? (t.jobs.empty() ? spec.enabled
                                              : std::find(t.jobs.begin(), t.jobs.end(), spec.name) != t.jobs.end())
                            : std::find(options.jobs.begin(), options.jobs.end(), spec.name) != options.jobs.end();
      if (!runs || (!spec.only_tenants.empty() && std::find(spec.only_tenants.begin(), spec.only_tenants.end(),
                                                             t.id) == spec.only_tenants.end()))
        continue;
      VerifyLine line;
      line.tenant = t.id;
      line.job = spec.name;
      const auto stored = live.find({spec.name, std::to_string(t.id)});
      line.table = stored == live.end() ? 0 : std::stoll(stored->second);
      if (spec.report) {
        // What the report gave for the days stored, against the table: no request (a report's
        // rows are counted when its days are read; reading them again would spend its runs).
        const auto read = report_rows_read(*db, settings.schema, spec.name);
        const auto it = read.find(std::to_string(t.id));
        line.source = it == read.end() ? 0 : it->second;
        line.note = "a report job: its source is the rows the report gave for the days stored";
        line.verdict = *line.source == *line.table ? VerifyLine::Verdict::equal : VerifyLine::Verdict::mismatch;
        lines.push_back(std::move(line));
        continue;
      }
      line.note = why_uncountable(spec);
      if (!line.note.empty()) {
        line.verdict = VerifyLine::Verdict::cannot_count;
        lines.push_back(std::move(line));
        continue;
      }
      // The job's list with the filters it reads with (its inactive filter, fixed parameters,
      // required floor), one row, and the total.
      const std::string where = fmt::format("job {} tenant {} verify", spec.name, t.id);
      try {
        HttpResponse r = client.get(
            JobSpec::with_query(tenant_path(spec.list_path, t.id), spec.list_query_prefix() + spec.paging(1, 1)), where);
        PageParser parser(spec);
        ParsedPage page;
        parser.parse(r.body, t.id, page);
        if (!page.total_count) throw Error(ErrorKind::bad_data, where + ": includeTotal=true but no totalCount");
        line.source = *page.total_count;
        line.verdict = *line.source == *line.table ? VerifyLine::Verdict::equal : VerifyLine::Verdict::mismatch;
      } catch (const Error& e) {
        line.verdict = VerifyLine::Verdict::failed;
        line.note = log::redact(e.what());
      }
      lines.push_back(std::move(line));
    }
  }
  return lines;
}

std::string render_verify(const std::vector<VerifyLine>& lines, bool json, int& exit_code) {
  using V = VerifyLine::Verdict;
  int equal = 0, mismatched = 0, uncountable = 0, failed = 0;
  for (const VerifyLine& l : lines) {
    equal += l.verdict == V::equal;
    mismatched += l.verdict == V::mismatch;
    uncountable += l.verdict == V::cannot_count;
    failed += l.verdict == V::failed;
  }
  exit_code = mismatched + failed > 0 ? kExitJobFailed : kExitSuccess;
  auto verdict_name = [](V v) {
    switch (v) {
      case V::equal: return "equal";
      case V::mismatch: return "MISMATCH";
      case V::cannot_count: return "cannot count";
      case V::failed: return "FAILED";
    }
    return "";
  };
  auto number = [](const std::optional<std::int64_t>& n) { return n ? std::to_string(*n) : std::string("-"); };
  std::string out;
  if (json) {
    out = "[";
    for (size_t i = 0; i < lines.size(); ++i) {
      const VerifyLine& l = lines[i];
      out += fmt::format("{}\n  {{\"tenant\":{},\"job\":", i ? "," : "", l.tenant);
      append_json_string(out, l.job);
      out += fmt::format(",\"verdict\":\"{}\",\"source\":{},\"table\":{},\"note\":", verdict_name(l.verdict),
                         l.source ? std::to_string(*l.source) : "null", l.table ? std::to_string(*l.table) : "null");
      append_json_string(out, l.note);
      out += "}";
    }
    return out + "\n]\n";
  }
  out = fmt::format("{:<20} {:<34} {:>10} {:>10}  {}\n", "TENANT", "JOB", "SOURCE", "TABLE", "VERDICT");
  for (const VerifyLine& l : lines)
    out += fmt::format("{:<20} {:<34} {:>10} {:>10}  {}{}\n", l.tenant, l.job, number(l.source), number(l.table),
                       verdict_name(l.verdict), l.note.empty() ? "" : " (" + l.note + ")");
  out += fmt::format("verify: {} job(s): {} equal, {} differ, {} cannot count, {} failed\n", lines.size(), equal,
                     mismatched, uncountable, failed);
  return out;
}

}  // namespace stsync
