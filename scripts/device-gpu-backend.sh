#!/usr/bin/env bash
# Run on the GPU machine, from the repository root, through the device tool with .deps-device
# carried (scripts/device-fetch-deps.sh fills it here first):
#
#   bash scripts/device-gpu-backend.sh
#
# Builds the whole server with CUDA and LibTorch, runs the `gpu` tests, then serves from it and
# measures through the real client: a size sweep from 4 KiB to 256 MiB with AUTO (every answer
# checked against float64), the production shape [2,8,32768,128] in float32 and bfloat16 on the GPU,
# the same 256 MiB against one pinned host-to-device copy (PyTorch, same run), and the server's
# routing table (scan-client --info) and GPU metrics. On a machine with several GPUs it first
# sends concurrent requests to the GPUs, every answer checked, and shows how they spread (the GPU
# with the fewest outstanding bytes wins, ties go to the first; SCAN_MULTI_GPU_ONLY=1: that and
# the tests only). summary.md and logs.tar.gz go to $OUT (or /tmp/device-out). Later steps run even if
# earlier ones fail; the exit status says whether all passed.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-/tmp/device-out}
build=${SCAN_DEVICE_BUILD:-/tmp/scan-build-gpu-backend}
# Every log goes here; $out gets summary.md and one archive of them (the device tool brings back
# few files).
logs=/tmp/gpu-backend-logs
mkdir -p "$out" "$logs"
failed=()
summary="$logs/summary.md"
: >"$summary"

# shellcheck source=scripts/device-env.sh
source "$root/scripts/device-env.sh" || exit 1
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  nproc
} 2>&1 | tee "$logs/env.log"

step_logs="$logs"
# shellcheck source=scripts/device-steps.sh
source "$root/scripts/device-steps.sh"

step configure cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DSCAN_BUILD_BENCH=OFF -DSCAN_BUILD_TESTS=ON || exit 1
step build cmake --build "$build" -j "$(nproc)" --target scan-server scan-client scan-bench \
  cuda_backend_test cuda_cumprod_test || exit 1
if [ "${SCAN_SKIP_GPU_TESTS:-0}" != 1 ]; then
  step ctest bash -c "cd '$build' && ctest -L gpu -j 4 --output-on-failure --timeout 300"
  grep -h -e "MiB, run+check" -e "registered .* ms" "$build"/Testing/Temporary/LastTest.log \
    2>/dev/null | tee -a "$summary"
fi

server="$build/server/scan-server"
client="$build/tools/scan-client/scan-client"
bench="$build/bench/load/scan-bench"

