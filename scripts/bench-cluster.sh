#!/usr/bin/env bash
# Scale-out benchmark (docs/benchmarks.md): AGENTS agents against SERVERS
# server processes sharing one PostgreSQL store on this machine, all bound
# to the same agent address (--reuse-port), fed by GENERATORS load
# generators. One process here may hold at most 20,000 open files, so
# 100,000 agents need at least 6 servers and 6 generators.
#
#   SERVERS=6 GENERATORS=6 AGENTS=100000 ./scripts/bench-cluster.sh [mamori-loadtest flags...]
#
# SCENARIO: steady (default), wakeup-fanout or reconnect-storm. For the
# last two every generator is given the same --at (AT_DELAY seconds after
# the generators start, default 300: time to connect); the first wakes
# group All or restarts every server (SIGTERM, then start again), the
# others only measure (--observe). Each generator connects from its own
# loopback address (127.0.0.2, 127.0.0.3...: 28,000 ephemeral ports per
# source and destination) and writes BENCH_DIR/gen-K.json; the summary
# adds them up (connected, check-ins/s, worst p99, worst wake-up or
# return time) and reads every server's RSS and CPU from /proc.
# Every port is below 32768, out of the kernel's ephemeral range: a port
# bound after connections were made (a server's debug listener, a
# restarted server's agent listener) must not be one of theirs.
# Identities are cached in BENCH_DIR, so a second run starts without
# enrolling; the PostgreSQL cluster is kept in BENCH_DIR/pg between runs
# (durable commits: fsync and synchronous_commit on). Extra arguments go
# to every generator. Each generator runs with GOMEMLIMIT=GEN_GOMEMLIMIT
# (default: 60 % of the machine's memory divided among them; at GOGC=200,
# unlimited, six of them would take more than the machine has).
# ECHO=1 (steady and churn) also starts SERVERS echo endpoints sharing
# BENCH_ECHO_PORT (mamori-loadtest echo-server --reuse-port, with
# ECHO_FLAGS, e.g. the servers' keepalive flags); every generator then runs
# the same loop against them after the servers (echo_ratio); the summary
# then has no servers' RSS (their agents have left when it is read: see
# the generators' reports).
set -euo pipefail
cd "$(dirname "$0")/.."
SERVERS=${SERVERS:-6}
GENERATORS=${GENERATORS:-$SERVERS}
AGENTS=${AGENTS:-100000}
SCENARIO=${SCENARIO:-steady}
AT_DELAY=${AT_DELAY:-300}
export BENCH_DIR=${BENCH_DIR:-/tmp/mamori-bench-cluster}
. scripts/admin-password.sh
admin_password "$BENCH_DIR/admin-password" "$BENCH_DIR/data"
AGENT_PORT=${BENCH_AGENT_PORT:-22222}
API_PORT=${BENCH_API_PORT:-28443}
DEBUG_BASE=${BENCH_DEBUG_BASE:-26060}
PG_PORT=${BENCH_PG_PORT:-25432}
ECHO=${ECHO:-0}
ECHO_PORT=${BENCH_ECHO_PORT:-22223}
ECHO_DEBUG_BASE=${BENCH_ECHO_DEBUG_BASE:-26160}
DB="postgres://mamori@127.0.0.1:$PG_PORT/postgres?sslmode=disable"

# launch_server I: starts server I in the background (pid in server-I.pid).
# Its output goes to server-I.log, not to the caller's: the storm's
# --restart-cmd returns when its output closes.
launch_server() {
  local i=$1 hosts=() k
  for k in $(seq 2 $((GENERATORS + 1))); do hosts+=(--host "127.0.0.$k"); done
  GOGC=${SERVER_GOGC:-100} setsid bin/mamori server --data "$BENCH_DIR/data" --database "$DB" --reuse-port \
    --agent-listen ":$AGENT_PORT" --api-listen "127.0.0.1:$API_PORT" --debug-listen "127.0.0.1:$((DEBUG_BASE + i))" \
    "${hosts[@]}" --log-level warn ${SERVER_FLAGS:-} >>"$BENCH_DIR/server-$i.log" 2>&1 </dev/null &
  echo $! >"$BENCH_DIR/server-$i.pid"
}

# wait_server I: returns once server I runs (its own debug listener answers,
# served from the moment the agent listener is) and the shared API answers.
wait_server() {
  local i=$1
  for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$((DEBUG_BASE + i))/debug/pprof/" >/dev/null 2>&1 &&
      curl -skf "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "server $i did not answer" >&2
  return 1
}

start_server() { launch_server "$1" && wait_server "$1"; }

