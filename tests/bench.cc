// Benchmarks (not part of CTest; run with tests/bench.sh). Printed figures only: throughput of
// the sandbox, of the page parser, and of a whole stsync run, and stsync's peak memory at two
// data sizes measured side by side in one run (one page in memory: it should not grow).
#define CATCH_CONFIG_MAIN  // the support helpers report through Catch
#include <sys/resource.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <fmt/format.h>

#include "http.h"
#include "page_parser.h"
#include "support.h"

using namespace stsync;
using namespace stsync::test;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string token_for(CurlTransport& http, const std::string& url) {
  HttpRequest req;
  req.method = "POST";
  req.url = url + "/connect/token";
  req.headers = {"Content-Type: application/x-www-form-urlencoded"};
  req.body = fmt::format("grant_type=client_credentials&client_id={}&client_secret={}",
                         sandbox::sandbox_client_id(kTenantA), sandbox::sandbox_client_secret(kTenantA));
  HttpResponse r = http.perform(req);
  const size_t a = r.body.find("\"access_token\":\"") + 16;
  return r.body.substr(a, r.body.find('"', a) - a);
}

struct Walk {
  long records = 0;
  long bytes = 0;       // JSON, decoded
  long long wire = 0;   // as received
  double seconds = 0;
};

// Walks the whole export feed with one client thread; only the token is read from each page.
Walk walk_feed(TestSandbox& sandbox, bool gzip) {
  CurlOptions curl;
  curl.compressed = gzip;
  CurlTransport http(curl);
  const std::string token = token_for(http, sandbox.url());
  Walk w;
  std::string from;
  const auto t0 = Clock::now();
  for (;;) {
    HttpRequest req;
    req.url = sandbox.url() + fmt::format("/accounting/v2/tenant/{}/export/invoices", kTenantA) +
              (from.empty() ? "" : "?from=" + from);
    req.headers = {"ST-App-Key: sandbox-app-key", "Authorization: Bearer " + token};
    HttpResponse r = http.perform(req);
    w.bytes += static_cast<long>(r.body.size());
    w.wire += r.wire_bytes;
    // The envelope leads: {"hasMore":…,"continueFrom":"…","data":[…]}.
    if (r.body.compare(0, 15, "{\"hasMore\":true") != 0) break;
    const size_t a = r.body.find("\"continueFrom\":\"") + 16;
    from = r.body.substr(a, r.body.find('"', a) - a);
  }
  w.seconds = seconds_since(t0);
  w.records = 50000;  // the whole feed of the benchmark's tenant
  return w;
}

long run_stsync_peak_kb(TestSandbox& sandbox, double& seconds) {
  TestSchema schema;
  auto env = stsync_env(sandbox, schema, kTenantA);
  env["STSYNC_REQUESTS_PER_SECOND"] = "60";
  const auto t0 = Clock::now();
  Process p({STSYNC_BINARY, "run", "--jobs", "invoices"}, env);
  long peak_kb = 0;
  ProcessResult r = p.wait(&peak_kb);
  seconds = seconds_since(t0);
  if (r.exit_code != 0) fmt::print(stderr, "stsync failed:\n{}\n", r.err);
  return peak_kb;
}

sandbox::ServerOptions options(int invoices, int batch) {
  auto o = TestSandbox::default_options(invoices, 10);
  o.data.tenants.resize(1);
  o.rate_limit_per_second = 100000;
  o.export_batch = batch;
  return o;
}

}  // namespace

TEST_CASE("benchmarks", "[bench]") {
  fmt::print("stsync benchmarks (one machine, loopback; figures vary with the machine)\n\n");
  {
    TestSandbox sandbox(options(50000, 5000));
    Walk walks[2];
    for (bool gzip : {false, true}) {
      const Walk fetch = walk_feed(sandbox, gzip);
      walks[gzip] = fetch;
      fmt::print("sandbox export feed, 1 client, {:8}: {} records in {:.2f} s = {:>7.0f} records/s, {:.1f} MB/s of JSON\n",
                 gzip ? "gzip" : "identity", fetch.records, fetch.seconds, fetch.records / fetch.seconds,
                 fetch.bytes / fetch.seconds / 1e6);
    }
    fmt::print("gzip : identity = {:.2f}x the bytes on the wire, {:.2f}x the time on loopback\n",
               static_cast<double>(walks[1].wire) / static_cast<double>(walks[0].wire),
               walks[1].seconds / walks[0].seconds);
  }
  {
    // The parser alone, on one 5000-record page.
    TestSandbox sandbox(options(5000, 5000));
    CurlTransport http(CurlOptions{});
    const std::string token = token_for(http, sandbox.url());
    HttpRequest req;
    req.url = sandbox.url() + fmt::format("/accounting/v2/tenant/{}/export/invoices", kTenantA);
    req.headers = {"ST-App-Key: sandbox-app-key", "Authorization: Bearer " + token};
    HttpResponse r = http.perform(req);
    JobSpec spec = builtin_job("invoices");
    PageParser parser(spec);
    ParsedPage page;
    const auto t0 = Clock::now();
    int rounds = 0;
    while (seconds_since(t0) < 2.0) {
      parser.parse(r.body, kTenantA, page);
      ++rounds;
    }
    const double s = seconds_since(t0);
    fmt::print("page parser (invoices, 33 columns): {:>7.0f} records/s, {:.0f} MB/s of JSON\n",
               rounds * 5000.0 / s, rounds * static_cast<double>(r.body.size()) / s / 1e6);
  }
  double small_s = 0, large_s = 0;
  long small_kb = 0, large_kb = 0;
  {
    TestSandbox sandbox(options(5000, 1000));
    small_kb = run_stsync_peak_kb(sandbox, small_s);
  }
  {
    TestSandbox sandbox(options(50000, 1000));
    large_kb = run_stsync_peak_kb(sandbox, large_s);
  }
  fmt::print("stsync run, 5000 invoices:       {:.2f} s = {:>7.0f} records/s, peak RSS {} KiB\n", small_s,
             5000 / small_s, small_kb);
  fmt::print("stsync run, 50000 invoices:      {:.2f} s = {:>7.0f} records/s, peak RSS {} KiB\n", large_s,
             50000 / large_s, large_kb);
  fmt::print("memory ratio 50000 : 5000 invoices = {:.2f} (1.00 = memory does not grow with the data)\n",
             static_cast<double>(large_kb) / static_cast<double>(small_kb));
  CHECK(large_kb > 0);
}
