// stsync-sandbox: parses the command line, serves until SIGINT/SIGTERM.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <fmt/format.h>
#include <fstream>

#include "sandbox/server.h"

using namespace stsync;
using namespace stsync::sandbox;

int main(int argc, char** argv) {
  CLI::App app{"stsync-sandbox: a local ServiceTitan API for tests, demos and benchmarks"};
  std::string host = "127.0.0.1";
  int port = 8400;
  std::string port_file, clock_start, fault_kinds;
  std::vector<std::int64_t> tenants;
  int invoices = 2000, employees = 300, rows = 25;
  bool flowing_clock = false;
  ServerOptions o;
  app.add_option("--host", host, "Address to listen on")->capture_default_str();
  app.add_option("--port", port, "Port (0 = any free port)")->capture_default_str();
  app.add_option("--port-file", port_file, "Write the bound port to this file once listening");
  app.add_option("--tenant", tenants, "Tenant id (repeatable; default 1001 and 9007199254740993)");
  app.add_option("--invoices", invoices, "Invoices per tenant")->capture_default_str();
  app.add_option("--employees", employees, "Employees per tenant")->capture_default_str();
  app.add_option("--rows", rows, "Rows per tenant of every other catalogued resource")->capture_default_str();
  app.add_option("--seed", o.data.seed, "Data seed")->capture_default_str();
  app.add_option("--clock-start", clock_start, "Sandbox time at start (RFC 3339; default: the real time)");
  app.add_flag("--flowing-clock", flowing_clock, "Let sandbox time flow with real time (default: frozen, moved by /_sandbox/clock)");
  app.add_option("--app-key", o.app_key, "The ST-App-Key clients must send")->capture_default_str();
  app.add_option("--token-ttl", o.token_ttl_seconds, "Access token lifetime, seconds")->capture_default_str();
  app.add_option("--rate-limit", o.rate_limit_per_second, "Requests per second per tenant before 429")->capture_default_str();
  app.add_option("--export-batch", o.export_batch, "Rows per export page")->capture_default_str();
  app.add_option("--visibility-delay", o.visibility_delay_seconds, "Export visibility delay, seconds")->capture_default_str();
  app.add_option("--latency-ms", o.latency_ms, "Every resource call answers after this long")->capture_default_str();
  app.add_option("--churn", o.churn_per_request, "Changes applied to a resource before each page of it")->capture_default_str();
  app.add_option("--fault-rate", o.faults.rate, "Probability of a fault per resource call")->capture_default_str();
  app.add_option("--fault-kinds", fault_kinds, "Comma-separated fault kinds (default: all)");
  app.add_option("--fault-seed", o.faults.seed, "Fault seed")->capture_default_str();
  app.add_option("--slow-ms", o.faults.slow_ms, "Delay of the 'slow' fault, ms")->capture_default_str();
  app.add_option("--tls-cert", o.tls_cert_file, "PEM certificate: serve HTTPS");
  app.add_option("--tls-key", o.tls_key_file, "PEM private key for --tls-cert");
  CLI11_PARSE(app, argc, argv);

  if (tenants.empty()) tenants = {1001, 9007199254740993LL};
  for (std::int64_t t : tenants) {
    TenantSetup setup{t, {{"invoices", invoices}, {"employees", employees}}};
    for (const CatalogueResource& r : catalogue())
      if (!setup.counts.count(r.name)) setup.counts[r.name] = rows;
    o.data.tenants.push_back(std::move(setup));
  }
  if (!clock_start.empty()) {
    auto t = parse_timestamp(clock_start);
    if (!t) {
      fmt::print(stderr, "stsync-sandbox: --clock-start '{}' is not an RFC 3339 time\n", clock_start);
      return 2;
    }
    o.data.clock_start = *t;
  }
  o.data.clock_frozen = !flowing_clock;
  for (size_t start = 0; start < fault_kinds.size();) {
    size_t comma = fault_kinds.find(',', start);
    if (comma == std::string::npos) comma = fault_kinds.size();
    auto kind = parse_fault(fault_kinds.substr(start, comma - start));
    if (!kind) {
      fmt::print(stderr, "stsync-sandbox: unknown fault kind '{}'\n", fault_kinds.substr(start, comma - start));
      return 2;
    }
    o.faults.kinds.push_back(*kind);
    start = comma + 1;
  }

  // Signals are taken synchronously by this thread; the server's threads never see them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  try {
    Server server(o);
    const int bound = server.start(host, port);
    const char* scheme = o.tls_cert_file.empty() ? "http" : "https";
    fmt::print("stsync-sandbox listening on {}://{}:{} (app key: {})\n", scheme, host, bound, o.app_key);
    for (std::int64_t t : tenants)
      fmt::print("  tenant {}: client id {}, client secret {}\n", t, sandbox_client_id(t),
                 sandbox_client_secret(t));
    std::fflush(stdout);
    if (!port_file.empty()) {
      std::ofstream(port_file + ".tmp") << bound << "\n";
      std::rename((port_file + ".tmp").c_str(), port_file.c_str());
    }
    int sig = 0;
    sigwait(&signals, &sig);
    server.stop();
  } catch (const std::exception& e) {
    fmt::print(stderr, "stsync-sandbox: {}\n", e.what());
    return 1;
  }
  return 0;
}
