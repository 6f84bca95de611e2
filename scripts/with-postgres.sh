#!/usr/bin/env bash
# with-postgres.sh CMD...: start a private PostgreSQL 15 (Debian's postgresql-15)
# on a temporary data directory and a free port, run CMD with
# MAMORI_TEST_POSTGRES set to its URL, and stop the server on exit.
#
# Where PostgreSQL is not installed, CMD runs without MAMORI_TEST_POSTGRES
# (the PostgreSQL tests then skip, or fail when MAMORI_REQUIRE_TOOLS is set).
#
# Environment:
#   PG_BIN        directory of initdb/pg_ctl (default: found via dpkg or PATH)
#   PG_KEEP=1     leave the data directory behind (its path is printed)
#   PG_SETTINGS   extra "-c name=value" options for the server (benchmarks)
set -euo pipefail

find_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  local p
  p=$(dpkg -L postgresql-15 2>/dev/null | grep '/bin/initdb$' | head -1 || true)
  [ -n "$p" ] || p=$(command -v initdb 2>/dev/null || true)
  [ -n "$p" ] && dirname "$p"
}

BIN=$(find_bin || true)
if [ -z "$BIN" ] || [ ! -x "$BIN/pg_ctl" ]; then
  echo "with-postgres: PostgreSQL 15 not found (apt-get install postgresql-15); running without it" >&2
  exec "$@"
fi

# initdb refuses to run as root: run the server as the postgres user then.
AS=()
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || { echo "with-postgres: no postgres user" >&2; exit 1; }
  AS=(runuser -u postgres --)
fi

DIR=$(mktemp -d /tmp/mamori-pg.XXXXXX)
chmod 755 "$DIR"
[ ${#AS[@]} -eq 0 ] || chown postgres "$DIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

stop() {
  "${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  if [ "${PG_KEEP:-}" = 1 ]; then echo "with-postgres: kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap stop EXIT

"${AS[@]}" "$BIN/initdb" -D "$DIR/data" -U mamori --auth=trust -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
  || { cat "$DIR/initdb.log" >&2; exit 1; }
# Tests open hundreds of short-lived schemas and connections in parallel;
# fsync off because a test cluster need not survive a power cut.
OPTS="-c listen_addresses=127.0.0.1 -c port=$PORT -k $DIR -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off ${PG_SETTINGS:-}"
"${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -o "$OPTS" -w -t 60 start >/dev/null \
  || { cat "$DIR/server.log" >&2; exit 1; }

export MAMORI_TEST_POSTGRES="postgres://mamori@127.0.0.1:$PORT/postgres?sslmode=disable"
echo "with-postgres: PostgreSQL on 127.0.0.1:$PORT (data $DIR/data)" >&2
set +e
"$@"
rc=$?
exit $rc
