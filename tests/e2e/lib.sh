# Shared helpers of the end-to-end scripts (sourced). Everything listens on loopback only.

e2e_work=$(mktemp -d)
e2e_pids=()
e2e_cleanup() {
  for pid in "${e2e_pids[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  done
  rm -rf "$e2e_work"
}
trap e2e_cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  [ -f "$e2e_work/server.log" ] && { echo "--- server log" >&2; tail -50 "$e2e_work/server.log" >&2; }
  exit 1
}

# wait_for_file FILE: until FILE is non-empty, at most 10 s.
wait_for_file() {
  for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done
  return 1
}

# start_server SERVER_BIN [ARGS...]: starts scan-server on free loopback ports; sets server_pid,
# target (HOST:PORT of gRPC) and metrics_port; logs go to $e2e_work/server.log.
start_server() {
  local bin=$1
  shift
  # --warm-start false: the pool's paging-in is covered elsewhere; these need a quick start.
  "$bin" --listen 127.0.0.1:0 --port-file "$e2e_work/port" --warm-start false \
    --metrics-listen 127.0.0.1:0 --metrics-port-file "$e2e_work/metrics_port" \
    "$@" 2>"$e2e_work/server.log" &
  server_pid=$!
  e2e_pids+=("$server_pid")
  wait_for_file "$e2e_work/port" || fail "server did not report its port"
  wait_for_file "$e2e_work/metrics_port" || fail "server did not report its metrics port"
  target=127.0.0.1:$(cat "$e2e_work/port")
  metrics_port=$(cat "$e2e_work/metrics_port")
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
