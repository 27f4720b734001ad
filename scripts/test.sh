#!/usr/bin/env bash
# Sets up everything on a fresh Debian 12 machine and runs the whole test suite (unit,
# integration over loopback, end to end; GPU tests skip where there is no GPU).
# Usage: scripts/test.sh [preset]
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
bash scripts/build.sh "$preset"
ctest --preset "$preset" -j "$(nproc)"
