#!/usr/bin/env bash
# Agent-plane benchmark (docs/benchmarks.md): a server on loopback (its data
# directory, and so the enrolled identities, kept between runs in BENCH_DIR),
# the echo endpoint beside it, and mamori-loadtest running one scenario.
#
#   SCENARIO=steady AGENTS=19500 ./scripts/bench-agent.sh [mamori-loadtest flags...]
#
# SCENARIO: steady (default), churn, wakeup-fanout, reconnect-storm, echo,
# management (a policy assigned to All, then a task run now on All: time
# until every agent applied it / finished it, API latency meanwhile; the
# server's --config-push-rate and --task-delivery-rate pace it, set them
# through SERVER_FLAGS).
# Extra arguments go to mamori-loadtest (e.g. --interval 0 --duration 60s).
# ECHO=0 skips the echo run of steady and churn.
# BENCH_TRANSPORT (lean or grpc) is the --agent-transport of the server and
# the echo endpoint; SERVER_FLAGS go to `mamori server`; GOGC and GOMEMLIMIT apply to the
# server only. The JSON report is written to BENCH_DIR/report-SCENARIO-AGENTS.json,
# the server's (and echo endpoint's) profiles to BENCH_DIR/profiles/.
set -euo pipefail
cd "$(dirname "$0")/.."
SCENARIO=${SCENARIO:-steady}
AGENTS=${AGENTS:-5000}
export BENCH_DIR=${BENCH_DIR:-/tmp/mamori-bench-agent}
. scripts/admin-password.sh
admin_password "$BENCH_DIR/admin-password" "$BENCH_DIR/data"
AGENT_ADDR=${BENCH_AGENT_ADDR:-127.0.0.1:32222}
API_ADDR=${BENCH_API_ADDR:-127.0.0.1:31443}
DEBUG_ADDR=${BENCH_DEBUG_ADDR:-127.0.0.1:31060}
ECHO_ADDR=${BENCH_ECHO_ADDR:-127.0.0.1:32223}
ECHO_DEBUG_ADDR=${BENCH_ECHO_DEBUG_ADDR:-127.0.0.1:31061}
[ -x bin/mamori-loadtest ] || make build >/dev/null
export SERVER_GOGC=${GOGC:-} SERVER_GOMEMLIMIT=${GOMEMLIMIT:-}
unset GOGC GOMEMLIMIT # not for the load generator or the echo endpoint

trap './scripts/bench-server.sh stop-echo; ./scripts/bench-server.sh stop' EXIT
./scripts/bench-server.sh stop
./scripts/bench-server.sh start
echo_flags=()
case "$SCENARIO" in
  steady|churn|echo)
    if [ "${ECHO:-1}" != 0 ] || [ "$SCENARIO" = echo ]; then
      ./scripts/bench-server.sh stop-echo
      # The load generator and the server share the machine; so does the
      # echo endpoint, but it is idle while the server is measured.
      ./scripts/bench-server.sh start-echo
      echo_flags=(--echo-server "$ECHO_ADDR" --echo-debug "http://$ECHO_DEBUG_ADDR")
    fi ;;
esac
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | sed -n 's/^Model name: *//p'), transport ${BENCH_TRANSPORT:-lean}, server GOGC=${SERVER_GOGC:-100} GOMEMLIMIT=${SERVER_GOMEMLIMIT:-none} ${SERVER_FLAGS:-}"
bin/mamori-loadtest --scenario "$SCENARIO" --server "$AGENT_ADDR" --api "https://$API_ADDR" --data "$BENCH_DIR/data" \
  --agents "$AGENTS" --pprof "http://$DEBUG_ADDR" --restart-cmd "$PWD/scripts/bench-server.sh restart" \
  "${echo_flags[@]}" --json "$BENCH_DIR/report-$SCENARIO-$AGENTS.json" --profile-dir "$BENCH_DIR/profiles" "$@"
echo "JSON report: $BENCH_DIR/report-$SCENARIO-$AGENTS.json"
