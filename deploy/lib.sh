# Shared shell functions of deploy/quickstart.sh and tests/run.sh. Source it; do not run it.
# Everything stays inside the checkout (.stsync-local/), nothing is installed system-wide but
# Debian packages.

STSYNC_PACKAGES=(build-essential cmake pkg-config libcurl4-openssl-dev libsimdjson-dev libpq-dev
                 libfmt-dev catch2 libcpp-httplib-dev libcli11-dev libtomlplusplus-dev zlib1g-dev
                 libssl-dev postgresql postgresql-client openssl ca-certificates)
# Only the tests need these: systemd-analyze checks the shipped units.
STSYNC_TEST_PACKAGES=(systemd)

stsync_log() { printf '[stsync] %s\n' "$*" >&2; }

# Installs the Debian packages that are missing (apt-get; as root, or through sudo).
# stsync_install_deps [more packages…]
stsync_install_deps() {
  local missing=()
  for p in "${STSYNC_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  stsync_log "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# stsync_build DIR [cmake options…] [-- build options…]   e.g. -- --target stsync
stsync_build() {
  local dir=$1; shift
  local configure=() build=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do configure+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  build=("$@")
  cmake -S "$STSYNC_ROOT" -B "$dir" "${configure[@]}" >/dev/null
  cmake --build "$dir" -j"$(nproc)" "${build[@]}"
}

stsync_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# Runs a PostgreSQL server program as the postgres user when we are root (initdb refuses root).
stsync_pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stsync_port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Ports: choose them below the kernel's ephemeral range (32768 and up), where loopback clients
# and servers on port 0 would otherwise take them at random.
# stsync_pg_start DATA_DIR PORT: a private cluster (trust auth on 127.0.0.1 only, superuser
# "stsync", database "stsync"), created on first use. Sets STSYNC_PG_PORT.
stsync_pg_start() {
  local data=$1 port=$2 bin
  bin=$(stsync_pg_bin)
  [ -n "$bin" ] || { stsync_log "PostgreSQL server binaries not found"; return 1; }
  mkdir -p "$(dirname "$data")"
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$data"
    chmod 700 "$data"
    stsync_pg_as_owner "$bin/initdb" -D "$data" --username=stsync --auth=trust --encoding=UTF8 \
      --locale=C.UTF-8 >/dev/null
  fi
  if stsync_pg_as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    STSYNC_PG_PORT=$(sed -n 4p "$data/postmaster.pid" | tr -d ' ')
  else
    # Another program may take a free-looking port before the server binds it: try the next.
    local tries=0
    while :; do
      while ! stsync_port_free "$port"; do port=$((port + 1)); done
      if stsync_pg_as_owner "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
        -o "-p $port -c listen_addresses=127.0.0.1 -k $data -c max_connections=200 -c fsync=${STSYNC_PG_FSYNC:-on}" start >/dev/null; then
        break
      fi
      tries=$((tries + 1))
      [ "$tries" -lt 5 ] || { tail -n 20 "$data/server.log" >&2; return 1; }
      port=$((port + 1))
    done
    STSYNC_PG_PORT=$port
  fi
  "$bin/psql" -h 127.0.0.1 -p "$STSYNC_PG_PORT" -U stsync -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'stsync'" | grep -q 1 ||
    "$bin/createdb" -h 127.0.0.1 -p "$STSYNC_PG_PORT" -U stsync stsync
  export STSYNC_PG_PORT
}

stsync_pg_stop() {
  local data=$1 bin
  bin=$(stsync_pg_bin)
  [ -f "$data/postmaster.pid" ] && stsync_pg_as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
}
