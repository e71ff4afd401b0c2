// The database side of one (tenant, report job): its table (created and widened from the
// report's fields), its state row and run records, the days it stored (sync_report_days), and the
// transaction that replaces a day's rows together with the state.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "job_spec.h"
#include "job_storage.h"
#include "pg.h"
#include "table_shape.h"

namespace stsync {

struct ReportState {
  std::optional<std::string> complete_through;  // "YYYY-MM-DD": every day before it was read once it was over
  std::optional<std::string> fields;            // the report's fields as last stored ("Name:Type;…")
};

/// One day's rows, ready for COPY: the report columns they fill (in COPY order, after tenant_id,
/// report_day and position) and the rows' COPY text.
struct ReportDay {
  std::string day;  // "YYYY-MM-DD"
  std::vector<std::string> columns;
  std::string copy_rows;
  std::int64_t rows = 0;
  std::string digest;  // of columns and rows: a day read again with the same numbers is not rewritten
};

class ReportStore {
 public:
  ReportStore(PgConnection& db, const std::string& schema, const JobSpec& spec, std::int64_t tenant);

  /// The job's advisory lock (the same key as any job's); false when another run holds it.
  bool try_lock();
  void unlock() noexcept;
  ReportState load_state();
  std::int64_t begin_run();
  void finish_run(std::int64_t run_id, std::string_view outcome, const std::string& error, const RunCounters& counters);

  /// The report table's columns and their types (empty when the table does not exist).
  std::map<std::string, std::string> columns();
  /// Creates the table, or adds the columns it lacks, within lock_timeout (PgError(db_fault) when
  /// a reader holds the table longer: nothing changed).
  void ensure_table(const std::vector<ReportColumn>& fields);
  /// The column holds text from now on (its values kept, as text), within lock_timeout.
  void store_as_text(const std::string& column);

  /// The days of [first, last] stored for the tenant: day → digest.
  std::map<std::string, std::string> day_digests(const std::string& first, const std::string& last);
  /// One transaction: the day's rows replace the stored ones (unless `unchanged`: same digest, only
  /// its read time is written), the day's record, `state` and the run's counts. Returns the rows
  /// the day had before.
  std::int64_t store_day(const ReportDay& day, bool unchanged, const ReportState& state, std::int64_t run_id);

  bool connected() const { return db_.healthy(); }
  /// Re-opens the connection and takes the lock again (false: another run took it).
  bool reconnect();

 private:
  PgConnection& db_;
  const JobSpec& spec_;
  std::int64_t tenant_;
  std::string schema_, table_;  // quoted
  std::string schema_name_;
  AdvisoryLock lock_;
};

}  // namespace stsync
