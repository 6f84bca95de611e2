#!/usr/bin/env bash
# Scale-out benchmark (docs/benchmarks.md): AGENTS agents against SERVERS
# server processes sharing one PostgreSQL store on this machine, all bound
# to the same agent address (--reuse-port), fed by GENERATORS load
# generators. One process here may hold at most 20,000 open files, so
# 100,000 agents need at least 6 servers and 6 generators.
#
#   SERVERS=6 GENERATORS=6 AGENTS=100000 ./scripts/bench-cluster.sh [mamori-loadtest flags...]
#
# SCENARIO: steady (default) or wakeup-fanout. Each generator connects from
# its own loopback address (127.0.0.2, 127.0.0.3...: 28,000 ephemeral ports
# per source and destination) and writes BENCH_DIR/gen-K.json; the summary
# adds them up (connected, check-ins/s, worst p99) and reads every
# server's RSS and CPU from /proc. Identities are cached in BENCH_DIR, so a
# second run starts without enrolling; the PostgreSQL cluster is kept in
# BENCH_DIR/pg between runs. Extra arguments go to every generator.
set -euo pipefail
cd "$(dirname "$0")/.."
SERVERS=${SERVERS:-6}
GENERATORS=${GENERATORS:-$SERVERS}
AGENTS=${AGENTS:-100000}
SCENARIO=${SCENARIO:-steady}
BENCH_DIR=${BENCH_DIR:-/tmp/mamori-bench-cluster}
AGENT_PORT=${BENCH_AGENT_PORT:-42222}
API_PORT=${BENCH_API_PORT:-48443}
DEBUG_BASE=${BENCH_DEBUG_BASE:-46060}
PG_PORT=${BENCH_PG_PORT:-45432}
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
# Durable commits (fsync, synchronous_commit on): as a production store.
"${AS[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$BENCH_DIR/pg.log" -w -t 60 start \
  -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -k $PGDATA -c max_connections=300 -c shared_buffers=512MB" >/dev/null
DB="postgres://mamori@127.0.0.1:$PG_PORT/postgres?sslmode=disable"

pids=()
stop() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  "${AS[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
}
trap stop EXIT

hosts=()
for k in $(seq 2 $((GENERATORS + 1))); do hosts+=(--host "127.0.0.$k"); done
for i in $(seq 1 "$SERVERS"); do
  GOGC=${SERVER_GOGC:-100} bin/mamori server --data "$BENCH_DIR/data" --database "$DB" --reuse-port \
    --agent-listen ":$AGENT_PORT" --api-listen "127.0.0.1:$API_PORT" --debug-listen "127.0.0.1:$((DEBUG_BASE + i))" \
    "${hosts[@]}" --log-level warn ${SERVER_FLAGS:-} 2>"$BENCH_DIR/server-$i.log" &
  pids+=($!)
  # The first creates the CA and keys; the others load them.
  for _ in $(seq 1 100); do
    curl -skf "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
done
server_pids=("${pids[@]}")
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | sed -n 's/^Model name: *//p')"
echo "$SERVERS servers (pids ${server_pids[*]}) on :$AGENT_PORT sharing PostgreSQL 15; $GENERATORS generators, $AGENTS agents, $SCENARIO"

cpu_ticks() { # utime+stime of the servers, in clock ticks
  local t=0 p
  for p in "${server_pids[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo $t
}
per=$(( (AGENTS + GENERATORS - 1) / GENERATORS ))
gens=()
for k in $(seq 1 "$GENERATORS"); do
  n=$(( k == GENERATORS ? AGENTS - per * (GENERATORS - 1) : per ))
  src="127.0.0.$((k + 1))"
  bin/mamori-loadtest --scenario "$SCENARIO" --server "$src:$AGENT_PORT" --source-addrs "$src" \
    --api "https://127.0.0.1:$API_PORT" --data "$BENCH_DIR/data" --cache "$BENCH_DIR/cache-$k" \
    --agents "$n" --json "$BENCH_DIR/gen-$k.json" "$@" >"$BENCH_DIR/gen-$k.out" 2>&1 &
  gens+=($!)
done
ticks0=$(cpu_ticks); t0=$(date +%s.%N)
rc=0
for g in "${gens[@]}"; do wait "$g" || rc=1; done
ticks1=$(cpu_ticks); t1=$(date +%s.%N)
rss=0
for p in "${server_pids[@]}"; do rss=$((rss + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done
python3 - "$BENCH_DIR" "$GENERATORS" "$rss" "$ticks0" "$ticks1" "$t0" "$t1" "$(getconf CLK_TCK)" "$SERVERS" <<'EOF'
import json, sys
d, g, rss_kib, k0, k1, t0, t1, hz, servers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9])
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
    "wakeup_all_seconds_worst": mx("wakeup_all_seconds"), "wakeup_missed": s("wakeup_missed"),
}
json.dump(out, open(f"{d}/cluster-summary.json", "w"), indent=1)
for k, v in out.items():
    print(f"  {k:28} {v:.1f}" if isinstance(v, float) else f"  {k:28} {v}")
EOF
echo "generator reports: $BENCH_DIR/gen-K.out, summary: $BENCH_DIR/cluster-summary.json"
exit $rc
