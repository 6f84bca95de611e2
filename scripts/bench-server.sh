#!/usr/bin/env bash
# Start, stop or restart the benchmark server (and its echo endpoint) in the
# background. Used by bench-agent.sh, and by mamori-loadtest's
# --restart-cmd in the reconnect-storm scenario.
#
#   scripts/bench-server.sh start|stop|restart|start-echo|stop-echo
#
# Environment (defaults in brackets): BENCH_DIR [/tmp/mamori-bench-agent],
# BENCH_AGENT_ADDR [127.0.0.1:32222], BENCH_API_ADDR [127.0.0.1:31443],
# BENCH_DEBUG_ADDR [127.0.0.1:31060], BENCH_ECHO_ADDR [127.0.0.1:32223],
# BENCH_ECHO_DEBUG_ADDR [127.0.0.1:31061], BENCH_TRANSPORT [lean] (the
# --agent-transport of both the server and the echo endpoint), SERVER_FLAGS (extra flags for
# `mamori server`), SERVER_GOGC and SERVER_GOMEMLIMIT (the server's GOGC and
# GOMEMLIMIT; GOGC and GOMEMLIMIT themselves are used when those are unset).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${BENCH_DIR:-/tmp/mamori-bench-agent}
AGENT_ADDR=${BENCH_AGENT_ADDR:-127.0.0.1:32222}
API_ADDR=${BENCH_API_ADDR:-127.0.0.1:31443}
DEBUG_ADDR=${BENCH_DEBUG_ADDR:-127.0.0.1:31060}
ECHO_ADDR=${BENCH_ECHO_ADDR:-127.0.0.1:32223}
ECHO_DEBUG_ADDR=${BENCH_ECHO_DEBUG_ADDR:-127.0.0.1:31061}
mkdir -p "$WORK"
. scripts/admin-password.sh
admin_password "$WORK/admin-password" "$WORK/data"

stop_pid() { # pidfile
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

start_server() {
  # shellcheck disable=SC2086
  SERVER_GOGC=${SERVER_GOGC-${GOGC:-}} SERVER_GOMEMLIMIT=${SERVER_GOMEMLIMIT-${GOMEMLIMIT:-}}
  GOGC=$SERVER_GOGC GOMEMLIMIT=$SERVER_GOMEMLIMIT setsid bin/mamori server --data "$WORK/data" --agent-listen "$AGENT_ADDR" --api-listen "$API_ADDR" \
    --debug-listen "$DEBUG_ADDR" --log-level warn --agent-transport "${BENCH_TRANSPORT:-lean}" ${SERVER_FLAGS:-} >>"$WORK/server.log" 2>&1 </dev/null &
  echo $! >"$WORK/server.pid"
  for _ in $(seq 1 200); do
    curl -fsk "https://$API_ADDR/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$WORK/server.pid")" 2>/dev/null || { echo "server exited; see $WORK/server.log" >&2; return 1; }
    sleep 0.05
  done
  echo "server not ready after 10s; see $WORK/server.log" >&2
  return 1
}

case "${1:-}" in
  start) start_server ;;
  stop) stop_pid "$WORK/server.pid" ;;
  restart) stop_pid "$WORK/server.pid"; start_server ;;
  start-echo)
    GOGC= GOMEMLIMIT= setsid bin/mamori-loadtest echo-server --data "$WORK/data" --listen "$ECHO_ADDR" --debug-listen "$ECHO_DEBUG_ADDR" \
      --agent-transport "${BENCH_TRANSPORT:-lean}" \
      >>"$WORK/echo.log" 2>&1 </dev/null &
    echo $! >"$WORK/echo.pid"
    for _ in $(seq 1 100); do curl -fs "http://$ECHO_DEBUG_ADDR/metrics" >/dev/null 2>&1 && exit 0; sleep 0.05; done
    echo "echo endpoint not up; see $WORK/echo.log" >&2; exit 1 ;;
  stop-echo) stop_pid "$WORK/echo.pid" ;;
  *) echo "usage: $0 start|stop|restart|start-echo|stop-echo" >&2; exit 2 ;;
esac
