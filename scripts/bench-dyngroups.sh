#!/usr/bin/env bash
# Dynamic group evaluation at scale: re-evaluating 100 dynamic groups over
# 20,000 computers after their templates change (time and CPU), against one
# group and one computer's change, in the same run on this machine.
#
#   scripts/bench-dyngroups.sh                        # 20,000 computers, 3 runs
#   COMPUTERS=2000 COUNT=5 scripts/bench-dyngroups.sh
#   BENCH='DynGroupsScale/all-100' PROFILE=1 scripts/bench-dyngroups.sh
#
# Runs BenchmarkDynGroupsScale (internal/dyngroup/scale_bench_test.go, which
# describes the dataset, the scenarios and the metrics) with -benchtime=1x
# -count=$COUNT and prints the median of each metric per scenario, with
# ratios to "one-group/software" (one group's template changes; its rules
# read the software inventory). The dataset is built once (about a minute
# and a half, ~550 MB) and cached in $BENCH_DIR; each run works on a fresh
# copy opened with synchronous=FULL. The machine is usually shared: compare
# ratios and CPU time rather than wall time across runs.
# Raw output goes to $BENCH_DIR/results-<time>.txt; PROFILE=1 also writes a
# CPU profile next to it (go tool pprof -top $BENCH_DIR/dyngroup.test <file>).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/mamori-bench-dyngroups}
COMPUTERS=${COMPUTERS:-20000}
COUNT=${COUNT:-3}
BENCH=${BENCH:-DynGroupsScale}
GO=${GO:-go}

mkdir -p "$BENCH_DIR"
stamp=$(date +%Y%m%d-%H%M%S)
OUT=$BENCH_DIR/results-$stamp.txt
args=(test -run '^$' -bench "$BENCH" -benchtime=1x -count="$COUNT" -timeout 120m)
if [ -n "${PROFILE:-}" ]; then
	args+=(-cpuprofile "$BENCH_DIR/cpu-$stamp.prof" -o "$BENCH_DIR/dyngroup.test")
fi
args+=(./internal/dyngroup)

{
	echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
	echo "# $($GO version); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# MAMORI_BENCH_DYNGROUPS=1 MAMORI_BENCH_DYNGROUPS_DIR=$BENCH_DIR MAMORI_BENCH_DYNGROUPS_COMPUTERS=$COMPUTERS $GO ${args[*]}"
} | tee "$OUT"

cd "$REPO"
MAMORI_BENCH_DYNGROUPS=1 MAMORI_BENCH_DYNGROUPS_DIR=$BENCH_DIR MAMORI_BENCH_DYNGROUPS_COMPUTERS=$COMPUTERS \
	"$GO" "${args[@]}" 2>&1 | tee -a "$OUT" | grep -E '^(Benchmark|ok|FAIL|PASS|---|panic)|built the dataset|seeded|first evaluation' || true
[ "${PIPESTATUS[0]}" = 0 ] || { echo "bench-dyngroups: go test failed, see $OUT" >&2; exit 1; }
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT"

echo
echo "Medians of $COUNT runs, $COMPUTERS computers, 100 dynamic groups (raw: $OUT)"
awk '
function median(s,   a, n, i, j, t) {
	n = split(s, a, " ")
	for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
/^Benchmark[^ ]*\// && $3 ~ /^[0-9.]+$/ {
	name = $1; sub(/^Benchmark[^\/]*\//, "", name); sub(/-[0-9]+$/, "", name)
	if (!(name in seen)) { seen[name] = 1; order[++n] = name }
	for (i = 3; i < NF; i += 2) v[name, $(i + 1)] = v[name, $(i + 1)] " " $i
	runs[name]++
}
END {
	base = "one-group/software"
	bw = median(v[base, "wall-ms"]); bc = median(v[base, "cpu-ms"])
	printf "%-24s %4s %9s %9s %6s %9s %9s %9s %9s %9s %8s %6s %8s %9s\n", "scenario", "runs", "wall s", "cpu s", "cpu/w", "wall x1g", "cpu x1g", "heap MiB", "rss MiB", "rows chg", "write tx", "passes", "read MiB", "wrote MiB"
	for (k = 1; k <= n; k++) {
		s = order[k]; w = median(v[s, "wall-ms"]); c = median(v[s, "cpu-ms"])
		printf "%-24s %4d %9.3f %9.3f %6.2f %9s %9s %9.1f %9.1f %9d %8d %6d %8.1f %9.1f\n", s, runs[s], w / 1000, c / 1000, (w > 0 ? c / w : 0),
			(bw > 0 ? sprintf("%.3f", w / bw) : "-"), (bc > 0 ? sprintf("%.3f", c / bc) : "-"),
			median(v[s, "heap-peak-MiB"]), median(v[s, "rss-peak-MiB"]), median(v[s, "rows-changed"]), median(v[s, "write-tx"]),
			median(v[s, "passes"]), median(v[s, "read-MiB"]), median(v[s, "io-write-MiB"])
	}
	printf "x1g: ratio to %s (same run). cpu = process user+sys; heap/rss = peak during the operation;\n", base
	printf "read = inventory JSON read; wrote = bytes written by the process (WAL, checkpoints).\n"
}' "$OUT" | tee -a "$OUT"
