// The sandbox's OAuth token endpoint, the bearer and app-key checks, and the per-tenant rate limit.
#include "sandbox/server.h"
#include "sandbox/server_internal.h"

#include <httplib.h>
#include <fmt/format.h>

namespace stsync::sandbox {

std::string sandbox_client_id(std::int64_t tenant) { return fmt::format("sandbox-client-{}", tenant); }
std::string sandbox_client_secret(std::int64_t tenant) {
  return fmt::format("sandbox-secret-{}", tenant);
}

void Server::handle_token(const httplib::Request& req, httplib::Response& res) {
  const std::string content_type = req.get_header_value("Content-Type");
  if (content_type.rfind("application/x-www-form-urlencoded", 0) != 0) {
    res.status = 400;
    res.set_content(R"({"error":"invalid_request"})", kJson);
    return;
  }
  httplib::Params form;
  httplib::detail::parse_query_text(req.body, form);
  auto field = [&](const char* name) {
    auto it = form.find(name);
    return it == form.end() ? std::string() : it->second;
  };
  if (field("grant_type") != "client_credentials") {
    res.status = 400;
    res.set_content(R"({"error":"unsupported_grant_type"})", kJson);
    return;
  }
  const std::string client_id = field("client_id");
  std::optional<std::int64_t> tenant;
  for (std::int64_t t : dataset_.tenants())
    if (client_id == sandbox_client_id(t) && field("client_secret") == sandbox_client_secret(t))
      tenant = t;
  if (!tenant) {
    res.status = 400;
    res.set_content(R"({"error":"invalid_client"})", kJson);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    auto& stats = stats_[*tenant];
    const std::int64_t now_ms = steady_ms();
    if (window(stats.token_ms, now_ms) >= static_cast<size_t>(options_.token_rate_limit_per_second)) {
      res.status = 429;
      res.set_header("Retry-After", "1");
      res.set_content(R"({"error":"too_many_requests"})", kJson);
      return;
    }
    stats.token_ms.push_back(now_ms);
    ++stats.token_requests;
  }
  const Ticks now = dataset_.now();
  const Ticks expires = now + options_.token_ttl_seconds * kTicksPerSecond;
  std::string token;
  {
    std::lock_guard lock(mutex_);
    ++token_counter_;
    // A JWT's shape (header.claims.signature) with the tenant claim; the signature is a checksum.
    const std::string header = base64url(R"({"alg":"RS256","typ":"at+jwt"})");
    const std::string claims = base64url(fmt::format(
        R"({{"tenant":"{}","client_id":"{}","exp":{},"jti":"{}"}})", *tenant, client_id,
        expires / kTicksPerSecond, token_counter_));
    token = header + "." + claims + "." +
            base64url(fmt::format("{:016x}", checksum(header + claims + std::to_string(token_counter_))));
    tokens_[token] = TokenInfo{*tenant, expires};
  }
  res.set_content(fmt::format(R"({{"access_token":"{}","expires_in":{},"token_type":"Bearer","scope":"tn.acc.invoices:r tn.set.employees:r"}})",
                              token, options_.token_ttl_seconds),
                  kJson);
}

bool Server::authorize(const httplib::Request& req, httplib::Response& res, std::int64_t tenant) {
  std::string auth = req.get_header_value("Authorization");
  if (auth.size() > 7 && iequals(auth.substr(0, 7), "Bearer ")) auth = auth.substr(7);
  {
    std::lock_guard lock(mutex_);
    auto it = tokens_.find(auth);
    if (auth.empty() || it == tokens_.end() || it->second.expires <= dataset_.now() ||
        it->second.tenant != tenant) {
      res.status = 401;
      res.set_header("WWW-Authenticate", "Bearer error=\"invalid_token\"");
      res.set_content("", kJson);
      return false;
    }
  }
  if (req.get_header_value("ST-App-Key") != options_.app_key) {
    send_problem(res, 403, "Forbidden: the ST-App-Key header is missing or unknown");
    return false;
  }
  return true;
}

bool Server::throttle(httplib::Response& res, std::int64_t tenant) {
  std::lock_guard lock(mutex_);
  TenantStats& s = stats_[tenant];
  const std::int64_t now_ms = steady_ms();
  s.arrivals_ms.push_back(now_ms);
  s.max_per_second = std::max<std::int64_t>(s.max_per_second,
                                            static_cast<std::int64_t>(window(s.arrivals_ms, now_ms)));
  ++s.requests;
  if (window(s.accepted_ms, now_ms) >= static_cast<size_t>(options_.rate_limit_per_second)) {
    ++s.throttled;
    res.set_header("Retry-After", "1");
    res.status = 429;
    return true;
  }
  s.accepted_ms.push_back(now_ms);
  return false;
}

}  // namespace stsync::sandbox
