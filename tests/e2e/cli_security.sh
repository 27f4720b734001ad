#!/usr/bin/env bash
# scan-client against a server with mutual TLS and a bearer token, through the shipped binaries:
# the right certificate and token are served, a missing token is UNAUTHENTICATED, health needs no
# token, and the token never reaches the server's log.
# Usage: cli_security.sh <scan-server> <scan-client> <make_test_certs.sh>
set -euo pipefail
server_bin=$1
client_bin=$2
make_certs=$3
source "$(dirname "$0")/lib.sh"

certs=$e2e_work/certs
"$make_certs" "$certs" || fail "certificate generation"
token="e2e-token-$RANDOM$RANDOM$RANDOM"
echo "$token" >"$e2e_work/token"

start_server "$server_bin" --tls-cert "$certs/server.crt" --tls-key "$certs/server.key" \
  --tls-client-ca "$certs/ca.crt" --auth-token-file "$e2e_work/token" --log-level debug
target=localhost:${target##*:}
tls=(--tls-ca "$certs/ca.crt" --tls-cert "$certs/client.crt" --tls-key "$certs/client.key")
client() { timeout 60 "$client_bin" --target "$target" "$@"; }

out=$(client "${tls[@]}" --auth-token-file "$e2e_work/token" --shape 2,8,1024,128 --dtype bf16 \
  --check) || fail "scan over mTLS with token: $out"
grep -q '^check: *OK' <<<"$out" || fail "wrong answer over mTLS: $out"

set +e
client "${tls[@]}" --shape 4 --dim 0 2>"$e2e_work/err"; code=$?
set -e
[ "$code" = 1 ] && grep -q UNAUTHENTICATED "$e2e_work/err" || fail "no token: $(cat "$e2e_work/err")"

[ "$(client "${tls[@]}" --health)" = SERVING ] || fail "health over mTLS without a token"

set +e
client --tls-ca "$certs/ca.crt" --shape 4 --dim 0 --auth-token-file "$e2e_work/token" \
  2>"$e2e_work/err"; code=$?
set -e
[ "$code" = 1 ] || fail "a client without a certificate was served under mTLS"

kill -TERM "$server_pid"
wait "$server_pid" || fail "server exit status"
if grep -q "$token" "$e2e_work/server.log"; then fail "the token appears in the server log"; fi
echo "e2e security: all checks passed"
