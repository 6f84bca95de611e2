#!/usr/bin/env bash
# make demo: a server on embedded SQLite under ./demo and three real agents on
# loopback. Data persists between runs (delete ./demo to start over).
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_DIR=${DEMO_DIR:-$PWD/demo}
AGENT_ADDR=${DEMO_AGENT_ADDR:-127.0.0.1:2222}
API_ADDR=${DEMO_API_ADDR:-127.0.0.1:8443}
BIN=$PWD/bin
DATA=$DEMO_DIR/data

command -v curl >/dev/null || { echo "demo: curl is needed (apt-get install curl)" >&2; exit 1; }
[ -x "$BIN/mamori" ] && [ -x "$BIN/mamori-agent" ] || { echo "demo: run 'make build' first" >&2; exit 1; }
mkdir -p "$DEMO_DIR/logs"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping agents and server..."
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped. Data kept in $DEMO_DIR (delete it to start over)."
  exit 0
}
trap cleanup INT TERM EXIT

for addr in "$AGENT_ADDR" "$API_ADDR"; do
  if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
    echo "demo: $addr is already in use; set DEMO_AGENT_ADDR / DEMO_API_ADDR" >&2
    exit 1
  fi
done

# An engine update repository (the publisher's side) with one release: a
# signature for a harmless demo file. The server's built-in mirror verifies
# it and serves it to the agents.
REPO=$DEMO_DIR/update-repo
SIGS=$DEMO_DIR/signatures
MARKER=$DEMO_DIR/files/mamori-demo-marker.txt
if [ ! -f "$REPO/repo.json" ]; then
  mkdir -p "$SIGS" "$(dirname "$MARKER")"
  echo "Mamori demo marker: harmless, detected by the demo engine update" >"$MARKER"
  echo "$(md5sum "$MARKER" | cut -d' ' -f1):$(stat -c %s "$MARKER"):Mamori.Demo.Marker" >"$SIGS/demo.hdb"
  # A release is the whole signature set: keep the built-in ones (EICAR).
  cp internal/engine/builtin/signatures/* "$SIGS/"
  "$BIN/mamori" repo init --repo "$REPO" >"$DEMO_DIR/logs/repo.log" 2>&1
  "$BIN/mamori" repo publish --repo "$REPO" --from "$SIGS" >>"$DEMO_DIR/logs/repo.log" 2>&1
fi
ROOT_PIN=$("$BIN/mamori" repo status --repo "$REPO" --json | sed -n 's/.*"root_sha256": *"\([0-9a-f]*\)".*/\1/p')
[ -n "$ROOT_PIN" ] || { echo "demo: could not read the update repository's root pin" >&2; exit 1; }

"$BIN/mamori" server --data "$DATA" --agent-listen "$AGENT_ADDR" --api-listen "$API_ADDR" \
  --updates-upstream "$REPO" --updates-root-sha256 "$ROOT_PIN" --updates-sync-interval 30s \
  >"$DEMO_DIR/logs/server.log" 2>&1 &
pids+=($!)

API="https://$API_ADDR"
for _ in $(seq 1 100); do
  if [ -f "$DATA/ca.crt" ] && curl -fsS --cacert "$DATA/ca.crt" "$API/readyz" >/dev/null 2>&1; then break; fi
  kill -0 "${pids[0]}" 2>/dev/null || { echo "demo: the server exited:" >&2; cat "$DEMO_DIR/logs/server.log" >&2; exit 1; }
  sleep 0.2
done
curl -fsS --cacert "$DATA/ca.crt" "$API/readyz" >/dev/null || { echo "demo: server not ready" >&2; exit 1; }

FP=$("$BIN/mamori" ca fingerprint --data "$DATA")
TOKEN=""
for n in 1 2 3; do
  state="$DEMO_DIR/agents/demo-$n"
  args=(run --state "$state" --interval 30s)
  if [ ! -f "$state/identity.json" ]; then
    [ -n "$TOKEN" ] || TOKEN=$("$BIN/mamori" token create --data "$DATA" --uses 3 --ttl 1h --description demo --output json |
      sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
    args+=(--server "$AGENT_ADDR" --token "$TOKEN" --ca-fingerprint "$FP" --instance "demo-$n")
  fi
  "$BIN/mamori-agent" "${args[@]}" >"$DEMO_DIR/logs/agent-$n.log" 2>&1 &
  pids+=($!)
done

PASSWORD=${MAMORI_ADMIN_PASSWORD:-$(cat "$DATA/initial-admin-password" 2>/dev/null || echo "(set by MAMORI_ADMIN_PASSWORD on first start)")}
JAR="$DEMO_DIR/cookies"
curl -fsS --cacert "$DATA/ca.crt" -c "$JAR" -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" "$API/api/v1/session" >/dev/null
online=0
for _ in $(seq 1 150); do
  online=$(curl -fsS --cacert "$DATA/ca.crt" -b "$JAR" "$API/api/v1/computers?status=online" | sed -n 's/.*"total":\([0-9]*\).*/\1/p')
  [ "${online:-0}" -ge 3 ] && break
  sleep 0.2
done

cat <<MSG

Mamori demo is running.

  API:             $API/api/v1   (TLS by the internal CA: $DATA/ca.crt)
  admin user:      admin
  admin password:  $PASSWORD
  CA fingerprint:  $FP
  agents online:   ${online:-0} of 3   (logs in $DEMO_DIR/logs)

Try:
  curl --cacert $DATA/ca.crt -c /tmp/mamori.jar -H 'Content-Type: application/json' \\
       -d '{"username":"admin","password":"$PASSWORD"}' $API/api/v1/session
  curl --cacert $DATA/ca.crt -b /tmp/mamori.jar '$API/api/v1/computers?sort=name'
  curl --cacert $DATA/ca.crt -b /tmp/mamori.jar -X POST $API/api/v1/computers/<id>/wakeup
  curl --cacert $DATA/ca.crt -b /tmp/mamori.jar $API/metrics | grep ^mamori_

  Or with the CLI:
  $BIN/mamori login --server $API --user admin --ca-fingerprint $FP
  $BIN/mamori computers list
  $BIN/mamori tasks create uptime --type run_command --param command=uptime
  $BIN/mamori tasks run uptime --group All --wait
  $BIN/mamori policies create fast --set agent.check_in_interval=15s
  $BIN/mamori policies assign fast --group All
  $BIN/mamori computers effective-config demo-1

  Engine updates (repository $REPO, served by the server under $API/updates/):
  $BIN/mamori tasks create update-engine --type engine_update
  $BIN/mamori tasks run update-engine --group All --wait
  $BIN/mamori-agent scan --state $DEMO_DIR/agents/demo-1 $MARKER
  echo "\$(md5sum $MARKER | cut -d' ' -f1):\$(stat -c %s $MARKER):Mamori.Demo.Marker.V2" >> $SIGS/demo.hdb
  $BIN/mamori repo publish --repo $REPO --from $SIGS      # the next release: a delta
  $BIN/mamori computers list --engine outdated

Press Ctrl-C to stop.
MSG
wait "${pids[0]}"
