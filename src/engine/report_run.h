// One report job for one tenant: the Reporting API's report read day by day, from the job's
// start date (or where the last run got to, less the lookback) to today, each day's rows
// replacing the stored ones in one transaction with the job's state.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "config.h"
#include "job_run.h"
#include "report_store.h"
#include "reports.h"
#include "st_client.h"

namespace stsync {

/// The days a run reads: from max(start, complete_through − lookback) (start_date on a first or
/// full-refresh run) through `today`, as "YYYY-MM-DD".
std::vector<std::string> report_days(const ReportSpec& report, const std::optional<std::string>& complete_through,
                                     const std::string& today, bool full_refresh);

/// What a day that was read makes the state's complete_through: the day after it, but never past
/// the day before `today` (UTC): a day is read again until it is over in every time zone.
std::string complete_through_after(const std::string& day, const std::string& today);

/// The report's declared fields as stored in the state ("Name:Type;…"), and the changes between
/// two such lists, one line each ("field Tips (Number) added", "field Active removed", "field
/// Revenue changed from Number to String").
std::string fields_signature(const std::vector<ReportOutput>& fields);
std::vector<std::string> field_changes(const std::string& before, const std::string& now);

class ReportRun {
 public:
  ReportRun(const Settings& settings, const JobSpec& spec, TenantSession& session, HttpTransport& transport,
            ReportStore& store, Clock& clock, const RunOptions& options);
  /// Never throws for job failures: they are in the result (and logged once, here).
  JobResult run();

 private:
  /// Describes the report, logs what changed since the last run, and makes the table's columns
  /// fit its fields.
  void prepare_columns(ReportState& state);
  /// Reads every page of one day into `out` (the day's COPY rows).
  void read_day(const std::string& day, ReportDay& out);
  /// Commits a day, reconnecting (bounded) when the connection broke.
  void commit_day(const ReportDay& day, bool unchanged, const ReportState& state, std::int64_t run_id);
  /// The column of `field` (a field the description did not have becomes a text column).
  const ReportColumn& column_of(const std::string& field);
  std::string what(const std::string& day) const;
  RunCounters run_counters() const;

  const Settings& settings_;
  const JobSpec& spec_;
  const ReportSpec& report_;
  TenantSession& session_;
  ReportStore& store_;
  Clock& clock_;
  const RunOptions& options_;
  RetryBudget budget_;
  ServiceTitanClient client_;
  JobResult result_;
  std::vector<ReportColumn> fields_;           // the description's, then any the data added
  std::map<std::string, std::string> types_;  // column → its type in the table now
};

}  // namespace stsync
