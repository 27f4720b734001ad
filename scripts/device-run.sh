#!/usr/bin/env bash
# Run on the GPU machine, from the repository root, through the device tool with .deps-device
# carried (scripts/device-fetch-deps.sh fills it here first):
#
#   bash scripts/device-run.sh
#
# Configures and builds the project for sm_90, runs the `gpu` tests and the CUDA benchmark (with
# the torch.cumprod comparison), and leaves every log under $OUT (or /tmp/device-out). Later steps
# run even if earlier ones fail; the exit status says whether all of them passed.
# SCAN_DEVICE_TARGETS overrides the targets built (default: the CUDA kernel's tests and benchmark).
#
# Prebuilt mode saves the device time of configuring and compiling there: build the three programs
# HERE for sm_90 (scripts/device-stage.sh puts them in build-device-stage/bin/), carry that folder
# and no .deps-device, and run
#
#   SCAN_DEVICE_PREBUILT=build-device-stage/bin bash scripts/device-run.sh
#
# The gpu tests then run as 8 GoogleTest shards side by side instead of through ctest.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-/tmp/device-out}
build=${SCAN_DEVICE_BUILD:-/tmp/scan-build-device}
targets=${SCAN_DEVICE_TARGETS:-cuda_cumprod_test cuda_cumprod_bench scan_cumprod_capi}
mkdir -p "$out"
failed=()

prebuilt=${SCAN_DEVICE_PREBUILT:-}
if [ -z "$prebuilt" ]; then
  # shellcheck source=scripts/device-env.sh
  source "$root/scripts/device-env.sh" || exit 1
fi
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.total --format=csv
  nvcc --version | tail -2
  cmake --version | head -1
  python3 -c 'import torch; print("torch", torch.__version__)'
} 2>&1 | tee "$out/env.log"

step() {  # step NAME COMMAND...: runs COMMAND, logs to $out/NAME.log, records a failure
  local name=$1
  shift
  echo "=== $name: $*"
  if ! "$@" 2>&1 | tee "$out/$name.log"; then
    failed+=("$name")
    return 1
  fi
}

# Fallback when the whole project does not configure (parts of it still being written): a wrapper
# project with only the kernels, the gpu tests and the CUDA benchmark, set up as the top level does.
write_kernels_only_project() {
  mkdir -p "$1"
  cat >"$1/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.25)
project(scan-kernels-only LANGUAGES C CXX CUDA)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
option(SCAN_WERROR "" ON)
find_package(CUDAToolkit REQUIRED)
set(SCAN_HAVE_CUDA ON)
include($root/cmake/ScanWarnings.cmake)
find_package(Threads REQUIRED)
add_subdirectory($root/kernels kernels)
enable_testing()
find_package(GTest REQUIRED)
include(GoogleTest)
function(scan_test name)
  cmake_parse_arguments(arg "" "" "SOURCES;LIBS;LABELS" \${ARGN})
  add_executable(\${name} \${arg_SOURCES})
  target_link_libraries(\${name} PRIVATE \${arg_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  scan_warnings(\${name})
  gtest_discover_tests(\${name} DISCOVERY_TIMEOUT 60 PROPERTIES LABELS "\${arg_LABELS}")
endfunction()
include($root/tests/gpu/tests.cmake)
include($root/bench/cuda/bench.cmake)
CMAKE
}

run_benchmarks() {  # run_benchmarks BENCH CAPI
  step bench "$1" --csv "$out/bench.csv"
  PYTHONUNBUFFERED=1 step torch python3 "$root/bench/cuda/torch_cumprod_bench.py" \
    --csv "$out/bench.csv" --capi "$2" --markdown "$out/table.md"
}

gtest_shards() {  # gtest_shards BINARY: 8 shards at once, one log; fails if any shard fails
  local shards=8 pids=() status=0
  for ((i = 0; i < shards; i++)); do
    GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$i "$1" --gtest_brief=1 >"$out/gtest.$i.txt" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  cat "$out"/gtest.*.txt
  rm -f "$out"/gtest.*.txt
  return $status
}

if [ -n "$prebuilt" ]; then
  step gtest gtest_shards "$root/$prebuilt/cuda_cumprod_test"
  run_benchmarks "$root/$prebuilt/cuda_cumprod_bench" "$root/$prebuilt/libscan_cumprod_capi.so"
  if [ ${#failed[@]} -ne 0 ]; then
    echo "device-run: FAILED: ${failed[*]}"
    exit 1
  fi
  echo "device-run: all steps passed"
  exit 0
fi

configure_args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90)
configured=0
if step configure cmake -S "$root" -B "$build" "${configure_args[@]}" -DSCAN_BUILD_TESTS=ON \
  -DSCAN_BUILD_BENCH=ON; then
  configured=1
else
  echo "device-run: the whole project did not configure; building the CUDA kernel parts alone"
  write_kernels_only_project /tmp/scan-kernels-only
  build=/tmp/scan-build-kernels-only
  step configure-kernels-only cmake -S /tmp/scan-kernels-only -B "$build" "${configure_args[@]}" &&
    configured=1
fi

# shellcheck disable=SC2086
if [ $configured -eq 1 ] && step build cmake --build "$build" -j "$(nproc)" --target $targets; then
  bench=$(find "$build" -name cuda_cumprod_bench -type f | head -1)
  capi=$(find "$build" -name libscan_cumprod_capi.so | head -1)
  step ctest bash -c "cd '$build' && ctest -L gpu -j 8 --output-on-failure --timeout 300"
  run_benchmarks "$bench" "$capi"
fi

if [ ${#failed[@]} -ne 0 ]; then
  echo "device-run: FAILED: ${failed[*]}"
  exit 1
fi
echo "device-run: all steps passed"
