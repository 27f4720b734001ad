#!/usr/bin/env bash
# End to end through the shipped binaries: start scan-server on a free loopback port, drive it
# with scan-client (checks, health, errors, .npy files, ScanStream), then stop it with SIGTERM while a
# request is in flight and require that request to finish and the server to exit 0.
# Usage: cli_check.sh <scan-server> <scan-client>
set -euo pipefail
server_bin=$1
client_bin=$2
source "$(dirname "$0")/lib.sh"
work=$e2e_work

start_server "$server_bin" --log-format json --log-level debug --shutdown-grace-seconds 20
client() { timeout 120 "$client_bin" --target "$target" "$@"; }

[ "$(client --health)" = SERVING ] || fail "health of the server"
[ "$(client --health scan.v1.ScanService)" = SERVING ] || fail "health of scan.v1.ScanService"

for dtype in f32 bf16 f16 f64; do
  out=$(client --shape 2,8,1024,128 --dtype "$dtype" --dim 2 --check) || fail "check $dtype: $out"
  grep -q '^check: *OK' <<<"$out" || fail "check $dtype did not report OK: $out"
  grep -qE '^backend: *cpu-(native|torch)' <<<"$out" || fail "backend not reported: $out"
done
client --shape 5,7 --dim -1 --check >/dev/null || fail "negative dim"
# ScanStream: chunks that split elements, and the result checked like any other.
out=$(client --shape 2,8,1031,64 --dtype bf16 --dim 2 --chunk-bytes 100001 --check) ||
  fail "stream: $out"
grep -q '^check: *OK' <<<"$out" && grep -q '^rpc: *ScanStream' <<<"$out" || fail "stream: $out"

set +e
client --shape 2,3 --dim 2 2>"$work/err"; code=$?
set -e
[ "$code" = 1 ] && grep -q 'INVALID_ARGUMENT: dim' "$work/err" || fail "bad dim: exit $code $(cat "$work/err")"
set +e
client --shape 4 --dim 0 --backend gpu 2>"$work/err"; code=$?
set -e
[ "$code" = 1 ] && grep -q FAILED_PRECONDITION "$work/err" || fail "gpu without gpu: $(cat "$work/err")"

# .npy in and out: the saved result, sent back through --input, must match a fresh scan.
client --shape 3,11,4 --dtype f64 --dim 1 --seed 7 --output "$work/first.npy" >/dev/null
client --input "$work/first.npy" --dim 1 --check --output "$work/second.npy" >/dev/null ||
  fail ".npy round trip"
[ -s "$work/second.npy" ] || fail "no .npy written"

# Graceful shutdown: a large request in flight when SIGTERM arrives still completes.
started_before=$(grep -c '"message":"scan started' "$work/server.log" || true)
client --shape 2,8,16384,128 --dtype f64 --check >"$work/inflight.out" 2>&1 &
inflight_pid=$!
for _ in $(seq 300); do
  [ "$(grep -c '"message":"scan started' "$work/server.log" || true)" -gt "$started_before" ] && break
  sleep 0.05
done
kill -TERM "$server_pid"
wait "$inflight_pid" || fail "in-flight request lost during shutdown: $(cat "$work/inflight.out")"
grep -q '^check: *OK' "$work/inflight.out" || fail "in-flight result wrong"
set +e
wait "$server_pid"; code=$?
set -e
[ "$code" = 0 ] || fail "server exited $code after SIGTERM"
grep -q '"message":"scan-server stopped"' "$work/server.log" || fail "no clean stop in the log"
echo "e2e: all checks passed"
