#!/usr/bin/env bash
# The test command: installs what is missing, builds, starts a private PostgreSQL, runs every
# test through CTest (each test starts its own sandbox on a free loopback port), and stops the
# database again, also on failure or Ctrl-C.
#   tests/run.sh               Release build, every test
#   tests/run.sh --sanitize    the same with AddressSanitizer + UndefinedBehaviorSanitizer
#   tests/run.sh -R regex      extra arguments go to ctest
set -euo pipefail
STSYNC_ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$STSYNC_ROOT/deploy/lib.sh"

build_dir="$STSYNC_ROOT/build"
cmake_args=(-DCMAKE_BUILD_TYPE=Release)
if [ "${1:-}" = "--sanitize" ]; then
  shift
  build_dir="$STSYNC_ROOT/build-sanitize"
  cmake_args=(-DCMAKE_BUILD_TYPE=Debug -DSTSYNC_SANITIZE=ON)
  export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
fi

stsync_install_deps "${STSYNC_TEST_PACKAGES[@]}"
stsync_build "$build_dir" "${cmake_args[@]}"

pg_data="$STSYNC_ROOT/.stsync-local/test-pg-$$"
cleanup() {
  stsync_pg_stop "$pg_data"
  rm -rf "$pg_data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# The test cluster is thrown away: durability is not what these tests measure (the kill -9
# tests kill stsync, not PostgreSQL), so fsync stays off for speed.
STSYNC_PG_FSYNC=off stsync_pg_start "$pg_data" 25432
export STSYNC_TEST_DATABASE_URL="host=127.0.0.1 port=$STSYNC_PG_PORT user=stsync dbname=stsync"
export STSYNC_PG_DATA="$pg_data"

cd "$build_dir"
ctest --output-on-failure --timeout 600 -j2 "$@"
