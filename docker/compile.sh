#!/usr/bin/env bash
# Runs inside the image's build stages (docker/Dockerfile): a Release build of the server and the
# client with the given CMake preset, installed under /opt/scan-service, plus the list of Debian
# packages that the installed binaries need at run time (the runtime stage installs exactly those,
# so it carries no compiler and no -dev package, and nothing has to be kept in sync by hand).
# Usage: docker/compile.sh PRESET [expect-cuda]
set -euo pipefail
preset=$1
expect_cuda=${2:-}
prefix=/opt/scan-service

# Tests and benchmarks are CI's business, not the image's: leaving them out halves the build.
cmake --preset "$preset" -DSCAN_BUILD_TESTS=OFF -DSCAN_BUILD_BENCH=OFF
build_dir=build/$preset
if [ "$expect_cuda" = expect-cuda ] && ! compgen -G "$build_dir/CMakeFiles/*/CMakeCUDACompiler.cmake" >/dev/null; then
  # CMake enabled no CUDA: nvcc was not found, and this would be a CPU-only "cuda" image.
  echo "compile.sh: CUDA is not enabled; the cuda image needs the toolkit in /usr/local/cuda" >&2
  exit 1
fi
cmake --build "$build_dir" -j "$(nproc)"
cmake --install "$build_dir" --prefix "$prefix" --strip
ccache --show-stats 2>/dev/null | grep -Ei 'hits|misses' || true
if [ "$expect_cuda" = expect-cuda ]; then
  # Informational: the server carries device code once a CUDA backend links the kernels.
  if objdump -h "$prefix/bin/scan-server" | grep -q '\.nv_fatbin'; then
    echo "compile.sh: scan-server contains CUDA device code"
  else
    echo "compile.sh: scan-server contains no CUDA device code (no CUDA backend linked yet)"
  fi
fi

# Map the shared libraries that the binaries link directly (their NEEDED entries) to the Debian
# packages that ship them; apt brings the rest through those packages' dependencies. Debian 12 has
# a merged /usr, but dpkg records some libraries under /lib, and some paths are /etc/alternatives
# links (libblas.so.3): try both spellings of the path and of the file it resolves to.
# libcuda.so.1 is the one library allowed to be missing: the NVIDIA Container Toolkit mounts it from
# the host (and the statically linked CUDA runtime only dlopen()s it).
owner_of() {
  local candidate spelling owner
  for candidate in "$1" "$(readlink -f "$1")"; do
    for spelling in "$candidate" "/usr$candidate" "${candidate#/usr}"; do
      owner=$(dpkg -S "$spelling" 2>/dev/null | sed -n 1p) && { echo "${owner%%:*}"; return; }
    done
  done
  echo "compile.sh: no Debian package ships $1" >&2
  return 1
}
packages=()
for binary in "$prefix"/bin/*; do
  resolved=$(ldd "$binary")
  for lib in $(objdump -p "$binary" | awk '$1 == "NEEDED" {print $2}'); do
    # "libfoo.so.1 => /path (addr)", or "/path/ld-linux-x86-64.so.2 (addr)" for the loader, which
    # the statically linked CUDA runtime names explicitly.
    path=$(awk -v lib="$lib" '
      $1 == lib && $2 == "=>" && !found {print $3; found = 1}
      substr($1, 1, 1) == "/" && substr($1, length($1) - length(lib)) == "/" lib && !found {print $1; found = 1}
    ' <<<"$resolved")
    if [ "$path" = "not" ] || [ -z "$path" ]; then
      [ "$lib" = libcuda.so.1 ] && continue
      echo "compile.sh: $binary needs $lib, which is not installed" >&2
      exit 1
    fi
    owner=$(owner_of "$path")
    packages+=("$owner")
  done
done
mkdir -p "$prefix/share/scan-service"
printf '%s\n' "${packages[@]}" | sort -u > "$prefix/share/scan-service/runtime-packages.txt"
echo "compile.sh: runtime packages: $(tr '\n' ' ' < "$prefix/share/scan-service/runtime-packages.txt")"
