#!/usr/bin/env bash
# Agent-plane benchmark: a fresh server on loopback, N simulated agents
# (mamori-loadtest: real protocol, real mTLS), then the figures of
# docs/benchmarks.md: server memory per idle agent, bytes per no-change
# check-in, check-in and wake-up latency.
#
#   AGENTS=5000 GOGC=100 ./scripts/bench-agent.sh
set -euo pipefail
cd "$(dirname "$0")/.."
AGENTS=${AGENTS:-5000}
WORK=${BENCH_DIR:-/tmp/mamori-bench-agent}
AGENT_ADDR=${BENCH_AGENT_ADDR:-127.0.0.1:32222}
API_ADDR=${BENCH_API_ADDR:-127.0.0.1:38443}
DEBUG_ADDR=${BENCH_DEBUG_ADDR:-127.0.0.1:36060}
mkdir -p "$WORK"
[ -x bin/mamori-loadtest ] || make build >/dev/null

bin/mamori server --data "$WORK/data" --agent-listen "$AGENT_ADDR" --api-listen "$API_ADDR" \
  --debug-listen "$DEBUG_ADDR" --log-level warn >"$WORK/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsk "https://$API_ADDR/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | sed -n 's/^Model name: *//p'), GOGC=${GOGC:-100}"
bin/mamori-loadtest --server "$AGENT_ADDR" --api "https://$API_ADDR" --data "$WORK/data" \
  --agents "$AGENTS" --settle "${SETTLE:-30s}" --pprof "http://$DEBUG_ADDR" --json "$WORK/report-$AGENTS.json"
echo "JSON report: $WORK/report-$AGENTS.json"
