#!/usr/bin/env bash
# On the GPU machine, in one short call: build once, then the checks that need a GPU, most
# important first, each under its own time limit, so that a call cut short still reports what ran:
#   1. the `gpu` ctest label (kernel, pipeline, cuda:0 agreeing with both CPU backends), and the
#      CPU kernel tests on this host's instruction sets;
#   2. tests/python/test_gpu.py (CUDA tensors through gRPC and CUDA IPC, across processes);
#   3. scripts/device-shared-memory.sh (system shm and CUDA IPC figures, issue 19);
#   4. cuda_cumprod_bench, with rows in registers and staged in shared memory (issue 21);
#   5. scan_numerics_report (accuracy and cross-backend agreement, issue 18);
#   6. torch_cumprod_bench.py: the kernel beside the device copy, torch.cumprod, a Triton chunked
#      scan and torch.compile, one table (issue 21);
#   7. scan_bench_cpu: cpu-native against torch.cumprod and memcpy at 1 and 2 threads on this
#      host's CPU (AVX-512), the shapes of issue 4 (issue 18 asks for 80% of memcpy there);
#   8. the CUDA kernel tests again with the strided kernel's rows staged in shared memory.
# Logs go to $OUT/logs.tgz (re-packed after each step) and a summary to $OUT/summary.txt.
# Run from the repository root after scripts/device-fetch-deps.sh has filled .deps-device/.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-/tmp/device-out}
logs=/tmp/device-verify
build=${SCAN_DEVICE_BUILD:-/tmp/scan-build-numerics}
mkdir -p "$out" "$logs"
export PYTHONUNBUFFERED=1
source "$root/scripts/device-env.sh" || exit 1

summary="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$summary" 2>&1
# The device tool sends the working tree, and the .git it finds there can be an older one: the
# caller names the commit it sent (SCAN_TREE=<commit> bash scripts/device-verify.sh).
echo "tree ${SCAN_TREE:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null) (device .git; may be stale)}" \
  >>"$summary"
failed=()
timed() {  # timed NAME SECONDS COMMAND...: runs COMMAND with its log in $logs/NAME.log
  local name=$1 limit=$2 start rc
  shift 2
  if [[ " ${SCAN_VERIFY_SKIP:-} " == *" $name "* ]]; then
    echo "$name: skipped (SCAN_VERIFY_SKIP)" | tee -a "$summary"
    return
  fi
  start=$(date +%s)
  timeout "$limit" "$@" >"$logs/$name.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || failed+=("$name")
  echo "$name: rc=$rc in $(($(date +%s) - start)) s; $(tail -1 "$logs/$name.log")" | tee -a "$summary"
  tar czf "$out/logs.tgz" -C "$(dirname "$logs")" "$(basename "$logs")"
}

# SCAN_VERIFY_QUICK=1: the tests alone (steps 1 and 2), for a call with little device time left.
# SCAN_VERIFY_SKIP="gpu-tests numerics ...": steps (by the names below) already seen to pass.
targets="cuda_backend_test cuda_cumprod_test scan_kernels_cpu_test scan-server"
[ -n "${SCAN_VERIFY_QUICK:-}" ] || targets+=" scan_numerics_report cuda_cumprod_bench scan_cumprod_capi scan-client scan-bench scan_bench_cpu"
timed build 420 bash -c "cmake -S '$root' -B '$build' -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DSCAN_BUILD_BENCH=ON -DSCAN_BUILD_TESTS=ON &&
  cmake --build '$build' -j $(nproc) --target $targets" || exit 1
timed gpu-tests 100 bash -c "cd '$build' && ctest -L gpu -j 4 --output-on-failure --timeout 95"
# The CPU kernels on this host's CPU: the AVX-512 builds (float64's compensated rows among them)
# run here only, since the CI machine and the development VM have AVX2 alone.
timed cpu-kernel-tests 60 "$build/tests/scan_kernels_cpu_test" --gtest_brief=1
timed python-gpu 60 env SCAN_SERVER="$build/server/scan-server" \
  PYTHONPATH="$root/client/python:$root/tests/python" \
  python3 -m pytest -q -p no:cacheprovider "$root/tests/python/test_gpu.py"
if [ -z "${SCAN_VERIFY_QUICK:-}" ]; then
timed shared-memory 240 env SCAN_DEVICE_BUILD="$build" SCAN_SKIP_PYTHON_GPU_TESTS=1 \
  OUT="$logs/shared-memory" bash "$root/scripts/device-shared-memory.sh"
timed kernel-bench 40 "$build/bench/cuda_cumprod_bench" --csv "$logs/kernel-bench.csv"
timed kernel-bench-staged 40 env SCAN_CUDA_STRIDED_STAGING=shared "$build/bench/cuda_cumprod_bench" \
  --csv "$logs/kernel-bench-staged.csv"
timed numerics 180 "$build/bench/scan_numerics_report"
timed anchors 200 python3 "$root/bench/cuda/torch_cumprod_bench.py" --csv "$logs/kernel-bench.csv" \
  --capi "$build/bench/libscan_cumprod_capi.so" --markdown "$logs/kernel-table.md"
timed cpu-bench 150 "$build/bench/scan_bench_cpu" --threads=1,2 --min-reps=5 \
  --filter="${SCAN_VERIFY_CPU_BENCH_FILTER:-[2,8,|dim -1}"
fi
# The strided kernel stages rows in shared memory only from 8 MiB on sm_90 by default
# (policy.cuh), which the gpu label's large shapes cover: last, the kernel tests once more with
# staging forced on every size (slow: about 150 s).
timed staged-tests 150 env SCAN_CUDA_STRIDED_STAGING=shared "$build/tests/cuda_cumprod_test"
[ ${#failed[@]} -eq 0 ] && echo "all steps passed" >>"$summary" || echo "FAILED: ${failed[*]}" >>"$summary"
cat "$summary"
[ ${#failed[@]} -eq 0 ]
