#!/usr/bin/env bash
# Installs every build and test dependency from Debian 12's archive. Idempotent: packages already
# present are skipped, so README commands and CI can call it on every run.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libspdlog-dev prometheus-cpp-dev libtorch-dev
  # The metrics endpoint's HTTP server (server/metrics/metrics_http.cc): event-driven, per-connection
  # timeouts and limits, instead of prometheus-cpp's civetweb exposer.
  libmicrohttpd-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-format prometheus curl python3 openssl
  # Sanitizer builds and libFuzzer harnesses (scripts/ci-sanitizers.sh): Debian's clang, its
  # sanitizer/libFuzzer runtimes (only recommended by clang, so named here) and llvm-symbolizer
  # (package llvm) for readable sanitizer stacks.
  clang libclang-rt-14-dev llvm
  # Transport benchmarks (bench/service/run.py, scan-bench --plot): the Python comparison server
  # and the PNG plots.
  python3-grpcio python3-numpy python3-protobuf gnuplot-nox
  # The Python client (client/python) and its tests (tests/python): torch for torch tensors and
  # the example, pytest, and pip/setuptools/venv for the offline `pip install ./client/python`.
  # (No python3-grpc-tools: its bundled protoc 3.5 writes stubs newer protobuf refuses; the
  # stubs come from protobuf-compiler above.)
  python3-torch python3-pytest python3-pip python3-setuptools python3-venv
)

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
