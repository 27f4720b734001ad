#!/usr/bin/env bash
# Run HERE (nvcc, no GPU needed): builds the CUDA kernel's gpu tests, benchmark and C-ABI shim for
# sm_90 in build-device-stage/ and copies the three programs into build-device-stage/bin/ (ignored
# as build output), for the device tool to carry to the GPU machine:
#
#   bash scripts/device-stage.sh            # then, there:
#   SCAN_DEVICE_PREBUILT=build-device-stage/bin bash scripts/device-run.sh
#
# They link the CUDA runtime statically and need only the C and C++ runtimes there.
# SCAN_STAGE_BUILD overrides the build directory, SCAN_STAGE_JOBS the parallel jobs (default 2).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${SCAN_STAGE_BUILD:-$root/build-device-stage}
dest=$root/build-device-stage/bin
targets=(cuda_cumprod_test cuda_cumprod_bench scan_cumprod_capi)

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DSCAN_BUILD_TESTS=ON -DSCAN_BUILD_BENCH=ON
fi
cmake --build "$build" -j "${SCAN_STAGE_JOBS:-2}" --target "${targets[@]}"
mkdir -p "$dest"
for name in cuda_cumprod_test cuda_cumprod_bench libscan_cumprod_capi.so; do
  cp "$(find "$build" -name "$name" -type f | head -1)" "$dest/"
done
ls -la "$dest"
