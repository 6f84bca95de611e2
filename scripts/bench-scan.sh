#!/usr/bin/env bash
# Scan benchmark: Mamori's scanner vs clamscan vs yara on the same corpus and
# the same 65,000 signatures, in the same run, on this machine.
#
#   scripts/bench-scan.sh            # BENCH_DIR defaults to /tmp/mamori-bench-scan
#   BENCH_DIR=/data/bench RUNS=5 scripts/bench-scan.sh
#
# Steps: generate the scale-1 corpus once (shared/bench/scan/gen.py, cached in
# $BENCH_DIR/data), install clamav/yara from Debian if missing (as root;
# otherwise say so and skip them), build mamori and mamori-agent and the engine
# database, check Mamori's detections against expected.tsv, warm the page
# cache, then time the scanners in interleaved rounds (hyperfine if
# installed, else a loop with date) and report median wall time, MB/s,
# ratios, CPU time, engine load time and peak RSS (/usr/bin/time -v).
# Results are also written to $BENCH_DIR/results.txt.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/mamori-bench-scan}
SCALE=${SCALE:-1}
SEED=${SEED:-20240601}
RUNS=${RUNS:-10}            # timed runs for mamori (about a second each)
YARA_RUNS=${YARA_RUNS:-5}
CLAM_RUNS=${CLAM_RUNS:-2}   # clamscan needs 20-60 s per run
GEN=${GEN:-$REPO/../shared/bench/scan/gen.py}
[ -f "$GEN" ] || GEN=$REPO/testdata/scanbench/gen.py
DATA=$BENCH_DIR/data
OUT=$BENCH_DIR/results.txt

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-scan: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is needed to generate the corpus"
command -v go >/dev/null || die "go is needed to build the scanner"
[ -f "$GEN" ] || die "corpus generator not found at $GEN (set GEN=...)"
mkdir -p "$BENCH_DIR"

# 1. Corpus, generated once per (generator, seed, scale).
stamp="$(sha256sum "$GEN" | cut -c1-16) seed=$SEED scale=$SCALE"
if [ "$(cat "$DATA/.stamp" 2>/dev/null || true)" != "$stamp" ]; then
	log "generating corpus (seed $SEED, scale $SCALE) into $DATA"
	rm -rf "$DATA"
	python3 "$GEN" "$DATA" --seed "$SEED" --scale "$SCALE" >&2
	echo "$stamp" >"$DATA/.stamp"
else
	log "using cached corpus in $DATA"
