#!/usr/bin/env bash
# scan-bench end to end against the benchmark servers: closed and open loop over gRPC (two targets,
# round robin), ScanStream and raw TCP, with JSON, CSV and PNG output; every request must succeed.
# Usage: bench_smoke.sh <scan-bench> <scan-bench-echo> <scan-bench-tcp-echo>
set -euo pipefail
bench=$1 echo_bin=$2 tcp_bin=$3
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "bench_smoke: $*" >&2; exit 1; }
wait_port() { for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done; fail "no port in $1"; }

"$echo_bin" --port-file "$work/echo" 2>/dev/null & pids+=($!)
"$tcp_bin" --port-file "$work/tcp" 2>/dev/null & pids+=($!)
wait_port "$work/echo"; wait_port "$work/tcp"
echo_target=127.0.0.1:$(cat "$work/echo")

timeout 60 "$bench" --target "$echo_target,$echo_target" --mix 4Ki:3,256Ki:1 --concurrency 4 \
  --requests 200 --warmup 0.2 --quiet --json "$work/closed.json" --csv "$work/closed.csv" >"$work/out"
grep -q '"ok": 200, "errors": 0' "$work/closed.json" || fail "closed loop: $(cat "$work/closed.json")"
grep -q 'backend echo' "$work/out" || fail "no per-backend line: $(cat "$work/out")"
[ "$(wc -l <"$work/closed.csv")" = 2 ] || fail "csv: $(cat "$work/closed.csv")"

timeout 60 "$bench" --target "$echo_target" --bytes 64Ki --rate 200,400 --duration 1 --warmup 0.2 \
  --quiet --json "$work/open.json" --plot "$work/plot" >/dev/null
[ "$(grep -c '"mode": "open"' "$work/open.json")" = 2 ] || fail "open loop: $(cat "$work/open.json")"
grep -q '"errors": 0' "$work/open.json" || fail "open loop errors: $(cat "$work/open.json")"
[ -s "$work/plot-cdf.png" ] && [ -s "$work/plot-load.png" ] || fail "plots missing"

timeout 60 "$bench" --target "127.0.0.1:$(cat "$work/tcp")" --protocol tcp --bytes 1Mi \
  --concurrency 2 --requests 50 --warmup 0 --quiet --json "$work/tcp.json" >/dev/null
grep -q '"ok": 50, "errors": 0' "$work/tcp.json" || fail "tcp: $(cat "$work/tcp.json")"

timeout 60 "$bench" --target "$echo_target" --protocol grpc-stream --chunk-bytes 100Ki \
  --bytes 1Mi --concurrency 2 --requests 30 --warmup 0 --quiet --json "$work/stream.json" >/dev/null
grep -q '"ok": 30, "errors": 0' "$work/stream.json" || fail "grpc-stream: $(cat "$work/stream.json")"

if "$bench" --target "$echo_target" --bytes 4KB >/dev/null 2>&1; then fail "bad size accepted"; fi
echo "bench_smoke: OK"
