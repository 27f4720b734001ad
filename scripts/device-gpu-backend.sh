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
# routing table (scan-client --info) and GPU metrics. Logs and summary.md go to $OUT (or
# /tmp/device-out). Later steps run even if earlier ones fail; the exit status says whether all
# passed.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-/tmp/device-out}
build=${SCAN_DEVICE_BUILD:-/tmp/scan-build-gpu-backend}
mkdir -p "$out"
failed=()
summary="$out/summary.md"
: >"$summary"

# shellcheck source=scripts/device-env.sh
source "$root/scripts/device-env.sh" || exit 1
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  nproc
} 2>&1 | tee "$out/env.log"

step() {  # step NAME COMMAND...: runs COMMAND, logs to $out/NAME.log, records a failure
  local name=$1
  shift
  echo "=== $name: $*"
  if ! "$@" >"$out/$name.log" 2>&1; then
    failed+=("$name")
    tail -40 "$out/$name.log"
    return 1
  fi
  tail -5 "$out/$name.log"
}

step configure cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DSCAN_BUILD_BENCH=OFF -DSCAN_BUILD_TESTS=ON || exit 1
step build cmake --build "$build" -j "$(nproc)" --target scan-server scan-client \
  cuda_backend_test cuda_cumprod_test || exit 1
step ctest bash -c "cd '$build' && ctest -L gpu -j 4 --output-on-failure --timeout 300"
grep -h "MiB, run+check" "$build"/Testing/Temporary/LastTest.log 2>/dev/null | tee -a "$summary"

server="$build/server/scan-server"
client="$build/client/scan-client"

# start_server NAME ARGS...: serves on a free port, waits until it answers; sets $port, $pid.
start_server() {
  local name=$1
  shift
  rm -f "$out/$name.port" "$out/$name.metrics-port"
  "$server" --listen 127.0.0.1:0 --port-file "$out/$name.port" --metrics-listen 127.0.0.1:0 \
    --metrics-port-file "$out/$name.metrics-port" "$@" >"$out/server-$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    [ -s "$out/$name.port" ] && break
    sleep 0.1
  done
  port=$(cat "$out/$name.port" 2>/dev/null || echo 0)
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
  local log="$out/client.log"
  echo "--- $label: $*" >>"$log"
  if "$client" --target "127.0.0.1:$port" --check --seed 7 "$@" >"$out/last.txt" 2>&1; then
    :
  else
    failed+=("scan-$label")
  fi
  cat "$out/last.txt" >>"$log"
  local backend compute total check
  backend=$(awk '/^backend:/ {print $2}' "$out/last.txt")
  compute=$(sed -n 's/.*compute \([0-9]*\) us.*/\1/p' "$out/last.txt")
  total=$(sed -n 's/.*total \([0-9]*\) us.*/\1/p' "$out/last.txt")
  check=$(awk '/^check:/ {print $2}' "$out/last.txt")
  echo "| $label | $* | ${backend:-?} | ${compute:-?} | ${total:-?} | ${check:-FAILED} |" >>"$summary"
}

if start_server main; then
  "$client" --target "127.0.0.1:$port" --info | tee "$out/info-start.txt"
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
  for dtype in f32 bf16; do
    for run in 1 2 3; do
      scan "gpu-$run" --backend gpu --shape 2,8,32768,128 --dtype "$dtype"
    done
  done
  for run in 1 2; do scan "cpu-$run" --backend cpu --shape 2,8,32768,128 --dtype f32; done
  "$client" --target "127.0.0.1:$port" --info | tee "$out/info-end.txt"
  python3 - "$(cat "$out/main.metrics-port")" >"$out/metrics.txt" <<'PY' || true
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
for line in text.splitlines():
    if line.startswith(("scan_gpu", "scan_backend_up", "scan_backend_fallbacks", "scan_router_cost",
                        "scan_transfer_duration_seconds_sum", "scan_transfer_duration_seconds_count",
                        "scan_routing_decisions_total")):
        print(line)
PY
  kill "$pid"
  wait "$pid"
fi

# The yardstick: one pinned host-to-device copy of 256 MiB (and the other directions), same run.
PYTHONUNBUFFERED=1 python3 - >"$out/pcie.txt" 2>&1 <<'PY' || failed+=("pcie")
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
for name, copy in [("pinned H2D", lambda: device.copy_(pinned, non_blocking=True)),
                   ("pinned D2H", lambda: pinned.copy_(device, non_blocking=True)),
                   ("pageable H2D", lambda: device.copy_(pageable)),
                   ("pageable D2H", lambda: pageable.copy_(device))]:
    ms = timed(copy)
    print(f"{name}: 256 MiB in {ms:.3f} ms = {n / ms / 1e6:.1f} GB/s")
PY
cat "$out/pcie.txt"
{
  echo
  echo '### One PCIe copy of 256 MiB (PyTorch, median of 10)'
  echo
  sed 's/^/    /' "$out/pcie.txt"
} >>"$summary"

# Pipeline settings against the same 256 MiB float32 on the GPU (3 runs each).
for setting in "8 8Mi" "16 8Mi" "8 16Mi" "16 32Mi"; do
  read -r threads chunk <<<"$setting"
  name="t${threads}-c${chunk}"
  if start_server "$name" --gpu-copy-threads "$threads" --gpu-chunk-bytes "$chunk" --cpu-backend cpu-native; then
    {
      echo
      echo "### --gpu-copy-threads $threads --gpu-chunk-bytes $chunk"
      echo
      echo '| run | arguments | backend | compute us | server total us | check |'
      echo '|---|---|---|---|---|---|'
    } >>"$summary"
    for run in 1 2 3; do scan "$name-$run" --backend gpu --shape 2,8,32768,128 --dtype f32; done
    kill "$pid"
    wait "$pid"
  fi
done

cat "$summary"
if [ ${#failed[@]} -ne 0 ]; then
  echo "device-gpu-backend: FAILED: ${failed[*]}"
  exit 1
fi
echo "device-gpu-backend: all steps passed"
