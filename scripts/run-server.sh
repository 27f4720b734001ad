#!/usr/bin/env bash
# Sets up everything on a fresh Debian 12 machine, builds, and starts scan-server in the
# foreground. Extra arguments go to scan-server (see scan-server --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh release
exec build/release/server/scan-server "$@"
