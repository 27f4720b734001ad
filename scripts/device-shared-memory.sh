#!/usr/bin/env bash
# On the GPU machine: shared memory with the server's default flags plus --allow-shared-memory.
#   - system shm through the GPU path: MM-Rec's production shape in f32 and bf16 on the GPU (the
#     mapping is registered with CUDA, so the GPU copies it by DMA) checked against float64, and
#     Scan over gRPC against system shm side by side (scan-bench, GPU-preferred and AUTO);
#   - CUDA IPC from the Python client: tests/python/test_gpu.py (CUDA tensors through gRPC and
#     through CUDA IPC, the server in another process), and client/python/bench/vs_torch.py,
#     client.cumprod of CUDA tensors against torch.cumprod on the same GPU, gRPC and CUDA IPC.
# Logs and a summary go to $OUT. Builds into $SCAN_DEVICE_BUILD (default
# /tmp/scan-build-numerics, shared with device-numerics.sh).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-/tmp/device-out}
build=${SCAN_DEVICE_BUILD:-/tmp/scan-build-numerics}
mkdir -p "$out"
source "$root/scripts/device-env.sh" || exit 1
failed=()

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DSCAN_BUILD_BENCH=ON -DSCAN_BUILD_TESTS=ON >"$out/shm-build.log" 2>&1 &&
  cmake --build "$build" -j "$(nproc)" --target scan-server scan-client scan-bench \
    >>"$out/shm-build.log" 2>&1 || { tail -30 "$out/shm-build.log"; exit 1; }

port_file=$(mktemp)
"$build/server/scan-server" --allow-shared-memory true --port-file "$port_file" \
  >"$out/shm-server.log" 2>&1 &
server=$!
for _ in $(seq 600); do [ -s "$port_file" ] && break; sleep 0.1; done
target=127.0.0.1:$(cat "$port_file")
summary="$out/shm-summary.md"
{
  echo "# system shared memory on the GPU host, $(date -u)"
  echo
  echo '```'
} >"$summary"
# SCAN_SHM_SKIP_SYSTEM=1 leaves out the system shm runs (already measured), SCAN_SHM_MODES picks
# vs_torch.py's transports (default "off cuda"), for a call short of device time.
system_dtypes="f32 bf16" system_backends="gpu auto"
[ -z "${SCAN_SHM_SKIP_SYSTEM:-}" ] || system_dtypes='' system_backends=''
for dtype in $system_dtypes; do
  for backend in $system_backends; do
    if "$build/tools/scan-client/scan-client" --target "$target" --shared-memory system \
      --shape 2,8,32768,128 --dim 2 --dtype "$dtype" --backend "$backend" --check \
      >"$out/shm-client-$dtype-$backend.log" 2>&1; then
      echo "scan-client $dtype $backend: $(grep -E '^(backend|check)' "$out/shm-client-$dtype-$backend.log" | tr '\n' ' ')" >>"$summary"
    else
      failed+=("client-$dtype-$backend")
      echo "scan-client $dtype $backend FAILED: $(tail -3 "$out/shm-client-$dtype-$backend.log")" >>"$summary"
    fi
  done
done
for backend in $system_backends; do
  for bytes in 64Mi 256Mi; do
    for protocol in grpc system-shm; do
      log="$out/shm-bench-$backend-$bytes-$protocol.log"
      "$build/bench/load/scan-bench" --target "$target" --protocol "$protocol" --bytes "$bytes" \
        --backend "$backend" --duration 4 --warmup 1 --quiet >"$log" 2>&1 || failed+=("bench-$backend-$bytes-$protocol")
      echo "scan-bench $backend $bytes $protocol: $(grep -E 'latency ms|server compute|backend ' "$log" | tr -s ' ' | tr '\n' ';')" >>"$summary"
    done
  done
done
python=${SCAN_PYTHON:-python3}
for mode in ${SCAN_SHM_MODES:-off cuda}; do
  if PYTHONPATH="$root/client/python" "$python" "$root/client/python/bench/vs_torch.py" \
    --target "$target" --repeats 10 --shared-memory "$mode" >"$out/vs-torch-$mode.log" 2>&1; then
    { echo "vs_torch.py --shared-memory $mode:"; cat "$out/vs-torch-$mode.log"; } >>"$summary"
  else
    failed+=("vs-torch-$mode")
    { echo "vs_torch.py --shared-memory $mode FAILED:"; tail -20 "$out/vs-torch-$mode.log"; } >>"$summary"
  fi
done
curl -s "http://127.0.0.1:9464/metrics" | grep -E '^scan_shared_memory|transport="system-shm"' | grep -E '_count|^scan_shared' >>"$summary"
echo '```' >>"$summary"
kill "$server"
wait "$server"
if [ -n "${SCAN_SKIP_PYTHON_GPU_TESTS:-}" ]; then
  echo "python test_gpu.py: skipped (SCAN_SKIP_PYTHON_GPU_TESTS; scripts/device-verify.sh runs it)" >>"$summary"
elif SCAN_SERVER="$build/server/scan-server" PYTHONPATH="$root/client/python:$root/tests/python" \
  "$python" -m pytest -q -p no:cacheprovider "$root/tests/python/test_gpu.py" \
  >"$out/python-gpu-tests.log" 2>&1; then
  echo "python test_gpu.py: $(tail -1 "$out/python-gpu-tests.log")" >>"$summary"
else
  failed+=(python-gpu-tests)
  { echo "python test_gpu.py FAILED:"; tail -30 "$out/python-gpu-tests.log"; } >>"$summary"
fi
[ ${#failed[@]} -eq 0 ] && echo "all steps passed" >>"$summary" || echo "FAILED: ${failed[*]}" >>"$summary"
cat "$summary"
[ ${#failed[@]} -eq 0 ]
