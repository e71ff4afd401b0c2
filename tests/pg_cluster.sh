#!/usr/bin/env bash
# A second, private PostgreSQL cluster for the fault tests that restart the database (the shared
# test cluster must stay up for the tests running beside them).
#   tests/pg_cluster.sh start DIR PORT   → prints the port it listens on
#   tests/pg_cluster.sh restart DIR | stop DIR | halt DIR (stopped, data kept: start it again)
set -euo pipefail
STSYNC_ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$STSYNC_ROOT/deploy/lib.sh"
case "$1" in
  start) STSYNC_PG_FSYNC=off stsync_pg_start "$2" "$3" >&2; echo "$STSYNC_PG_PORT" ;;
  restart) stsync_pg_as_owner "$(stsync_pg_bin)/pg_ctl" -D "$2" -m fast -w restart >/dev/null ;;
  stop) stsync_pg_stop "$2"; rm -rf "$2" ;;
  halt) stsync_pg_as_owner "$(stsync_pg_bin)/pg_ctl" -D "$2" -m immediate -w stop >/dev/null ;;
esac
