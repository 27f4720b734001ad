#!/usr/bin/env bash
# Metrics end to end against a real Prometheus: the shipped configuration and rules pass promtool,
# the scraped text passes `promtool check metrics`, and after real traffic every PromQL expression
# of the Grafana dashboard and of the alert rules runs against Prometheus' HTTP API and returns
# data for each backend that served.
# Usage: metrics_prometheus.sh <scan-server> <scan-client> <repo root>
set -euo pipefail
server_bin=$1
client_bin=$2
repo=$3
source "$(dirname "$0")/lib.sh"

command -v prometheus >/dev/null && command -v promtool >/dev/null ||
  fail "prometheus and promtool are needed (Debian package prometheus; scripts/install-deps.sh)"

promtool check config --syntax-only "$repo/deploy/prometheus/prometheus.yml" >/dev/null ||
  fail "promtool check config"
promtool check rules "$repo/deploy/prometheus/scan-alerts.yml" >/dev/null || fail "promtool check rules"
promtool test rules "$repo/deploy/prometheus/tests/scan-alerts.test.yml" >/dev/null ||
  fail "promtool test rules"

start_server "$server_bin"
curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$e2e_work/scrape.txt" || fail "scrape /metrics"
lint=$(promtool check metrics <"$e2e_work/scrape.txt" 2>&1) || fail "promtool check metrics: $lint"

prometheus_port=$(free_port)
# shellcheck source=scripts/local-prometheus.sh
source "$repo/scripts/local-prometheus.sh"
start_local_prometheus "$e2e_work" "$prometheus_port" "127.0.0.1:$metrics_port" \
  "$repo/deploy/prometheus/scan-alerts.yml" || fail "prometheus did not start"
e2e_pids+=("$prometheus_pid")

# About 20 s of mixed traffic (every dtype, both preferences, some bad input) so that every rate
# window of the queries holds several samples.
end=$((SECONDS + 20))
while [ $SECONDS -lt $end ]; do
  for dtype in f32 bf16 f16 f64; do
    "$client_bin" --target "$target" --shape 2,4,256,64 --dtype "$dtype" --dim 2 >/dev/null ||
      fail "scan $dtype"
  done
  "$client_bin" --target "$target" --shape 2,4,256,64 --backend cpu --dim -2 >/dev/null ||
    fail "scan cpu"
  "$client_bin" --target "$target" --shape 2,4 --dim 5 >/dev/null 2>&1 && fail "bad dim accepted"
  sleep 0.2
done
sleep 3  # let the last scrapes and rule evaluations land

python3 "$(dirname "$0")/check_promql.py" "http://127.0.0.1:$prometheus_port" \
  "$repo/deploy/grafana/dashboards/scan-service.json" "$repo/deploy/prometheus/scan-alerts.yml" ||
  fail "PromQL checks"
# The metrics port against a port scanner, on the real binary: every method and stray path gets an
# HTTP answer (the civetweb exposer died of SIGSEGV on the first 404 or 405), then it still scrapes.
base="http://127.0.0.1:$metrics_port"
for method in POST PUT DELETE OPTIONS PATCH TRACE; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X "$method" "$base/metrics")
  [ "$code" = 405 ] || fail "$method /metrics answered $code, expected 405"
done
for path in / /favicon.ico /metrics/x /index.html; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$base$path")
  [ "$code" = 404 ] || fail "GET $path answered $code, expected 404"
done
curl -sf -I "$base/metrics" >/dev/null || fail "HEAD /metrics"
kill -0 "$server_pid" 2>/dev/null || fail "scan-server died under the metrics-port sweep"
# Read in full before grep: `grep -q` stops at the first match, and under pipefail the curl it cut
# off would fail the pipeline (a flake whenever the scrape outlived the match).
after_sweep=$(curl -sf "$base/metrics") || fail "scrape after the sweep"
grep -q '^scan_requests_total' <<<"$after_sweep" || fail "scrape after the sweep lacks scan_requests_total"

kill -TERM "$server_pid"
echo "e2e metrics: all checks passed"
