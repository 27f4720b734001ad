# shellcheck shell=bash
# Sourced on the GPU machine from the repository root (bash): unpacks the .deb files that
# scripts/device-fetch-deps.sh downloaded into /tmp/deps, without installing them (nothing outside
# /tmp is touched), and points compilers, CMake, pkg-config and the loader at them and at the
# LibTorch that ships with the machine's PyTorch.
_scan_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_scan_deps=/tmp/deps
_scan_multiarch=$_scan_deps/usr/lib/x86_64-linux-gnu

if [ ! -d "$_scan_root/.deps-device" ]; then
  echo "device-env: $_scan_root/.deps-device is missing: run scripts/device-fetch-deps.sh here and" \
    "carry .deps-device" >&2
  # shellcheck disable=SC2317  # exit only when run instead of sourced
  return 1 2>/dev/null || exit 1
fi
mkdir -p "$_scan_deps"
for _scan_deb in "$_scan_root"/.deps-device/*.deb; do
  dpkg -x "$_scan_deb" "$_scan_deps"
done

_scan_torch=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
export CMAKE_PREFIX_PATH="$_scan_deps/usr${_scan_torch:+:$_scan_torch}"
export LD_LIBRARY_PATH="$_scan_multiarch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LIBRARY_PATH="$_scan_multiarch${LIBRARY_PATH:+:$LIBRARY_PATH}"
export PATH="$_scan_deps/usr/bin:$PATH"
# The packages' .pc files say prefix=/usr; the sysroot makes pkg-config prepend /tmp/deps.
export PKG_CONFIG_PATH="$_scan_multiarch/pkgconfig:$_scan_deps/usr/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$_scan_deps"
unset _scan_root _scan_deps _scan_multiarch _scan_deb _scan_torch
