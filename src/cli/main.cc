// stsync: parses the command line, calls the library, maps the outcome to an exit code.
#include <CLI/CLI.hpp>
#include <malloc.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <fstream>

#include <sstream>

#include "config.h"
#include "connect.h"
#include "daemon.h"
#include "dictionary.h"
#include "errors.h"
#include "exit_status.h"
#include "job_reset.h"
#include "job_run.h"
#include "log.h"
#include "migrate.h"
#include "suggest.h"
#include "check.h"
#include "scheduler.h"
#include "quarantine_view.h"
#include "reports_view.h"
#include "status.h"
#include "timestamp.h"
#include "verify.h"
#include "stop.h"

using namespace stsync;

namespace {

int exit_for_error(const Error& e) { return exit_status_for(e.kind(), /*whole_command=*/true); }

Settings load(const std::optional<std::string>& config, const std::string& log_level) {
  std::vector<std::string> warnings;
  Settings s = load_settings(config, process_environment(), warnings);
  log::Level level;
  const std::string& wanted = log_level.empty() ? s.log_level : log_level;
  if (!log::parse_level(wanted, level))
    throw Error(ErrorKind::config, fmt::format("log level '{}' is not debug, info, warn or error", wanted));
  log::set_level(level);
  log::add_secret(s.app_key);
  for (const TenantConfig& t : s.tenants) log::add_secret(t.client_secret);
  if (const char* pw = std::getenv("PGPASSWORD")) log::add_secret(pw);
  // A password inside DATABASE_URL ("postgresql://user:secret@host/db").
  const size_t scheme = s.database_url.find("://");
  if (scheme != std::string::npos) {
    const size_t at = s.database_url.find('@', scheme);
    const size_t colon = s.database_url.find(':', scheme + 3);
    if (at != std::string::npos && colon < at) log::add_secret(s.database_url.substr(colon + 1, at - colon - 1));
  }
  // …or in the key=value form ("host=db password=secret").
  const size_t pw = s.database_url.find("password=");
  if (pw != std::string::npos) {
    const size_t start = pw + 9;
    log::add_secret(s.database_url.substr(start, s.database_url.find(' ', start) - start));
  }
  for (const std::string& w : warnings) log::warn("{}", w);
  return s;
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');)
    if (!part.empty()) out.push_back(part);
  return out;
}

}  // namespace

namespace {

// A job name the user typed that no job file defines: exit 2, with the nearest name.
void require_known_jobs(const std::vector<stsync::JobSpec>& known, const std::vector<std::string>& names,
                        const char* option) {
  using namespace stsync;
  for (const std::string& n : names)
    if (std::none_of(known.begin(), known.end(), [&](const JobSpec& j) { return j.name == n; }))
      throw Error(ErrorKind::config, fmt::format("{}: unknown job '{}'{} (`stsync jobs` lists them)", option, n,
                                                 did_you_mean(n, job_names(known))));
}

}  // namespace