finish() {  # summary and logs to $out; the exit status says whether every step passed
  cat "$summary"
  cp "$summary" "$out/"
  tar czf "$out/logs.tar.gz" -C "$logs" .
  if [ ${#failed[@]} -ne 0 ]; then
    echo "device-gpu-backend: FAILED: ${failed[*]}"
    exit 1
  fi
  echo "device-gpu-backend: all steps passed"
  exit 0
}

# Metrics stay on, as operators run it (SCAN_METRICS_PORT=0 turns them off for a one-off A/B).
metrics_port=${SCAN_METRICS_PORT:-19464}
metrics_listen=127.0.0.1:$metrics_port
[ "$metrics_port" = 0 ] && metrics_listen=

# start_server NAME ARGS...: serves on a free port, waits until it answers; sets $port, $pid.
start_server() {
  local name=$1
  shift
  rm -f "$logs/$name.port"
  "$server" --listen 127.0.0.1:0 --port-file "$logs/$name.port" \
    --metrics-listen "$metrics_listen" "$@" >"$logs/server-$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    [ -s "$logs/$name.port" ] && break
    sleep 0.1
  done
  port=$(cat "$logs/$name.port" 2>/dev/null || echo 0)
  [ "$port" != 0 ] || {
    echo "server $name did not start"
    failed+=("server-$name")
    return 1
  }
}

# scan LABEL ARGS...: one scan-client call; appends a summary row.
scan() {
  local label=$1
  shift
  local log="$logs/client.log"
  echo "--- $label: $*" >>"$log"
  if "$client" --target "127.0.0.1:$port" --check --seed 7 "$@" >"$logs/last.txt" 2>&1; then
    :
  else
    failed+=("scan-$label")
  fi
  cat "$logs/last.txt" >>"$log"
  local backend compute total check
  backend=$(awk '/^backend:/ {print $2}' "$logs/last.txt")
  compute=$(sed -n 's/.*compute \([0-9]*\) us.*/\1/p' "$logs/last.txt")
  total=$(sed -n 's/.*total \([0-9]*\) us.*/\1/p' "$logs/last.txt")
  check=$(awk '/^check:/ {print $2}' "$logs/last.txt")
  echo "| $label | $* | ${backend:-?} | ${compute:-?} | ${total:-?} | ${check:-FAILED} |" >>"$summary"
}

# Several GPUs: each request goes to the GPU with the fewest outstanding bytes. Transport dominates
# a request's time, so GPU phases rarely overlap and most requests find the first GPU idle; the
# others take what arrives while it is busy. Every answer must be right either way.
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
if [ "$gpus" -ge 2 ] && start_server multi; then
  "$client" --target "127.0.0.1:$port" --info | tee "$logs/info-multi.txt"
  clients=()
  for seed in 1 2 3 4 5 6 7 8; do
    "$client" --target "127.0.0.1:$port" --check --seed "$seed" --backend gpu \
      --shape 2,8,8192,128 --dtype f32 >"$logs/multi-$seed.txt" 2>&1 &
    clients+=($!)
  done
  wait "${clients[@]}"
  checked=$(grep -l '^check: *OK' "$logs"/multi-*.txt | wc -l)
  [ "$checked" = 8 ] || failed+=("multi-gpu-check")
  used=$(awk '/^backend:/ {print $2}' "$logs"/multi-*.txt | sort | uniq -c | tr '\n' ' ')
  step multi-gpu-bench "$bench" --target "127.0.0.1:$port" --backend gpu --concurrency 4 \
    --bytes 64Mi --requests 48 --warmup 1 --quiet
  {
    echo "### $gpus GPUs: requests sent at once"
    echo
    sed 's/^/    /' "$logs/info-multi.txt"
    echo
    echo "8 concurrent scan-client --check --backend gpu, [2,8,8192,128] f32: $checked of 8 OK;"
    echo "answered by: $used"
    echo
    echo 'scan-bench --backend gpu --concurrency 4 --bytes 64Mi --requests 48:'
    echo
    sed 's/^/    /' "$logs/multi-gpu-bench.log"
    echo
  } >>"$summary"
  kill "$pid"
  wait "$pid"
fi
[ "${SCAN_MULTI_GPU_ONLY:-0}" = 1 ] && finish

if start_server main; then
  "$client" --target "127.0.0.1:$port" --info | tee "$logs/info-start.txt"
  {
    echo '### Startup (server log) and scan-client --info'
    echo
    grep -E "GPU|cuda:|calibrated" "$logs/server-main.log" | cut -c28- | sed 's/^/    /'
    echo
    sed 's/^/    /' "$logs/info-start.txt"
  } >>"$summary"
  {
    echo
    echo '### Routing with AUTO (float32, scanned along dim 2)'
    echo
    echo '| run | arguments | backend | compute us | server total us | check |'
    echo '|---|---|---|---|---|---|'
  } >>"$summary"
  for shape in 1,1,8,128 1,1,128,128 1,2,1024,128 2,8,512,128 2,8,2048,128 2,8,8192,128 \
    2,8,32768,128; do
    scan auto --shape "$shape" --dtype f32
  done
  {
    echo
    echo '### GPU preference, production shape'
    echo
    echo '| run | arguments | backend | compute us | server total us | check |'
    echo '|---|---|---|---|---|---|'
  } >>"$summary"
  # With --gpu-register-pool (the default) the first requests allocate the pool's buffers, which
  # are then registered with CUDA in the background: the runs show how many it takes to warm.
  for run in 1 2 3 4 5 6; do
    scan "gpu-$run" --backend gpu --shape 2,8,32768,128 --dtype f32
  done
  for run in 1 2 3; do
    scan "gpu-$run" --backend gpu --shape 2,8,32768,128 --dtype bf16
  done
  # The same tensor through ScanStream: its buffers come from the same registered pool.
  for run in 1 2 3; do
    scan "gpu-stream-$run" --backend gpu --stream --shape 2,8,32768,128 --dtype f32
  done
  for run in 1 2; do scan "cpu-$run" --backend cpu --shape 2,8,32768,128 --dtype f32; done
  "$client" --target "127.0.0.1:$port" --info | tee "$logs/info-end.txt"
  {
    echo
    echo '### scan-client --info after the runs (models refreshed from observed times)'
    echo
    sed 's/^/    /' "$logs/info-end.txt"
  } >>"$summary"
  # shellcheck disable=SC2015  # metrics are a bonus: neither branch may fail the run
  [ -n "$metrics_listen" ] && python3 - "$metrics_port" >"$logs/metrics.txt" <<'PY' || true
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
for line in text.splitlines():
    if line.startswith(("scan_gpu", "scan_backend_up", "scan_backend_fallbacks", "scan_router_cost",
                        "scan_transfer_duration_seconds_sum", "scan_transfer_duration_seconds_count",
                        "scan_routing_decisions_total")):
        print(line)
PY
  [ -s "$logs/metrics.txt" ] && {
    echo
    echo '### GPU metrics'
    echo
    grep -vE '^scan_router_cost|routing_decisions_total\{.*\} 0$' "$logs/metrics.txt" | sed 's/^/    /'
  } >>"$summary"
  kill "$pid"
  wait "$pid"
  {
    echo
    echo '### Pool registration (server log)'
    echo
    grep -E "register" "$logs/server-main.log" | cut -c28- | sed 's/^/    /'
  } >>"$summary"
fi

# The yardstick: one pinned host-to-device copy of 256 MiB (and the other directions), same run.
PYTHONUNBUFFERED=1 python3 - >"$logs/pcie.txt" 2>&1 <<'PY' || failed+=("pcie")
import statistics, torch
n = 256 << 20
pinned = torch.empty(n, dtype=torch.uint8, pin_memory=True)
pageable = torch.empty(n, dtype=torch.uint8)
device = torch.empty(n, dtype=torch.uint8, device="cuda")
def timed(copy):
    for _ in range(3):
        copy()
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(); copy(); end.record(); end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
for name, copy in [("host memcpy (torch, all threads)", lambda: pageable.copy_(pinned)),
                   ("pinned H2D", lambda: device.copy_(pinned, non_blocking=True)),
                   ("pinned D2H", lambda: pinned.copy_(device, non_blocking=True)),
                   ("pageable H2D", lambda: device.copy_(pageable)),
                   ("pageable D2H", lambda: pageable.copy_(device))]:
    ms = timed(copy)
    print(f"{name}: 256 MiB in {ms:.3f} ms = {n / ms / 1e6:.1f} GB/s")
# What registering a request's own pageable buffer would cost instead of staging copies.
import time
cudart = torch.cuda.cudart()
fresh = torch.ones(n, dtype=torch.uint8)
start = time.perf_counter()
cudart.cudaHostRegister(fresh.data_ptr(), n, 0)
registered = time.perf_counter() - start
start = time.perf_counter()
cudart.cudaHostUnregister(fresh.data_ptr())
print(f"cudaHostRegister of 256 MiB: {registered * 1e3:.2f} ms, unregister "
      f"{(time.perf_counter() - start) * 1e3:.2f} ms")
PY
cat "$logs/pcie.txt"
{
  echo
  echo '### One PCIe copy of 256 MiB (PyTorch, median of 10)'
  echo
  sed 's/^/    /' "$logs/pcie.txt"
} >>"$summary"

# Pipeline settings against the same 256 MiB float32 on the GPU (4 runs each; the first of each is
# a fresh server): staged (the behaviour before --gpu-register-pool) and registered pool buffers.
for setting in "16 16Mi false" "16 8Mi true" "16 16Mi true"; do
  read -r threads chunk register <<<"$setting"
  name="t${threads}-c${chunk}-r${register}"
  if start_server "$name" --gpu-copy-threads "$threads" --gpu-chunk-bytes "$chunk" \
    --gpu-register-pool "$register" --cpu-backend cpu-native; then
    {
      echo
      echo "### --gpu-copy-threads $threads --gpu-chunk-bytes $chunk --gpu-register-pool $register"
      echo
      echo '| run | arguments | backend | compute us | server total us | check |'
      echo '|---|---|---|---|---|---|'
    } >>"$summary"
    for run in 1 2 3 4; do scan "$name-$run" --backend gpu --shape 2,8,32768,128 --dtype f32; done
    kill "$pid"
    wait "$pid"
  fi
done

finish
