#!/usr/bin/env bash
# Update-distribution benchmarks (docs/benchmarks.md, "Update distribution"):
#
#   1. halfyear    a simulated half-year of releases (5 a day, +0.05–0.5 % signatures
#                  each, a few removed, a repack every 30 days) and four client
#                  profiles; bytes per client for (a) full downloads, (b) an ESET-like
#                  scheme, (c) Mamori (real publisher, mirror and clients)
#   2. herd        10,000 concurrent clients fetch a new release from one mirror
#                  capped at 50 MB/s (the mirror is a separate process)
#   3. throughput  the mirror against nginx on the same files, same run
#
#   scripts/bench-updates.sh                 # all three
#   scripts/bench-updates.sh herd throughput # some
#   INITIAL=60000 scripts/bench-updates.sh halfyear
#
# Results (text and JSON) go to $BENCH_DIR (default /tmp/mamori-bench-updates).
# nginx is installed from Debian when missing (as root). The herd works in
# /dev/shm (downloads are deleted as soon as they are verified).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/mamori-bench-updates}
INITIAL=${INITIAL:-20000}          # half-year: records of the first engine
DAYS=${DAYS:-182}
CLIENTS=${CLIENTS:-10000}          # herd
RATE=${RATE:-50000000}             # herd: mirror cap, bytes/s (50 MB/s)
MAX_CONNS=${MAX_CONNS:-512}
ROUNDS=${ROUNDS:-3}                # throughput rounds
DURATION=${DURATION:-8s}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-updates: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "go is needed"
mkdir -p "$BENCH_DIR"
BIN=$BENCH_DIR/updatesbench
log "building the benchmark driver"
(cd "$REPO" && CGO_ENABLED=0 go build -o "$BIN" ./internal/updates/updatesbench)

which=("$@")
[ ${#which[@]} -gt 0 ] || which=(halfyear herd throughput)

info() {
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); $(go version | cut -d' ' -f3); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
}

for b in "${which[@]}"; do
  case $b in
  halfyear)
    log "half-year simulation (INITIAL=$INITIAL records, $DAYS days); takes tens of minutes"
    { info; "$BIN" halfyear -initial "$INITIAL" -days "$DAYS" -dir "$BENCH_DIR/halfyear" -json "$BENCH_DIR/halfyear.json"; } | tee "$BENCH_DIR/halfyear.txt"
    ;;
  herd)
    log "herd: $CLIENTS clients, cap $RATE B/s, $MAX_CONNS connections"
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    { info; "$BIN" herd -clients "$CLIENTS" -rate "$RATE" -max-conns "$MAX_CONNS" -json "$BENCH_DIR/herd.json"; } | tee "$BENCH_DIR/herd.txt"
    ;;
  throughput)
    if ! command -v nginx >/dev/null; then
      if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        log "installing nginx from Debian"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx >/dev/null
      else
        die "nginx is missing (apt-get install nginx)"
      fi
    fi
    log "throughput: mirror vs nginx, $ROUNDS rounds of $DURATION"
    { info; "$BIN" throughput -rounds "$ROUNDS" -duration "$DURATION" -nginx "$(command -v nginx)" -json "$BENCH_DIR/throughput.json"; } | tee "$BENCH_DIR/throughput.txt"
    ;;
  *) die "unknown benchmark $b (halfyear, herd, throughput)" ;;
  esac
done
log "results in $BENCH_DIR"
