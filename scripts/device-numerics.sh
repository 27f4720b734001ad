#!/usr/bin/env bash
# On the GPU machine: the numerics issue's checks and figures in one call.
#   - the `gpu` tests (cuda:0 against both CPU backends, bit for bit, among them);
#   - scan_numerics_report: accuracy against float64 and agreement of torch.cumprod, cpu-torch,
#     cpu-native and cuda:0 on random inputs and MM-Rec's shapes;
#   - cuda_cumprod_bench for this tree and, when SCAN_NUMERICS_BASELINE names the source tree of
#     an earlier revision (e.g. `git archive REV | tar -x -C baseline-src`), for that one too, so
#     that the kernel's speed before and after is measured in one run on one GPU.
# Logs and a summary go to $OUT (default /tmp/device-out). Run from the repository root after
# scripts/device-fetch-deps.sh has filled .deps-device/ (carried).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-/tmp/device-out}
build=${SCAN_DEVICE_BUILD:-/tmp/scan-build-numerics}
mkdir -p "$out"
source "$root/scripts/device-env.sh" || exit 1
failed=()

step_logs="$out"
# shellcheck source=scripts/device-steps.sh
source "$root/scripts/device-steps.sh"

configure_and_build() {  # configure_and_build SOURCE BUILD TARGET...
  local source=$1 dir=$2
  shift 2
  cmake -S "$source" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DSCAN_BUILD_BENCH=ON -DSCAN_BUILD_TESTS=ON &&
    cmake --build "$dir" -j "$(nproc)" --target "$@"
}

step build configure_and_build "$root" "$build" cuda_backend_test cuda_cumprod_test \
  scan_numerics_report cuda_cumprod_bench || exit 1
step gpu-tests bash -c "cd '$build' && ctest -L gpu -j 4 --output-on-failure --timeout 300"
step numerics "$build/bench/scan_numerics_report"
step kernel-bench "$build/bench/cuda_cumprod_bench"
if [ -n "${SCAN_NUMERICS_BASELINE:-}" ]; then
  if step baseline-build configure_and_build "$SCAN_NUMERICS_BASELINE" "$build-baseline" \
    cuda_cumprod_bench; then
    step baseline-kernel-bench "$build-baseline/bench/cuda_cumprod_bench"
  fi
fi

{
  echo "# device-numerics, $(date -u), $(nvidia-smi --query-gpu=name --format=csv,noheader)"
  grep -E "tests passed|tests failed" "$out/gpu-tests.log"
  [ ${#failed[@]} -eq 0 ] && echo "all steps passed" || echo "FAILED: ${failed[*]}"
} | tee "$out/summary.md"
[ ${#failed[@]} -eq 0 ]
