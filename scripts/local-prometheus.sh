# shellcheck shell=bash
# Sourced: start_local_prometheus DIR PORT METRICS_TARGET RULES_FILE starts a real Prometheus on
# 127.0.0.1:PORT that scrapes METRICS_TARGET (HOST:PORT) every second and evaluates RULES_FILE,
# keeping its config, data and log in DIR; sets $prometheus_pid and returns once it is ready
# (non-zero, with its log on stderr, if it does not get there within 20 s). Used by
# tests/e2e/metrics_prometheus.sh and scripts/device-acceptance.sh.
start_local_prometheus() {
  local dir=$1 port=$2 target=$3 rules=$4
  cat >"$dir/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $rules
scrape_configs:
  - job_name: scan-service
    static_configs:
      - targets: ["$target"]
YAML
  prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/tsdb" \
    --web.listen-address="127.0.0.1:$port" --log.level=warn 2>"$dir/prometheus.log" &
  prometheus_pid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/-/ready" >/dev/null && return 0
    sleep 0.2
  done
  cat "$dir/prometheus.log" >&2
  return 1
}
