#!/usr/bin/env bash
# A throwaway PostgreSQL server for the registry tests (tests/test_track_postgres.py).
#
#   eval "$(.ci/postgres.sh start)"    # prints export lines: PGOLF_TEST_POSTGRES_URL, PGOLF_TEST_POSTGRES_DIR
#   .ci/postgres.sh stop DIR           # stops the server and removes DIR
#
# Installs the server with apt-get when no initdb is found, initialises a cluster in a temp directory
# (as the `postgres` user, or `nobody`, when run as root: initdb refuses root), starts it on a free
# localhost port with its socket in that directory, and creates the database `pgolf_test`.
# Everything it prints on stdout is shell to eval; progress goes to stderr.
set -euo pipefail

find_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
}

as_user() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$PGUSER_OS" -- "$@"; else "$@"; fi
}

start() {
  local bin
  bin=$(find_bin)
  if [ -z "$bin" ]; then
    echo "ci: installing postgresql (apt-get)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bin=$(find_bin)
  fi
  [ -n "$bin" ] || { echo "ci: no PostgreSQL initdb found or installable" >&2; exit 1; }
  PGUSER_OS=postgres
  id -u "$PGUSER_OS" >/dev/null 2>&1 || PGUSER_OS=nobody
  local dir port
  dir=$(mktemp -d /tmp/pgolf-pg.XXXXXX)
  chmod 755 "$dir"
  [ "$(id -u)" -ne 0 ] || chown "$PGUSER_OS" "$dir"
  as_user "$bin/initdb" -D "$dir/data" -U pgolf --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100" start >&2 \
    || { cat "$dir/server.log" >&2; exit 1; }
  "$bin/createdb" -h 127.0.0.1 -p "$port" -U pgolf pgolf_test >&2
  echo "ci: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)" >&2
  echo "export PGOLF_TEST_POSTGRES_URL=postgresql+psycopg://pgolf@127.0.0.1:$port/pgolf_test"
  echo "export PGOLF_TEST_POSTGRES_DIR=$dir"
}

stop() {
  local dir=${1:-${PGOLF_TEST_POSTGRES_DIR:-}} bin
  [ -n "$dir" ] && [ -d "$dir/data" ] || return 0
  bin=$(find_bin)
  PGUSER_OS=$(stat -c %U "$dir/data")
  as_user "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
  rm -rf "$dir"
}

case "${1:-start}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