int main(int argc, char** argv) {
  // Pages are buffers of megabytes, allocated on alternating threads. With glibc's defaults such
  // buffers end up in per-thread arenas below a threshold that grows with each one freed, and the
  // memory is kept rather than returned: a worker's footprint would creep with the page count.
  // Large buffers always as their own mappings (returned on free), and few arenas.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  mallopt(M_ARENA_MAX, 2);
  CLI::App app{"stsync: incremental, exact export of ServiceTitan data into PostgreSQL"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("stsync ") + STSYNC_VERSION);
  // Global options work after the subcommand too (`stsync run --log-level debug`).
  app.fallthrough();
  std::optional<std::string> config;
  std::string log_level;
  app.add_option("--config", config, "TOML config file (default: $STSYNC_CONFIG)");
  app.add_option("--log-level", log_level, "debug, info, warn or error (default: info, $STSYNC_LOG_LEVEL)");
  std::string log_format;
  app.add_option("--log-format", log_format, "text or json: one JSON object per line (default: text, $STSYNC_LOG_FORMAT)")
      ->check(CLI::IsMember({"text", "json"}));

  RunOptions run_options;
  std::string jobs, mode;
  std::int64_t tenant = 0;
  CLI::App* run = app.add_subcommand("run", "Sync every enabled job for every configured tenant");
  run->add_option("--jobs", jobs, "Comma-separated jobs (default: all enabled)");
  run->add_option("--tenant", tenant, "Only this tenant id");
  run->add_flag("--full-refresh", run_options.full_refresh,
                "Ignore saved watermarks for the selected jobs (rows are upserted, nothing dropped)");
  run->add_option("--mode", mode, "Override the jobs' mode for this run: export, list, created or full")
      ->check(CLI::IsMember({"export", "list", "created", "full"}));
  std::string metrics_file;
  run->add_option("--metrics-file", metrics_file,
                  "After the run, write Prometheus metrics (node_exporter textfile format) here, atomically");
  run->add_flag("--due", run_options.due, "Only the jobs whose cadence (`every`) has passed since their last success");
  run->add_flag("--reconcile", run_options.reconcile,
                "Sweep for hard deletes now (a complete listing; rows it no longer returns get deleted_at)");
  std::string run_since, run_until;
  run->add_option("--since", run_since,
                  "Backfill: read the --jobs again from this date (YYYY-MM-DD or a timestamp), merging through the "
                  "guard; the jobs' tokens and watermarks stay as they are");
  run->add_option("--until", run_until, "Backfill: up to this date (exclusive; list jobs only)");

  StatusOptions status_options;
  std::int64_t status_tenant = 0;
  CLI::App* status = app.add_subcommand(
      "status", "One line per tenant (jobs ok, failing, stale, not permitted, worst lag, last run); with --by-job or "
                "a filter, one line per job (rows, token, watermark, lag, last run, last error)");
  status->add_flag("--json", status_options.json, "Machine-readable output (the same view)");
  status->add_flag("--by-job", status_options.by_job, "One line per (tenant, job)");
  status->add_option("--tenant", status_tenant, "Only this tenant's jobs");
  status->add_option("--job", status_options.job, "Only this job");
  status->add_flag("--failed", status_options.failed, "Only jobs whose last error stands (no success since)");
  status->add_flag("--stale", status_options.stale, "Only jobs without a success within twice their cadence");
  std::string fail_if_stale;
  CLI::Option* fail_if_stale_option =
      status->add_option("--fail-if-stale", fail_if_stale,
                         "Exit 1 (listing them on stderr) if any job has not succeeded within DURATION (15m, 6h, 2d); "
                         "without a DURATION, within twice its own cadence (`every`)")
          ->expected(0, 1);
  DaemonOptions daemon_options;
  std::string daemon_max_run, daemon_jobs;
  CLI::App* daemon = app.add_subcommand(
      "daemon", "Run due jobs forever (most overdue tenants first, shared with any other stsync of the same "
                "config through PostgreSQL), serving /metrics and /healthz; stops cleanly on SIGTERM");
  daemon->add_option("--interval", daemon_options.interval_seconds, "Seconds between rounds of due jobs")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  daemon->add_option("--listen", daemon_options.listen, "host:port for /metrics and /healthz, or off")
      ->capture_default_str();
  daemon->add_option("--port-file", daemon_options.port_file, "Write the bound port here (with --listen host:0)");
  daemon->add_option("--max-run-time", daemon_max_run,
                     "A job stops after the page in flight once it has run this long (e.g. 30m); it resumes next round");
  daemon->add_option("--jobs", daemon_jobs, "Comma-separated jobs (default: all enabled)");
  std::string daemon_health_timeout;
  daemon->add_option("--health-timeout", daemon_health_timeout,
                     "/healthz answers 503 when no round started or ended for this long (e.g. 2h; default: "
                     "max(5m, 3 x interval) + 2 x --max-run-time, or + 1h)");
  std::string run_max_run;
  run->add_option("--max-run-time", run_max_run,
                  "A job stops after the page in flight once it has run this long (e.g. 30m); the next run resumes");
  CLI::App* migrate = app.add_subcommand("migrate", "Apply pending schema migrations");
  bool jobs_json = false;
  CLI::App* jobs_cmd = app.add_subcommand("jobs", "Every job: table, mode, key, endpoint, enabled, last result");
  jobs_cmd->add_flag("--json", jobs_json, "Machine-readable output");
  std::string verify_jobs;
  std::int64_t verify_tenant = 0;
  bool verify_json = false;
  CLI::App* verify_cmd = app.add_subcommand(
      "verify", "Compare each table's live rows with ServiceTitan's count (one request per job); exit 1 on a difference");
  verify_cmd->add_option("--jobs", verify_jobs, "Comma-separated job names (default: every job the tenant runs)");
  verify_cmd->add_option("--tenant", verify_tenant, "Only this tenant");
  verify_cmd->add_flag("--json", verify_json, "Machine-readable output");
  std::string reports_category;
  std::int64_t reports_tenant = 0, describe_id = 0;
  bool reports_json = false;
  CLI::App* reports_cmd = app.add_subcommand(
      "reports", "List the report categories and reports of a tenant (ServiceTitan's Reporting API)");
  reports_cmd->add_option("--tenant", reports_tenant, "This tenant (default: the first configured)");
  reports_cmd->add_option("--category", reports_category, "Only this category");
  reports_cmd->add_flag("--json", reports_json, "Machine-readable output");
  CLI::App* describe_cmd = reports_cmd->add_subcommand("describe", "A report's parameters and fields");
  std::string describe_category;
  describe_cmd->add_option("category", describe_category, "The report's category (its id)")->required();
  describe_cmd->add_option("report", describe_id, "The report's id")->required();
  describe_cmd->add_option("--tenant", reports_tenant, "This tenant (default: the first configured)");
  describe_cmd->add_flag("--json", reports_json, "Machine-readable output");
  std::string reset_jobs;
  std::int64_t reset_tenant = 0;
  bool reset_yes = false;
  CLI::App* reset_cmd = app.add_subcommand(
      "reset", "Forget jobs' tokens and watermarks (rows kept): their next run reads everything again");
  reset_cmd->add_option("--jobs", reset_jobs, "Comma-separated job names")->required();
  reset_cmd->add_option("--tenant", reset_tenant, "Only this tenant (default: every tenant)");
  reset_cmd->add_flag("--yes", reset_yes, "Do it (without: say what would be reset, exit 2)");
  std::string docs_out, dbt_out;
  CLI::App* docs_cmd = app.add_subcommand("docs", "Write a data dictionary (markdown) of the enabled jobs' tables");
  docs_cmd->add_option("--out", docs_out, "File to write (default: standard output)");
  CLI::App* dbt_cmd = app.add_subcommand("dbt", "Write a dbt sources.yml for the enabled jobs' tables");
  dbt_cmd->add_option("--out", dbt_out, "File to write (default: standard output)");
  CLI::App* check = app.add_subcommand(
      "check", "Connect to PostgreSQL, then per tenant authenticate with ServiceTitan and probe each of its jobs' "
               "endpoints (one small request: is the scope granted?); prints the failures and a summary; writes "
               "nothing");
  CheckOptions check_options;
  std::int64_t check_tenant = 0;
  check->add_flag("--verbose,-v", check_options.verbose, "Every probe's line, not only the failures");
  check->add_option("--tenant", check_tenant, "Only this tenant id");
  QuarantineFilter qfilter;
  std::string qjob;
  std::int64_t qtenant = 0;
  bool qretry = false, qjson = false;
  CLI::App* quarantine = app.add_subcommand(
      "quarantine", "List the records a job could not store; --retry stores them after a job-file fix");
  quarantine->add_option("--job", qjob, "Only this job");
  quarantine->add_option("--tenant", qtenant, "Only this tenant id");
  quarantine->add_flag("--retry", qretry,
                       "Parse and merge every listed record again with the current job files (the guard keeps "
                       "newer rows); stored ones leave the list, refused ones keep their new error");
  quarantine->add_flag("--json", qjson, "Machine-readable output");
  bool qdiscard = false, qall = false, qyes = false;
  quarantine->add_option("--id", qfilter.ids, "Only these quarantine ids (QID; repeatable)");
  quarantine->add_flag("--discard", qdiscard,
                       "Delete the selected records from the quarantine (select with --id, --job, --tenant or --all; "
                       "confirm with --yes)");
  quarantine->add_flag("--all", qall, "With --discard: every record in quarantine");
  quarantine->add_flag("--yes", qyes, "Confirm --discard");

  // A mistyped command: name the nearest one (CLI11 would only say that one is required).
  {
    std::vector<std::string> commands;
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
      commands.push_back(sub->get_name());
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i];
      if (arg == "--config" || arg == "--log-level" || arg == "--log-format") {
        ++i;  // its value
        continue;
      }
      if (arg.empty() || arg[0] == '-') continue;
      if (std::find(commands.begin(), commands.end(), arg) == commands.end()) {
        fmt::print(stderr, "stsync: unknown command '{}'{} (stsync --help lists the commands)\n", arg,
                   did_you_mean(arg, commands));
        return kExitUsage;
      }
      break;  // the first word is the command; the rest is its own
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitSuccess : kExitUsage;
  }

  install_stop_handlers();
  if (log_format.empty())
    if (const char* v = std::getenv("STSYNC_LOG_FORMAT")) log_format = v;
  if (!log_format.empty() && log_format != "text" && log_format != "json") {
    fmt::print(stderr, "--log-format / STSYNC_LOG_FORMAT must be text or json, not '{}'\n", log_format);
    return kExitUsage;
  }
  log::set_json(log_format == "json");
  try {
    Settings settings = load(config, log_level);
    if (run->parsed()) {
      run_options.jobs = split_commas(jobs);
      if (tenant != 0) run_options.tenant = tenant;
      if (!mode.empty()) {
        SyncMode m;
        parse_mode(mode, m);
        run_options.mode = m;
      }
      if (!run_since.empty() || !run_until.empty()) {
        // A backfill: a bounded window of named jobs, refused where the endpoint cannot filter.
        if (run_since.empty()) throw Error(ErrorKind::config, "--until needs --since (a backfill window)");
        if (run_options.jobs.empty())
          throw Error(ErrorKind::config, "--since: name the jobs to backfill (--jobs a,b)");
        if (run_options.full_refresh) throw Error(ErrorKind::config, "--since and --full-refresh do not go together");
        run_options.since = parse_timestamp(run_since);
        if (!run_options.since)
          throw Error(ErrorKind::config, fmt::format("--since '{}' is not a date (YYYY-MM-DD) or a timestamp", run_since));
        if (!run_until.empty()) {
          run_options.until = parse_timestamp(run_until);
          if (!run_options.until || *run_options.until <= *run_options.since)
            throw Error(ErrorKind::config, fmt::format("--until '{}' is not a date after --since", run_until));
        }
        const std::vector<JobSpec> known = resolve_jobs(settings);
        require_known_jobs(known, run_options.jobs, "run --jobs");
        for (const JobSpec& spec : known)
          if (std::find(run_options.jobs.begin(), run_options.jobs.end(), spec.name) != run_options.jobs.end())
            if (const std::string why = why_no_backfill(spec, run_options.mode.value_or(spec.mode),
                                                        run_options.until.has_value());
                !why.empty())
              throw Error(ErrorKind::config, fmt::format("job {} cannot be backfilled: {}", spec.name, why));
      }
      if (!run_max_run.empty()) {
        const auto d = parse_duration(run_max_run);
        if (!d || *d <= 0) throw Error(ErrorKind::config, fmt::format("--max-run-time '{}' is not a duration", run_max_run));
        run_options.max_run_seconds = *d;
      }
      const double started = real_clock().monotonic();
      RunSummary summary = run_jobs(settings, run_options, real_clock());
      log_run_finished(summary, real_clock().monotonic() - started, run_options.due);
      if (!metrics_file.empty()) {
        try {
          write_metrics_file(settings, metrics_file);
        } catch (const Error& e) {
          log::error("{}", e.what());
          if (summary.exit_code == kExitSuccess) summary.exit_code = kExitJobFailed;
        }
      }
      return summary.exit_code;
    }
    if (status->parsed()) {
      if (status_tenant != 0) status_options.tenant = status_tenant;
      fmt::print("{}", render_status(settings, status_options));
      if (fail_if_stale_option->count() > 0) {
        // No duration: each job against its own cadence (a 6-hourly job is not stale after 2 h).
        std::optional<int> max_age = 0;
        if (!fail_if_stale.empty()) max_age = parse_duration(fail_if_stale);
        if (!max_age || (*max_age <= 0 && !fail_if_stale.empty()))
          throw Error(ErrorKind::config, fmt::format("--fail-if-stale '{}' is not a duration such as 15m, 6h or 2d",
                                                     fail_if_stale));
        const std::vector<std::string> stale = stale_jobs(settings, *max_age);
        for (const std::string& line : stale) log::error("stale: {}", line);
        if (!stale.empty()) return kExitJobFailed;
      }
      return kExitSuccess;
    }
    if (daemon->parsed()) {
      if (!daemon_max_run.empty()) {
        const auto d = parse_duration(daemon_max_run);
        if (!d || *d <= 0)
          throw Error(ErrorKind::config, fmt::format("--max-run-time '{}' is not a duration", daemon_max_run));
        daemon_options.run.max_run_seconds = *d;
      }
      if (!daemon_health_timeout.empty()) {
        const auto d = parse_duration(daemon_health_timeout);
        if (!d || *d <= 0)
          throw Error(ErrorKind::config, fmt::format("--health-timeout '{}' is not a duration", daemon_health_timeout));
        daemon_options.health_timeout_seconds = *d;
      }
      daemon_options.run.jobs = split_commas(daemon_jobs);
      return run_daemon(settings, daemon_options);
    }
    if (reports_cmd->parsed()) {
      const std::optional<std::int64_t> t = reports_tenant != 0 ? std::optional<std::int64_t>(reports_tenant) : std::nullopt;
      fmt::print("{}", describe_cmd->parsed()
                           ? render_report_description(settings, t, describe_category, describe_id, reports_json)
                           : render_report_catalogue(settings, t, reports_category, reports_json));
      return kExitSuccess;
    }
    if (verify_cmd->parsed()) {
      VerifyOptions options;
      options.jobs = split_commas(verify_jobs);
      require_known_jobs(resolve_jobs(settings), options.jobs, "verify --jobs");
      if (verify_tenant != 0) options.tenant = verify_tenant;
      int rc = kExitSuccess;
      fmt::print("{}", render_verify(verify_counts(settings, options), verify_json, rc));
      return rc;
    }
    if (reset_cmd->parsed()) {
      const std::vector<std::string> names = split_commas(reset_jobs);
      require_known_jobs(resolve_jobs(settings), names, "reset --jobs");
      PgConnection db(settings.database_url, session_options(settings));
      apply_migrations(db, settings.schema);
      const ResetResult r = reset_job_states(db, settings.schema, names,
                                             reset_tenant != 0 ? std::optional<std::int64_t>(reset_tenant) : std::nullopt,
                                             reset_yes);
      for (const std::string& b : r.busy)
        fmt::print(stderr, "reset: job {}: a run holds its lock; left as it is (reset it when the run is over)\n", b);
      if (!reset_yes) {
        fmt::print(stderr, "reset: {} job state(s) would be reset{}{}; add --yes to reset them\n", r.reset.size(),
                   r.reset.empty() ? "" : ": ", fmt::format("{}", fmt::join(r.reset, ", ")));
        return kExitUsage;
      }
      fmt::print("{} job state(s) reset{}{}: their next run reads everything again (rows are kept)\n", r.reset.size(),
                 r.reset.empty() ? "" : ": ", fmt::format("{}", fmt::join(r.reset, ", ")));
      return r.busy.empty() ? kExitSuccess : kExitJobFailed;
    }
    if (docs_cmd->parsed() || dbt_cmd->parsed()) {
      const std::vector<JobSpec> specs = resolve_jobs(settings);
      const std::string text = docs_cmd->parsed() ? render_data_dictionary(specs, settings.schema)
                                                  : render_dbt_sources(specs, settings.schema);
      const std::string& out = docs_cmd->parsed() ? docs_out : dbt_out;
      if (out.empty()) {
        fmt::print("{}", text);
      } else {
        std::ofstream file(out);
        file << text;
        if (!file.flush()) throw Error(ErrorKind::config, fmt::format("cannot write {}", out));
      }
      return kExitSuccess;
    }
    if (jobs_cmd->parsed()) {
      fmt::print("{}", render_jobs(settings, jobs_json));
      return kExitSuccess;
    }
    if (migrate->parsed()) {
      PgConnection db(settings.database_url, session_options(settings));
      const int n = apply_migrations(db, settings.schema);
      std::vector<JobSpec> specs = resolve_jobs(settings);
      std::erase_if(specs, [](const JobSpec& j) { return !j.enabled; });
      const auto unprepared = ensure_job_tables(db, settings.schema, specs);
      if (!unprepared.empty()) throw Error(ErrorKind::db_fault, unprepared.begin()->second);
      fmt::print("{} migration(s) applied to schema {}\n", n, settings.schema);
      return kExitSuccess;
    }
    if (quarantine->parsed()) {
      if (!qjob.empty()) {
        require_known_jobs(resolve_jobs(settings), {qjob}, "quarantine --job");
        qfilter.job = qjob;
      }
      if (qtenant != 0) qfilter.tenant = qtenant;
      if (qdiscard) {
        if (qretry) throw Error(ErrorKind::config, "quarantine: --discard and --retry do not go together");
        if (qfilter.ids.empty() && !qfilter.job && !qfilter.tenant && !qall)
          throw Error(ErrorKind::config, "quarantine --discard: say which records: --id QID, --job NAME, --tenant ID "
                                         "or --all");
        const int n = discard_quarantine(settings, qfilter, qyes);
        if (!qyes) {
          fmt::print(stderr, "quarantine --discard: {} record(s) would be deleted; add --yes to delete them\n", n);
          return kExitUsage;
        }
        fmt::print("{} record(s) discarded\n", n);
        return kExitSuccess;
      }
      if (!qretry) {
        fmt::print("{}", render_quarantine(settings, qfilter, qjson));
        return kExitSuccess;
      }
      const QuarantineRetry r = retry_quarantine(settings, qfilter);
      fmt::print("{} stored, {} still refused, {} skipped, {} dropped (their row is already this version or newer)\n",
                 r.stored, r.refused, r.skipped, r.superseded);
      return r.refused > 0 || r.skipped > 0 ? kExitJobFailed : kExitSuccess;
    }
    if (check->parsed()) {
      int rc = 0;
      if (check_tenant != 0) check_options.tenant = check_tenant;
      for (const std::string& line : check_connectivity(settings, check_options, rc)) fmt::print("{}\n", line);
      return rc;
    }
  } catch (const Error& e) {
    log::error("{}", e.what());
    return exit_for_error(e);
  } catch (const std::exception& e) {
    log::error("unexpected: {}", e.what());
    return kExitJobFailed;
  }
  return kExitUsage;
}