fi
CORPUS=$DATA/corpus
SIGS=$DATA/sigs
BYTES=$(find "$CORPUS" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
FILES=$(find "$CORPUS" -type f | wc -l)

# 2. Reference scanners.
have_clam=1 have_yara=1
need=()
command -v clamscan >/dev/null || need+=(clamav)
command -v yara >/dev/null || need+=(yara)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		log "installing ${need[*]} from Debian"
		apt-get update -qq >&2 || true
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2 ||
			log "could not install ${need[*]}; skipping them"
	else
		log "missing ${need[*]}: run 'sudo apt-get install -y ${need[*]}' to compare against them; skipping"
	fi
fi
command -v clamscan >/dev/null || have_clam=0
command -v yara >/dev/null || have_yara=0
[ -x /usr/bin/time ] || log "/usr/bin/time missing (apt-get install time): RSS will not be reported"

# 3. Mamori: binary and engine database.
MAMORI=$BENCH_DIR/mamori
AGENT=$BENCH_DIR/mamori-agent
log "building mamori and mamori-agent"
(cd "$REPO" && CGO_ENABLED=0 go build -o "$MAMORI" ./cmd/mamori && CGO_ENABLED=0 go build -o "$AGENT" ./cmd/mamori-agent)
# The agent's scan command with a state directory that is not enrolled:
# nothing is spooled for a server.
NOSTATE=$BENCH_DIR/no-agent-state
ENGINE=$BENCH_DIR/engine.mdb
"$MAMORI" engine build --from "$SIGS" --out "$ENGINE" --version 1 >&2
EMPTY=$BENCH_DIR/empty.bin
: >"$EMPTY"

# 4. Correctness: detections must equal expected.tsv.
log "checking detections against expected.tsv"
set +e
"$AGENT" scan --state "$NOSTATE" --engine "$ENGINE" --json "$CORPUS" >"$BENCH_DIR/mamori.jsonl" 2>"$BENCH_DIR/mamori.stderr"
code=$?
set -e
[ $code -eq 1 ] || die "mamori scan exited $code (want 1: detections, no errors); see $BENCH_DIR/mamori.stderr"
python3 - "$BENCH_DIR/mamori.jsonl" "$DATA" <<'EOF' || die "detections differ from expected.tsv"
import json, os, sys
lines, data = sys.argv[1], sys.argv[2]
kinds = {"md5": "hash", "sha256": "hash", "body": "body", "eicar": "body"}
want = set()
for l in open(os.path.join(data, "expected.tsv")):
    p, k, s = l.rstrip("\n").split("\t")
    want.add((p, kinds[k], s))
got = set()
for l in open(lines):
    o = json.loads(l)
    if o.get("summary"):
        continue
    got.add((os.path.relpath(o["path"], data), o["kind"], o["signature"]))
missing, extra = want - got, got - want
for m in sorted(missing): print("missing:", *m, file=sys.stderr)
for e in sorted(extra): print("extra:  ", *e, file=sys.stderr)
print(f"detections: {len(got)} found, {len(want)} expected, {len(missing)} missing, {len(extra)} extra", file=sys.stderr)
sys.exit(1 if missing or extra else 0)
EOF

# 5. Warm the page cache.
log "warming the page cache ($FILES files, $BYTES bytes)"
find "$CORPUS" -type f -print0 | xargs -0 cat >/dev/null
find "$CORPUS" -type f -print0 | xargs -0 cat >/dev/null

# run_timed NAME RUNS WARMUP CMD... : times RUNS runs of CMD (after WARMUP
# untimed ones) and appends "wall user+sys" seconds per run to
# $BENCH_DIR/times-NAME.txt. Uses hyperfine when installed.
run_timed() {
	local name=$1 runs=$2 warm=$3
	shift 3
	[ "$runs" -gt 0 ] || return 0
	if command -v hyperfine >/dev/null; then
		hyperfine --style none -N -i --warmup "$warm" --runs "$runs" --export-json "$BENCH_DIR/hf.json" \
			"$(printf '%q ' "$@")" >/dev/null 2>&1
		python3 - "$BENCH_DIR/hf.json" >>"$BENCH_DIR/times-$name.txt" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
cpu = r["user"] + r["system"]  # hyperfine reports CPU as a mean only
for t in r["times"]:
    print("%.4f %.4f" % (t, cpu))
PY
	else
		local t0 t1 i
		for ((i = 0; i < warm; i++)); do "$@" >/dev/null 2>&1 || true; done
		for ((i = 0; i < runs; i++)); do
			t0=$(date +%s%N)
			"$@" >/dev/null 2>&1 || true
			t1=$(date +%s%N)
			python3 -c 'import sys; print("%.4f n/a" % ((int(sys.argv[2]) - int(sys.argv[1])) / 1e9))' "$t0" "$t1" >>"$BENCH_DIR/times-$name.txt"
		done
	fi
}

# stat NAME FIELD : median wall seconds (FIELD 1) or mean CPU seconds (2).
stat() {
	[ -s "$BENCH_DIR/times-$1.txt" ] || { echo n/a; return; }
	python3 - "$BENCH_DIR/times-$1.txt" "$2" <<'PY'
import statistics, sys
vals = [l.split()[int(sys.argv[2]) - 1] for l in open(sys.argv[1]) if l.strip()]
vals = [float(v) for v in vals if v != "n/a"]
if not vals:
    print("n/a")
elif sys.argv[2] == "1":
    print("%.4f" % statistics.median(vals))
else:
    print("%.2f" % statistics.mean(vals))
PY
}

# rss_kb CMD... : peak RSS of one run, in KiB.
rss_kb() {
	if [ -x /usr/bin/time ]; then
		{ /usr/bin/time -v "$@" 2>&1 >/dev/null || true; } | awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}'
	else
		echo "n/a"
	fi
}

