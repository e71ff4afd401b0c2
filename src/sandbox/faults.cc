// Faults on request: transient HTTP failures, cut and slow bodies, and pages whose data is wrong.
#include "sandbox/server.h"
#include "sandbox/server_internal.h"

#include <httplib.h>
#include <fmt/format.h>

#include <cstring>

namespace stsync::sandbox {

std::string_view fault_name(FaultKind kind) { return kFaultNames[static_cast<int>(kind)]; }

std::optional<FaultKind> parse_fault(std::string_view name) {
  for (int i = 0; i < kFaultCount; ++i)
    if (name == kFaultNames[i]) return static_cast<FaultKind>(i);
  return std::nullopt;
}

bool Server::inject_fault(httplib::Response& res, std::optional<FaultKind>& data_fault) {
  std::optional<FaultKind> kind;
  int slow_ms;
  {
    std::lock_guard lock(mutex_);
    slow_ms = options_.faults.slow_ms;
    if (!queued_faults_.empty()) {
      kind = queued_faults_.front();
      queued_faults_.pop_front();
    } else if (options_.faults.rate > 0 && fault_rng_.chance(options_.faults.rate)) {
      const auto& kinds = options_.faults.kinds;
      kind = kinds.empty() ? static_cast<FaultKind>(fault_rng_.below(kTransientFaultCount))
                           : kinds[fault_rng_.below(kinds.size())];
    }
    if (kind == FaultKind::none) kind.reset();
    if (kind) ++faults_injected_;
  }
  if (!kind) return false;
  if (*kind == FaultKind::slow_body || static_cast<int>(*kind) >= kTransientFaultCount) {
    data_fault = kind;  // applied to the real page
    return false;
  }
  switch (*kind) {
    case FaultKind::http500: send_problem(res, 500, "Internal Server Error"); return true;
    case FaultKind::http502: send_problem(res, 502, "Bad Gateway"); return true;
    case FaultKind::http503: send_problem(res, 503, "Service Unavailable"); return true;
    case FaultKind::http504: send_problem(res, 504, "Gateway Timeout"); return true;
    case FaultKind::maintenance409:
      send_problem(res, 409, "Service suspended for maintenance");
      return true;
    case FaultKind::throttle:
      // The HTTP-date form of Retry-After, one second after this response's Date.
      res.set_header("Retry-After", format_http_date(dataset_.now() + kTicksPerSecond));
      send_problem(res, 429, "Too Many Requests");
      return true;
    case FaultKind::throttle_bare:  // a 429 that does not say how long to wait
      send_problem(res, 429, "Too Many Requests");
      return true;
    case FaultKind::html:
      res.status = 502;
      res.set_content("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 "
                      "Bad Gateway</h1></center></body></html>",
                      "text/html");
      return true;
    case FaultKind::empty:
      res.status = 500;
      res.set_content("", "text/plain");
      return true;
    case FaultKind::slow:
      std::this_thread::sleep_for(std::chrono::milliseconds(slow_ms));
      return false;  // then the real answer
    case FaultKind::reset:
    case FaultKind::truncate: {
      // The headers promise a full page; the connection then closes after none or half of it.
      const bool half = *kind == FaultKind::truncate;
      const size_t length = 4096;
      res.status = 200;
      res.set_content_provider(
          length, kJson, [half](size_t offset, size_t, httplib::DataSink& sink) {
            if (half && offset == 0) {
              const std::string part = R"({"hasMore":true,"continueFrom":"x","data":[{"id":1,)";
              sink.write(part.data(), part.size());
              return true;
            }
            return false;
          });
      return true;
    }
    default: return false;
  }
}

void Server::corrupt_page(FaultKind kind, const std::string& resource, std::string& body) {
  auto replace_first = [&](const std::string& from, const std::string& to) {
    const size_t pos = body.find(from);
    if (pos != std::string::npos) body.replace(pos, from.size(), to);
  };
  switch (kind) {
    case FaultKind::bad_json: body.resize(body.size() / 2); body += "<<<garbage>>>}"; break;
    case FaultKind::no_data: body = R"({"hasMore":false,"continueFrom":"x","items":[]})"; break;
    case FaultKind::no_id: replace_first("\"data\":[{\"id\":", "\"data\":[{\"identifier\":"); break;
    case FaultKind::wrong_type: replace_first("\"active\":", "\"active\":\"yes\",\"was_active\":"); break;
    case FaultKind::bad_timestamp: replace_first(",\"modifiedOn\":\"", ",\"modifiedOn\":\"last tuesday\",\"was\":\""); break;
    case FaultKind::refused_values: {
      // Values PostgreSQL refuses though the JSON is well-formed enough for a client that does
      // not look at them: a lone surrogate, a raw control character and a number beyond numeric,
      // in a field stsync does not type (records 2, 3, 4 of the page), and year 0000 in an
      // invoice item's date (the first item after record 5).
      const std::string marker = resource == "employees" ? "\"userId\":" : "\"syncStatus\":";
      const char* const bad[] = {"\"note\":\"lone \\ud800 surrogate\",", "\"note\":\"bell \x07 inside\",",
                                 "\"note\":1e999999,"};
      size_t pos = 0;
      for (int record = 1; record <= 5; ++record) {
        pos = body.find(marker, pos);
        if (pos == std::string::npos) return;
        if (record >= 2 && record <= 4) {
          body.insert(pos, bad[record - 2]);
          pos += std::strlen(bad[record - 2]);
        }
        pos += marker.size();
      }
      const std::string date_key = "\"serviceDate\":\"";
      const size_t date = body.find(date_key, pos);
      if (date != std::string::npos)
        body.replace(date, date_key.size(), "\"serviceDate\":\"0000-01-01T00:00:00\",\"was\":\"");
      break;
    }
    case FaultKind::deep_json: {
      // A field nested 200 levels deep in the first record.
      const size_t pos = body.find("\"data\":[{");
      if (pos != std::string::npos)
        body.insert(pos + 9, "\"deep\":" + std::string(200, '[') + std::string(200, ']') + ",");
      break;
    }
    case FaultKind::stale_record: {
      // An older version of a record re-served (a replica behind, a cache): its modifiedOn in 2000
      // and its content different; a client must keep the newer row. The page's first record with
      // a modifiedOn of its own (a key at depth 2: inside the data array, inside the record, not in
      // a nested object; some invoices have none).
      const std::string key = "\"modifiedOn\":\"";
      size_t i = body.find("\"data\":[");
      if (i == std::string::npos) break;
      i += 8;
      int depth = 1;
      bool in_string = false;
      for (; i < body.size() && depth > 0; ++i) {
        const char c = body[i];
        if (in_string) {
          if (c == '\\') ++i;
          else if (c == '"') in_string = false;
          continue;
        }
        if (depth == 2 && body.compare(i, key.size(), key) == 0) {
          const size_t end = body.find('"', i + key.size());
          body.replace(i, end - i + 1, key + "2000-01-01T00:00:00Z\",\"staleCopy\":true");
          break;
        }
        if (c == '"') in_string = true;
        else if (c == '{' || c == '[') ++depth;
        else if (c == '}' || c == ']') --depth;
      }
      break;
    }
    case FaultKind::huge_number:
      if (resource == "employees") replace_first("\"agentId\":", "\"agentId\":99999999999,\"was\":");
      else replace_first("\"customer\":{\"id\":", "\"customer\":{\"id\":99999999999999999999,\"was\":");
      break;
    default: break;
  }
}

}  // namespace stsync::sandbox
