#include "quarantine_view.h"

#include <fmt/format.h>

#include "copy_text.h"

namespace stsync {

std::string render_quarantine(const Settings& settings, const QuarantineFilter& filter, bool json) {
  const std::optional<std::vector<QuarantinedRow>> rows = quarantined_records(settings, filter);
  if (!rows) return json ? "[]\n" : "Nothing in quarantine.\n";
  std::string out;
  if (json) {
    out = "[";
    for (size_t i = 0; i < rows->size(); ++i) {
      out += fmt::format("{}\n  {{\"quarantine_id\":{},\"tenant\":{},\"job\":", i ? "," : "", (*rows)[i].quarantine_id, (*rows)[i].tenant);
      append_json_string(out, (*rows)[i].job);
      out += fmt::format(",\"record_id\":{},\"seen_at\":", (*rows)[i].record_id.empty() ? "null" : (*rows)[i].record_id);
      append_json_string(out, (*rows)[i].seen_at);
      out += ",\"page\":";
      append_json_string(out, (*rows)[i].page);
      out += ",\"error\":";
      append_json_string(out, (*rows)[i].error);
      out += "}";
    }
    return out + "\n]\n";
  }
  if (static_cast<int>(rows->size()) == 0) return "Nothing in quarantine.\n";
  const char* const row_format = "{:>6} {:<20} {:<14} {:<20} {:<20}  {}\n";
  out = fmt::format(fmt::runtime(row_format), "QID", "TENANT", "JOB", "RECORD ID", "SEEN", "ERROR (and where)");
  for (size_t i = 0; i < rows->size(); ++i) {
    std::string tail = (*rows)[i].error + " — " + (*rows)[i].page;
    if (tail.size() > 200) tail = tail.substr(0, 197) + "...";
    out += fmt::format(fmt::runtime(row_format), (*rows)[i].quarantine_id, (*rows)[i].tenant, (*rows)[i].job, (*rows)[i].record_id, (*rows)[i].seen_at, tail);
  }
  out += fmt::format("{} record(s). After fixing the job file, `stsync quarantine --retry` stores them.\n", static_cast<int>(rows->size()));
  return out;
}

}  // namespace stsync
