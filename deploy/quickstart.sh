#!/usr/bin/env bash
# Quick start: build stsync, start a private PostgreSQL and the ServiceTitan sandbox inside the
# checkout (.stsync-local/), sync every resource of two sandbox tenants, and print the status
# table.
#   deploy/quickstart.sh         run (again: the second sync is incremental)
#   deploy/quickstart.sh stop    stop the sandbox and PostgreSQL
set -euo pipefail
STSYNC_ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$STSYNC_ROOT/deploy/lib.sh"
local_dir="$STSYNC_ROOT/.stsync-local"
pg_data="$local_dir/pg"
sandbox_pid="$local_dir/sandbox.pid"
sandbox_port_file="$local_dir/sandbox.port"

stop_sandbox() {
  if [ -f "$sandbox_pid" ] && kill -0 "$(cat "$sandbox_pid")" 2>/dev/null; then
    kill "$(cat "$sandbox_pid")"
  fi
  rm -f "$sandbox_pid" "$sandbox_port_file"
}

if [ "${1:-}" = "stop" ]; then
  stop_sandbox
  stsync_pg_stop "$pg_data"
  stsync_log "stopped the sandbox and PostgreSQL (data kept in $local_dir; delete it to start over)"
  exit 0
fi

stsync_install_deps
# Only what this script runs: stsync and the sandbox (the tests and benchmarks are tests/run.sh's).
stsync_build "$STSYNC_ROOT/build" -DCMAKE_BUILD_TYPE=Release -- --target stsync stsync-sandbox
mkdir -p "$local_dir"
stsync_pg_start "$pg_data" 25433

# A sandbox left running by an older build is replaced (its data comes again from the seed, dated
# from its clock, which starts at the real time: the next run merges the new versions).
if [ -f "$sandbox_pid" ] && [ "$STSYNC_ROOT/build/stsync-sandbox" -nt "$sandbox_pid" ]; then stop_sandbox; fi
if ! { [ -f "$sandbox_pid" ] && kill -0 "$(cat "$sandbox_pid")" 2>/dev/null; }; then
  port=8400
  while ! stsync_port_free "$port"; do port=$((port + 1)); done
  rm -f "$sandbox_port_file"
  nohup "$STSYNC_ROOT/build/stsync-sandbox" --port "$port" --port-file "$sandbox_port_file" \
    --invoices 5000 --employees 400 >"$local_dir/sandbox.log" 2>&1 &
  echo $! >"$sandbox_pid"
  for _ in $(seq 100); do [ -f "$sandbox_port_file" ] && break; sleep 0.1; done
  [ -f "$sandbox_port_file" ] || { cat "$local_dir/sandbox.log"; exit 1; }
fi
sandbox_url="http://127.0.0.1:$(cat "$sandbox_port_file")"

# The sandbox's documented demo credentials; a real config holds real ones (keep it chmod 600).
config="$local_dir/stsync.toml"
umask 077
cat >"$config" <<TOML
[servicetitan]
app_key = "sandbox-app-key"
auth_url = "$sandbox_url"
api_url = "$sandbox_url"
requests_per_second = 20
# The sandbox's clock is moved by hand below (advance_seconds), so its Date may run days ahead of
# this machine's; against the real API keep the default (300 s).
max_clock_skew_seconds = 2592000

[run]
parallel = 4

[database]
url = "host=127.0.0.1 port=$STSYNC_PG_PORT user=stsync dbname=stsync"
schema = "servicetitan"

[[tenants]]
id = 1001
client_id = "sandbox-client-1001"
client_secret = "sandbox-secret-1001"

[[tenants]]
id = 9007199254740993
client_id = "sandbox-client-9007199254740993"
client_secret = "sandbox-secret-9007199254740993"

# A report job (README, "Reports"): the sandbox's technician performance report, day by day from
# three days ago, for tenant 1001. The Reporting API allows 5 runs of a report a minute: a first
# run of a year would take 73 minutes, so the demo starts recently.
[[reports]]
name = "technician_performance"
category = "technician"
report_id = 2001
from_parameter = "From"
to_parameter = "To"
start_date = "$(date -u -d '3 days ago' +%F)"
lookback_days = 2
every = "6h"
tenants = [1001]
[reports.parameters]
IncludeInactive = true
TOML

stsync_log "syncing from the sandbox at $sandbox_url"
set +e
"$STSYNC_ROOT/build/stsync" --config "$config" run
rc=$?
set -e
echo
"$STSYNC_ROOT/build/stsync" --config "$config" status
cat <<TXT

stsync run exited with $rc.
Query the data:   psql "host=127.0.0.1 port=$STSYNC_PG_PORT user=stsync dbname=stsync" -c 'SELECT count(*) FROM servicetitan.invoices'
Every job:        build/stsync --config $config status --by-job    (or --failed, --stale, --tenant ID)
Job files:        build/stsync --config $config jobs
The report job:   psql "host=127.0.0.1 port=$STSYNC_PG_PORT user=stsync dbname=stsync" -c 'SELECT report_day, count(*), sum(revenue) FROM servicetitan.report_technician_performance GROUP BY 1 ORDER BY 1'
Reports to add:   build/stsync --config $config reports    (and: reports describe CATEGORY ID)
Run again:        build/stsync --config $config run     (incremental; or rerun this script)
Make changes:     curl -d '' '$sandbox_url/_sandbox/changes?tenant=1001&resource=invoices&n=50'
                  curl -d '' '$sandbox_url/_sandbox/clock?advance_seconds=960'
Stop everything:  deploy/quickstart.sh stop
TXT
exit $rc