mbps() { [ "$1" = n/a ] && echo n/a || python3 -c 'import sys; print("%.1f" % (float(sys.argv[1]) / 1e6 / float(sys.argv[2])))' "$BYTES" "$1"; }
ratio() { { [ "$1" = n/a ] || [ "$2" = n/a ]; } && echo n/a || python3 -c 'import sys; print("%.1f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"; }

# The machine may be shared: interleave the scanners over ROUNDS rounds so
# bursts of foreign load hit them alike, and report medians.
ROUNDS=${ROUNDS:-2}
rm -f "$BENCH_DIR"/times-*.txt
for round in $(seq "$ROUNDS"); do
	log "round $round/$ROUNDS: mamori"
	run_timed mamori $((RUNS / ROUNDS)) 1 "$AGENT" scan --state "$NOSTATE" --engine "$ENGINE" "$CORPUS"
	run_timed mamori-load $((RUNS / ROUNDS)) 1 "$AGENT" scan --state "$NOSTATE" --engine "$ENGINE" "$EMPTY"
	if [ $have_yara = 1 ]; then
		log "round $round/$ROUNDS: yara -p 2"
		run_timed yara $((YARA_RUNS / ROUNDS)) 1 yara -p 2 -r "$DATA/yara/rules.yar" "$CORPUS"
	fi
	if [ $have_clam = 1 ]; then
		log "round $round/$ROUNDS: clamscan (20-60 s per run)"
		run_timed clamscan $(((CLAM_RUNS + ROUNDS - 1) / ROUNDS)) 0 clamscan --no-summary -r -d "$SIGS" "$CORPUS"
		run_timed clamscan-load 1 1 clamscan --no-summary -d "$SIGS" "$EMPTY"
	fi
done
log "peak RSS"
rss_mamori=$(rss_kb "$AGENT" scan --state "$NOSTATE" --engine "$ENGINE" "$CORPUS")
rss_clam=n/a rss_yara=n/a
[ $have_clam = 0 ] || rss_clam=$(rss_kb clamscan --no-summary -r -d "$SIGS" "$CORPUS")
[ $have_yara = 0 ] || rss_yara=$(rss_kb yara -p 2 -r "$DATA/yara/rules.yar" "$CORPUS")
load_inproc=$("$MAMORI" engine info "$ENGINE" | awk -F: '/load\+compile/ {gsub(/^ +/, "", $2); print $2}')

t_mamori=$(stat mamori 1) c_mamori=$(stat mamori 2)
t_clam=$(stat clamscan 1) c_clam=$(stat clamscan 2)
t_yara=$(stat yara 1) c_yara=$(stat yara 2)
t_load=$(stat mamori-load 1) t_clam_load=$(stat clamscan-load 1)
mb_mamori=$(mbps "$t_mamori") mb_clam=$(mbps "$t_clam") mb_yara=$(mbps "$t_yara")
r_clam=$(ratio "$mb_mamori" "$mb_clam") r_yara=$(ratio "$mb_mamori" "$mb_yara")

{
	echo "Scan benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
	echo "corpus:  $FILES files, $BYTES bytes (seed $SEED, scale $SCALE), 65,000 signatures, warm page cache"
	echo "runs:    mamori $RUNS, yara $YARA_RUNS, clamscan $CLAM_RUNS, interleaved over $ROUNDS rounds; load average now $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	printf '%-22s %9s %9s %9s %12s\n' scanner "median s" MB/s "CPU s" "max RSS KiB"
	printf '%-22s %9s %9s %9s %12s\n' "mamori (2 workers)" "$t_mamori" "$mb_mamori" "$c_mamori" "$rss_mamori"
	printf '%-22s %9s %9s %9s %12s\n' "clamscan" "$t_clam" "$mb_clam" "$c_clam" "$rss_clam"
	printf '%-22s %9s %9s %9s %12s\n' "yara -p 2" "$t_yara" "$mb_yara" "$c_yara" "$rss_yara"
	echo
	echo "mamori / clamscan:  ${r_clam}x   (goal >= 15x)"
	echo "mamori / yara -p 2: ${r_yara}x   (goal >= 2x)"
	echo "mamori engine load+compile (in process): $load_inproc   (goal <= 100 ms)"
	echo "mamori process start + engine load + empty scan: ${t_load} s"
	echo "clamscan start + database load + empty scan: ${t_clam_load} s"
} | tee "$OUT"
