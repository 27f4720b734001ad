#!/usr/bin/env bash
# CI step for issue 10's "bad input" items: the unit and integration suites under ASan + UBSan
# and under TSan, then every libFuzzer harness for a bounded time over its committed seed corpus.
# Three clang builds without CUDA (presets asan, tsan, fuzz; see tests/sanitizers/ for why each
# suppression exists). The fuzz build compiles only the harnesses and what they link.
# Usage: scripts/ci-sanitizers.sh   (SCAN_FUZZ_SECONDS=N: seconds per harness, default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

jobs=$(nproc)
fuzz_seconds=${SCAN_FUZZ_SECONDS:-60}
failed=()
step() { echo "== ci-sanitizers: $* (${SECONDS}s)"; }

# Every stage runs even when an earlier one failed, so one CI run reports all findings.
for preset in asan tsan; do
  step "$preset: build"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  step "$preset: unit and integration suites"
  ctest --preset "$preset" -j "$jobs" || failed+=("$preset")
done

step "fuzz: build"
cmake --preset fuzz -DSCAN_FUZZ_SECONDS="$fuzz_seconds" >/dev/null
cmake --build --preset fuzz -j "$jobs" --target scan_fuzzers
step "fuzz: each harness for ${fuzz_seconds}s"
if ! ctest --preset fuzz -j "$jobs"; then
  failed+=(fuzz)
  # The reproducers are what a developer needs to debug the failure; show where they are.
  find build/fuzz/tests/fuzz/artifacts -type f -exec ls -l {} + || true
fi

if [ ${#failed[@]} -gt 0 ]; then
  step "FAILED: ${failed[*]}"
  exit 1
fi
step "done"
