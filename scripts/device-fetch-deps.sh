#!/usr/bin/env bash
# Run HERE (a machine with Debian's archive), before a device run: downloads the .deb files the
# project's build needs into .deps-device/ (git-ignored). The GPU machine has no network; the
# device tool carries that folder there, where scripts/device-env.sh unpacks it without installing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$root/.deps-device"

packages=(
  libgrpc++1.51 libgrpc29 libgrpc++-dev libgrpc-dev protobuf-compiler-grpc
  libabsl20220623 libabsl-dev libre2-9 libre2-dev libc-ares2 libc-ares-dev
  prometheus-cpp-dev libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0
  libcivetweb1 libcivetweb-dev civetweb libmicrohttpd12 libmicrohttpd-dev
  libspdlog-dev libspdlog1.10 libfmt-dev libfmt9
  libprotobuf-dev libprotobuf32 libprotobuf-lite32 libprotoc32 protobuf-compiler
  libgtest-dev libgmock-dev googletest libbenchmark-dev libbenchmark1debian
  libssl-dev zlib1g-dev libcurl4-openssl-dev
  # A real Prometheus for scripts/device-acceptance.sh: Debian ships it statically linked.
  prometheus
)

mkdir -p "$dest"
cd "$dest"
missing=()
for package in "${packages[@]}"; do
  compgen -G "${package}_*.deb" >/dev/null || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "device-fetch-deps: all ${#packages[@]} packages already in $dest"
  exit 0
fi
# Package lists may be stale or absent on a fresh machine.
apt-get download "${missing[@]}" 2>/dev/null || {
  apt-get update -q
  apt-get download "${missing[@]}"
}
echo "device-fetch-deps: $(find "$dest" -name "*.deb" | wc -l) packages, $(du -sh "$dest" | cut -f1) in $dest"