stop_servers() {
  local i p
  for i in $(seq 1 "$SERVERS"); do
    p=$(cat "$BENCH_DIR/server-$i.pid" 2>/dev/null) && kill -TERM "$p" 2>/dev/null || true
  done
  for i in $(seq 1 "$SERVERS"); do
    p=$(cat "$BENCH_DIR/server-$i.pid" 2>/dev/null) || continue
    while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
  done
}

if [ "${1:-}" = restart-servers ]; then # the reconnect storm's --restart-cmd
  stop_servers
  # All at once: with --reuse-port the kernel hands returning agents to
  # whichever servers listen, so the first one up would take them all.
  for i in $(seq 1 "$SERVERS"); do launch_server "$i"; done
  for i in $(seq 1 "$SERVERS"); do wait_server "$i" || exit 1; done
  exit 0
fi

[ -x bin/mamori-loadtest ] || make build >/dev/null
mkdir -p "$BENCH_DIR"

# PostgreSQL: Debian's postgresql-15, run as the postgres user when root.
PG_BIN=$(dpkg -L postgresql-15 2>/dev/null | grep '/bin/initdb$' | xargs -r dirname || true)
[ -n "$PG_BIN" ] || { echo "postgresql-15 is not installed" >&2; exit 1; }
AS=(); [ "$(id -u)" -eq 0 ] && AS=(runuser -u postgres --)
PGDATA="$BENCH_DIR/pg"
if [ ! -d "$PGDATA" ]; then
  mkdir -p "$PGDATA"; chmod 700 "$PGDATA"; [ ${#AS[@]} -eq 0 ] || chown postgres "$PGDATA"
  "${AS[@]}" "$PG_BIN/initdb" -D "$PGDATA" -U mamori --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
fi
"${AS[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/pg.log" -w -t 60 start \
  -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -k $PGDATA -c max_connections=300 -c shared_buffers=512MB" >/dev/null

gens=()
echoes=()
stop() {
  trap "" TERM INT # a second signal must not cut the clean-up short
  for g in "${gens[@]}"; do kill -TERM "$g" 2>/dev/null || true; done
  for e in "${echoes[@]}"; do kill -TERM "$e" 2>/dev/null || true; done
  stop_servers
  "${AS[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
}
trap stop EXIT
trap "exit 143" TERM INT # so that stop runs

for i in $(seq 1 "$SERVERS"); do start_server "$i"; done # the first creates the CA and keys
echo_flags=()
if [ "$ECHO" = 1 ]; then
  for i in $(seq 1 "$SERVERS"); do
    setsid bin/mamori-loadtest echo-server --data "$BENCH_DIR/data" --listen ":$ECHO_PORT" --reuse-port \
      --debug-listen "127.0.0.1:$((ECHO_DEBUG_BASE + i))" ${ECHO_FLAGS:-} >>"$BENCH_DIR/echo-$i.log" 2>&1 </dev/null &
    echoes+=($!)
  done
  for i in $(seq 1 "$SERVERS"); do
    for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$((ECHO_DEBUG_BASE + i))/metrics" >/dev/null 2>&1 && break; sleep 0.2; done
  done
fi
server_pids() { for i in $(seq 1 "$SERVERS"); do cat "$BENCH_DIR/server-$i.pid"; done; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | sed -n 's/^Model name: *//p')"
echo "$SERVERS servers (pids $(server_pids | xargs)) on :$AGENT_PORT sharing PostgreSQL 15; $GENERATORS generators, $AGENTS agents, $SCENARIO"

cpu_ticks() { # utime+stime of the servers now running, in clock ticks
  local t=0 p
  for p in $(server_pids); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo $t
}
pg_xacts() {
  psql "$DB" -Atc "SELECT xact_commit || ' ' || xact_rollback FROM pg_stat_database WHERE datname = 'postgres'" 2>/dev/null || echo "0 0"
}
at_flags=()
case "$SCENARIO" in
  wakeup-fanout|reconnect-storm) at_flags=(--at "$(( $(date +%s) + AT_DELAY ))") ;;
esac
# 60 % of the machine's memory shared by the generators: at their limit
# their garbage collector runs without pause, and a reconnect storm, which
# allocates a new connection per attempt, then starves everything.
GEN_GOMEMLIMIT=${GEN_GOMEMLIMIT:-$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) * 6 / 10 / GENERATORS / 1024 ))MiB}
per=$(( (AGENTS + GENERATORS - 1) / GENERATORS ))
for k in $(seq 1 "$GENERATORS"); do
  n=$(( k == GENERATORS ? AGENTS - per * (GENERATORS - 1) : per ))
  src="127.0.0.$((k + 1))"
  role=()
  [ "$ECHO" = 1 ] && role=(--echo-server "$src:$ECHO_PORT")
  if [ ${#at_flags[@]} -gt 0 ]; then
    if [ "$k" -eq 1 ]; then
      [ "$SCENARIO" = reconnect-storm ] && role=(--restart-cmd "$PWD/scripts/bench-cluster.sh restart-servers")
    else
      role=(--observe)
    fi
  fi
  GOMEMLIMIT=$GEN_GOMEMLIMIT bin/mamori-loadtest --scenario "$SCENARIO" --server "$src:$AGENT_PORT" --source-addrs "$src" \
    --api "https://127.0.0.1:$API_PORT" --data "$BENCH_DIR/data" --cache "$BENCH_DIR/cache-$k" \
    --agents "$n" --json "$BENCH_DIR/gen-$k.json" "${at_flags[@]}" "${role[@]}" "$@" >"$BENCH_DIR/gen-$k.out" 2>&1 &
  gens+=($!)
done
ticks0=$(cpu_ticks); x0=$(pg_xacts); t0=$(date +%s.%N)
rc=0
for g in "${gens[@]}"; do wait "$g" || rc=1; done
ticks1=$(cpu_ticks); x1=$(pg_xacts); t1=$(date +%s.%N)
rss=0
for p in $(server_pids); do rss=$((rss + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done
python3 - "$BENCH_DIR" "$GENERATORS" "$rss" "$ticks0" "$ticks1" "$t0" "$t1" "$(getconf CLK_TCK)" "$SERVERS" "$x0" "$x1" "$ECHO" <<'EOF'
import json, sys
a = sys.argv
d, g, rss_kib, k0, k1, t0, t1, hz, servers = a[1], int(a[2]), int(a[3]), int(a[4]), int(a[5]), float(a[6]), float(a[7]), int(a[8]), int(a[9])
(c0, r0), (c1, r1) = map(int, a[10].split()), map(int, a[11].split())
reps = [json.load(open(f"{d}/gen-{k}.json")) for k in range(1, g + 1)]
s = lambda key: sum(r.get(key) or 0 for r in reps)
mx = lambda key: max(r.get(key) or 0 for r in reps)
connected = s("connected")
out = {
    "servers": servers, "generators": g, "connected": connected,
    "checkins_per_sec": s("checkins_per_sec"), "p50_ms_worst": mx("p50_ms"), "p99_ms_worst": mx("p99_ms"),
    "errors": s("errors"), "server_rss_bytes": rss_kib * 1024, "rss_per_agent_kib": rss_kib / max(connected, 1),
    "server_cpu_seconds": (k1 - k0) / hz, "wall_seconds": t1 - t0,
    "bytes_per_checkin": sum((r.get("bytes_per_checkin") or 0) * (r.get("connected") or 0) for r in reps) / max(connected, 1),
    "wakeup_requested": s("wakeup_requested"), "wakeup_all_seconds_worst": mx("wakeup_all_seconds"), "wakeup_missed": s("wakeup_missed"),
    "storm_back": s("storm_back"), "storm_all_back_seconds_worst": mx("storm_all_back_seconds"), "not_back": s("not_back"), "gave_up": s("gave_up"),
    "retry_later": s("retry_later"), "pg_commits": c1 - c0, "pg_rollbacks": r1 - r0,
    "generators_rss_bytes": s("client_rss_bytes"), "generators_cpu_cores": s("client_cpu_cores"),
}
echoes = [r["echo"] for r in reps if r.get("echo")]
if a[12] == "1":
    # Read at the end: after the echo loop the servers hold no agents.
    del out["server_rss_bytes"], out["rss_per_agent_kib"]
if echoes:
    e = sum(x.get("checkins_per_sec") or 0 for x in echoes)
    out.update({"echo_checkins_per_sec": e, "echo_p50_ms_worst": max(x.get("p50_ms") or 0 for x in echoes),
                "echo_p99_ms_worst": max(x.get("p99_ms") or 0 for x in echoes), "echo_errors": sum(x.get("errors") or 0 for x in echoes),
                "echo_ratio": out["checkins_per_sec"] / e if e else 0})
json.dump(out, open(f"{d}/cluster-summary.json", "w"), indent=1)
for k, v in out.items():
    print(f"  {k:30} {v:.1f}" if isinstance(v, float) else f"  {k:30} {v}")
EOF
echo "generator reports: $BENCH_DIR/gen-K.out, summary: $BENCH_DIR/cluster-summary.json"
exit $rc
