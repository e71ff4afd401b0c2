#!/usr/bin/env bash
# Benchmarks: builds, starts a private PostgreSQL, runs build/stsync_bench, stops PostgreSQL.
set -euo pipefail
STSYNC_ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$STSYNC_ROOT/deploy/lib.sh"
stsync_install_deps
# The hand-written script the benchmark compares with uses Debian's python3 packages.
STSYNC_PACKAGES=(python3 python3-psycopg2 python3-requests)  # (an array: not as a command's prefix)
stsync_install_deps
stsync_build "$STSYNC_ROOT/build" -DCMAKE_BUILD_TYPE=Release
pg_data="$STSYNC_ROOT/.stsync-local/bench-pg-$$"
trap 'stsync_pg_stop "$pg_data"; rm -rf "$pg_data"' EXIT
stsync_pg_start "$pg_data" 25532
export STSYNC_TEST_DATABASE_URL="host=127.0.0.1 port=$STSYNC_PG_PORT user=stsync dbname=stsync"
"$STSYNC_ROOT/build/stsync_bench"
