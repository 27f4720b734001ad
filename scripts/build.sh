#!/usr/bin/env bash
# Installs the dependencies (Debian 12 packages) and builds everything with the given CMake preset
# (default: release). Usage: scripts/build.sh [preset]
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
bash scripts/install-deps.sh
cmake --preset "$preset"
cmake --build --preset "$preset" -j "$(nproc)"
