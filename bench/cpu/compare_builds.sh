#!/usr/bin/env bash
# Alternates scan_bench_cpu builds (two trees, or one tree under two --isa= settings) round by
# round, so that a noisy shared machine drifts over both alike, and prints per case and build the
# median over rounds of each round's median native and memcpy times.
#
#   bench/cpu/compare_builds.sh ROUNDS THREADS FILTER BENCH [BENCH...]
#
# BENCH is a scan_bench_cpu binary, optionally followed by its flags in the same word
# ("build/release/bench/scan_bench_cpu --isa=avx2"). THREADS and FILTER are scan_bench_cpu's
# --threads= and --filter= values.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
rounds=$1 threads=$2 filter=$3
shift 3
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
for ((round = 1; round <= rounds; round++)); do
  for bench in "$@"; do
    # Word splitting is wanted: BENCH may carry its own flags.
    # shellcheck disable=SC2086
    $bench --threads="$threads" --min-reps=7 --min-seconds=0.2 --filter="$filter" |
      awk -F'|' -v bench="$bench" '/ dim / { print bench "|" $2 "|" $3 "|" $4 "|" $6 }' >>"$raw"
  done
done
/usr/bin/python3 - "$raw" <<'PY'
import collections
import statistics
import sys

native = collections.defaultdict(list)
memcpy = collections.defaultdict(list)
for line in open(sys.argv[1]):
    bench, shape, threads, native_ms, memcpy_ms = (field.strip() for field in line.split("|"))
    native[(shape, threads, bench)].append(float(native_ms))
    memcpy[(shape, threads, bench)].append(float(memcpy_ms))
print("| shape | threads | build | native ms (median) | min | memcpy ms (median) | memcpy / native |")
print("|---|---:|---|---:|---:|---:|---:|")
for key in sorted(native):
    shape, threads, bench = key
    n, m = statistics.median(native[key]), statistics.median(memcpy[key])
    print(f"| {shape} | {threads} | {bench} | {n:.3f} | {min(native[key]):.3f} | {m:.3f} | {m / n:.0%} |")
PY
