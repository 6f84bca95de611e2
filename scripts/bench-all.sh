#!/usr/bin/env bash
# The agent-plane benchmark set of docs/benchmarks.md, one scenario after
# another at AGENTS (default 19,500: what one process may hold under the
# 20,000 open-files limit). Reports go to BENCH_DIR/results-<time>/.
#
#   AGENTS=19500 ./scripts/bench-all.sh [scenario...]
#
# Scenarios (default all): capacity sustained churn fanout storm grpc memlimit
# clients (not in all: the load generator's own cost, grpc-go then lean client)
set -euo pipefail
cd "$(dirname "$0")/.."
export AGENTS=${AGENTS:-19500}
export BENCH_DIR=${BENCH_DIR:-/tmp/mamori-bench-agent}
# Connections per second while connecting: each is a full handshake on both
# sides of a shared 2-core box.
RAMP=${RAMP:-300}
OUT="$BENCH_DIR/results-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
make build >/dev/null

run() { # name, then env assignments and bench-agent.sh arguments
  local name=$1; shift
  echo "=== $name: $*" | tee -a "$OUT/summary.txt"
  env "$@" 2>&1 | tee "$OUT/$name.txt" | grep -v '^  [0-9]*s: ' || true
  cp "$BENCH_DIR"/report-*.json "$OUT/" 2>/dev/null || true
  for f in "$OUT"/report-*.json; do [ -e "$f" ] && mv "$f" "$OUT/$name.json"; done
  rm -f "$BENCH_DIR"/report-*.json
  if [ -d "$BENCH_DIR/profiles" ]; then mv "$BENCH_DIR/profiles" "$OUT/profiles-$name"; fi
}

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(capacity sustained churn fanout storm grpc memlimit)
for s in "${scenarios[@]}"; do
  case $s in
    # Capacity: check-ins as fast as answered, against the server, then the echo endpoint.
    capacity) run capacity SCENARIO=steady ./scripts/bench-agent.sh --ramp "$RAMP" --interval 0 --duration 30s --settle 60s ;;
    # Sustained load above the 5,000/s goal: every agent every 3 s (±10 %).
    sustained) run sustained SCENARIO=steady ./scripts/bench-agent.sh --ramp "$RAMP" --interval 3s --duration 60s --settle 30s ;;
    # Churn: 10 % of the agents change their software list per minute.
    churn) run churn SCENARIO=churn ./scripts/bench-agent.sh --ramp "$RAMP" --interval 10s --change-rate 0.1 --duration 60s --settle 30s ;;
    # Wake-up fan-out of the whole fleet (paced at the server's --wakeup-rate).
    fanout) run fanout SCENARIO=wakeup-fanout ./scripts/bench-agent.sh --ramp "$RAMP" --interval 0 --settle 30s ;;
    # Reconnect storm: the server restarts with every agent connected.
    storm) run storm SCENARIO=reconnect-storm ./scripts/bench-agent.sh --ramp "$RAMP" --interval 0 --settle 30s ;;
    # The same capacity run on grpc-go, for comparison.
    grpc) run grpc BENCH_TRANSPORT=grpc SCENARIO=steady ./scripts/bench-agent.sh --ramp "$RAMP" --interval 0 --duration 30s --settle 60s ;;
    # Capacity with a memory limit on the server.
    memlimit) run memlimit GOMEMLIMIT=${MEMLIMIT:-640MiB} SCENARIO=steady ./scripts/bench-agent.sh --ramp "$RAMP" --interval 0 --duration 30s --settle 60s ;;
    # The load generator's own memory and CPU per simulated agent: the same
    # idle fleet (every agent every 20 s) with the agent's grpc-go client,
    # then the lean one, back to back against a fresh server each.
    clients) for c in grpc lean; do
        run "client-$c" ECHO=0 SCENARIO=steady ./scripts/bench-agent.sh --client "$c" --ramp "$RAMP" --interval 20s --duration 60s --settle 30s
      done ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
done
echo "results in $OUT"
