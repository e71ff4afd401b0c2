#include "daemon.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <fmt/format.h>
#include <fstream>
#include <mutex>
#include <thread>

#include "exit_status.h"
#include "log.h"
#include "scheduler.h"
#include "status.h"
#include "stop.h"

namespace stsync {

int run_daemon(const Settings& settings, const DaemonOptions& options) {
  // Heartbeat: the start of a round, each page committed, the end of a round. /healthz fails
  // when none of these happened for much longer than a page or a round should take.
  std::atomic<double> heartbeat{real_clock().monotonic()};
  std::atomic<std::int64_t> rounds{0};
  httplib::Server http;
  MetricsSource metrics(settings);  // the job files read once; a scrape is one query
  std::mutex metrics_mutex;
  std::thread server;
  if (!options.listen.empty() && options.listen != "off") {
    const size_t colon = options.listen.rfind(':');
    const std::string host = colon == std::string::npos ? "127.0.0.1" : options.listen.substr(0, colon);
    const int port = std::atoi(options.listen.substr(colon == std::string::npos ? 0 : colon + 1).c_str());
    http.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
      // One scrape at a time on the kept connection (cpp-httplib answers on a thread pool).
      std::lock_guard lock(metrics_mutex);
      try {
        res.set_content(metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
      } catch (const Error& e) {
        res.status = 503;
        res.set_content(log::redact(e.what()) + "\n", "text/plain");
      }
    });
    http.Get("/healthz", [&](const httplib::Request&, httplib::Response& res) {
      const double age = real_clock().monotonic() - heartbeat.load();
      const double limit = options.health_timeout_seconds > 0
                               ? options.health_timeout_seconds
                               : std::max(300.0, 3 * options.interval_seconds) +
                                     (options.run.max_run_seconds > 0 ? 2 * options.run.max_run_seconds : 3600);
      res.status = age <= limit ? 200 : 503;
      res.set_content(fmt::format("{{\"status\":\"{}\",\"rounds\":{},\"seconds_since_heartbeat\":{:.0f}}}\n",
                                  age <= limit ? "ok" : "stuck", rounds.load(), age),
                      "application/json");
    });
    const int bound = port == 0 ? http.bind_to_any_port(host) : (http.bind_to_port(host, port) ? port : -1);
    if (bound < 0) {
      log::error("daemon: cannot listen on {} (--listen host:port, or off)", options.listen);
      return kExitUsage;
    }
    if (!options.port_file.empty()) {
      std::ofstream(options.port_file + ".tmp") << bound << "\n";
      std::rename((options.port_file + ".tmp").c_str(), options.port_file.c_str());
    }
    log::info("daemon: /metrics and /healthz on http://{}:{}", host, bound);
    server = std::thread([&] { http.listen_after_bind(); });
  }
  RunOptions run = options.run;
  run.due = true;
  // Every committed page is a beat too: a first load of hours is progress, not a hang, and the
  // liveness probe must not restart the pod in the middle of it.
  run.on_page = [&](std::int64_t, const std::string&, std::int64_t, std::int64_t) {
    heartbeat = real_clock().monotonic();  // a page committed
  };
  int code = kExitSuccess;
  while (!stop_requested()) {
    heartbeat = real_clock().monotonic();
    try {
      // One round: every tenant this process can claim, its due jobs; the fleet shares them.
      RunSummary summary = run_jobs(settings, run, real_clock());
      if (!summary.results.empty())
        log::info("daemon: round {} ran {} job(s)", rounds.load() + 1, summary.results.size());
    } catch (const Error& e) {
      // Configuration or the database: log, and try again next round (the database may be back).
      log::error("daemon: {}", e.what());
      if (e.kind() == ErrorKind::config) {
        code = kExitUsage;
        break;
      }
    }
    ++rounds;
    heartbeat = real_clock().monotonic();
    real_clock().sleep(options.interval_seconds);  // ends early on a stop request
  }
  if (stop_requested()) log::info("daemon: stopped by {}", stop_signal_name());
  if (server.joinable()) {
    http.stop();
    server.join();
  }
  return code;
}

}  // namespace stsync
