#!/usr/bin/env bash
# Builds the cpu and cuda images of docker/Dockerfile without a Docker daemon and smoke-runs both
# over loopback. Run by .ci/run after the tests; also usable by hand (as root).
#
# No registry is reachable here, so the public bases named in the Dockerfile are stood in for by
# local images: debian:bookworm-slim from debootstrap (its tarball cached in $SCAN_CI_CACHE), and
# the CUDA toolkit image from this machine's /usr/local/cuda (compiler, headers, CUDA runtime only).
# buildah's chroot isolation builds and runs containers here; podman's own build and run do not.
# Layers, the debootstrap tarball and the ccache of the build stages are kept between runs, so a
# rerun rebuilds only what changed; SCAN_CI_IMAGES_PRUNE=1 removes everything this script made.
#
# Smoke runs, each with the environment of the matching Kubernetes overlay (read from the rendered
# Deployment, so the two cannot drift apart), listening on loopback only:
#   the image's own HEALTHCHECK command passes; health "" and scan.v1.ScanService are SERVING;
#   scan-client --check is correct for float32 and bfloat16; /metrics is scraped; on SIGTERM health
#   turns NOT_SERVING while scans are still served for the drain delay, then the server exits 0
#   within drain delay + grace. The cuda image, without a GPU, refuses GPU requests with
#   FAILED_PRECONDITION and serves from the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${SCAN_CI_CACHE:-/var/cache/scan-service-ci}
debian_image=docker.io/library/debian:bookworm-slim
image_repo=localhost/scan-service
version=$(sed -n 's/^project(scan-service VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)

log() { printf '[ci-images %(%T)T] %s\n' -1 "$*"; }
die() { log "FAIL: $*" >&2; exit 1; }

work=$(mktemp -d /tmp/scan-ci-images.XXXXXX)
containers=()
runs=()  # pids of `buildah run` processes started here
descendants() {
  local child
  for child in $(pgrep -P "$1" || true); do
    echo "$child"
    descendants "$child"
  done
}
cleanup() {
  local pid
  for pid in "${runs[@]}"; do
    # Our own processes only: each buildah run and what it started.
    kill -KILL $(descendants "$pid") "$pid" 2>/dev/null || true
  done
  for ctr in "${containers[@]}"; do buildah rm "$ctr" >/dev/null 2>&1 || true; done
  # debootstrap mounts /proc and /sys in its target; never let rm descend into them.
  findmnt -rn -o TARGET | grep "^$work/" | sort -r | xargs -r umount -l || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

timings=()
step() {
  local name=$1 start=$SECONDS
  shift
  log "== $name"
  "$@"
  timings+=("$(printf '%-44s %5d s' "$name" $((SECONDS - start)))")
}

# --- local base images ---------------------------------------------------------------------------

debian_base() {
  if podman image exists "$debian_image"; then
    log "$debian_image present"
    return
  fi
  local tarball=$cache/debian-bookworm-minbase.tar
  mkdir -p "$cache"
  if [ ! -s "$tarball" ]; then
    local sources=/etc/apt/sources.list.d/debian.sources mirror rootfs=$work/rootfs
    mirror=$(awk '$1 == "URIs:" {print $2; exit}' "$sources" 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    log "debootstrap --variant=minbase bookworm from $mirror"
    if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
      tail -n 30 "$work/debootstrap.log"
      die "debootstrap failed"
    fi
    # The image's apt uses the same mirrors as this machine (with security updates).
    if [ -f "$sources" ]; then
      install -m 0644 "$sources" "$rootfs/etc/apt/sources.list.d/debian.sources"
      rm -f "$rootfs/etc/apt/sources.list"
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf --one-file-system "$rootfs"
  fi
  podman import --quiet --change 'CMD ["bash"]' "$tarball" "$debian_image" >/dev/null
  log "imported $debian_image from $tarball"
}

cuda_root=$(readlink -f /usr/local/cuda 2>/dev/null || true)
toolkit_image=localhost/cuda-toolkit:${cuda_root##*/cuda-}
cuda_toolkit() {
  [ -x "$cuda_root/bin/nvcc" ] || die "no CUDA toolkit in /usr/local/cuda: the cuda image needs one"
  if podman image exists "$toolkit_image"; then
    log "$toolkit_image present"
    return
  fi
  # Everything nvcc needs, and the static CUDA runtime; not the 2 GB of math and DNN libraries,
  # which the project does not link.
  local rel=${cuda_root#/}
  (cd / && find usr/local/cuda "$rel" \
      \( -path "$rel/lib/lib*.so*" ! -name 'libcudart.so*' \) -prune -o -print) |
    tar -C / --no-recursion -T - -c |
    podman import --quiet - "$toolkit_image" >/dev/null
  log "imported $toolkit_image from $cuda_root"
}

# --- builds --------------------------------------------------------------------------------------

build_image() {
  local target=$1
  shift
  if ! buildah bud --isolation=chroot --pull=never --network=host --layers --format=docker \
      --build-arg VERSION="$version" --build-arg REVISION="$revision" "$@" \
      -f docker/Dockerfile --target "$target" -t "$image_repo:$target" . \
      >"$work/build-$target.log" 2>&1; then
    tr -c '[:print:]\n' ' ' <"$work/build-$target.log" | tail -n 60
    die "buildah bud --target $target failed"
  fi
  grep -a '^compile.sh:\|Hits:\|Misses:' "$work/build-$target.log" || true
}

# --- smoke runs ----------------------------------------------------------------------------------

# Runs the image's scan-client (or any command) in the container next to the running server.
in_ctr() { buildah run --isolation=chroot "$ctr" -- "$@"; }

# The image's Docker configuration (USER, HEALTHCHECK, labels ...) as JSON.
image_config() {
  buildah inspect --type image "$1" |
    node -e 'let t = ""; process.stdin.on("data", (d) => (t += d)).on("end", () =>
      console.log(JSON.stringify(JSON.parse(t).Docker.config)))'
}

check_image_config() {
  local image=$1 config
  config=$(image_config "$image")
  node -e '
    const c = JSON.parse(process.argv[1]);
    const want = (ok, what) => { if (!ok) { console.error("image config: " + what); process.exit(1); } };
    want(/^[1-9][0-9]*(:[0-9]+)?$/.test(c.User || ""), "a numeric non-root USER, got " + c.User);
    want(c.StopSignal === "SIGTERM", "STOPSIGNAL SIGTERM");
    want(c.Healthcheck && c.Healthcheck.Test && c.Healthcheck.Test.length > 1, "a HEALTHCHECK");
    for (const port of ["50051/tcp", "9464/tcp"]) want(c.ExposedPorts && port in c.ExposedPorts, "EXPOSE " + port);
    for (const label of ["version", "revision", "source"]) {
      const value = (c.Labels || {})["org.opencontainers.image." + label];
      want(value && value !== "unknown", "label org.opencontainers.image." + label);
    }' "$config" || die "$image: image configuration"
  # Runtime stage: no compiler, no -dev package (the command lists any it finds).
  local found
  found=$(in_ctr sh -c 'for tool in cc gcc g++ c++ nvcc cmake; do command -v "$tool"; done
                         dpkg-query -W -f "\${Package}\n" | grep -- "-dev\$"; true' 2>&1)
  [ -z "$found" ] || die "$image: the runtime image carries build tools or -dev packages: $found"
}

wait_serving() {
  local target=$1 deadline=$((SECONDS + 120))
  until in_ctr scan-client --target "$target" --timeout-ms 2000 --health scan.v1.ScanService \
      >/dev/null 2>&1; do
    kill -0 "$server_run" 2>/dev/null || { cat "$server_log"; die "scan-server exited during start-up"; }
    [ $SECONDS -lt $deadline ] || { tail -n 20 "$server_log"; die "not SERVING within 120 s"; }
    sleep 1
  done
}

scan_check() {  # scan_check TARGET DTYPE [more scan-client flags]: prints the backend used
  local target=$1 dtype=$2 out
  shift 2
  out=$(in_ctr scan-client --target "$target" --shape 2,4,512,64 --dtype "$dtype" --dim 2 --check "$@" 2>&1) ||
    { echo "$out"; die "scan-client --check --dtype $dtype failed"; }
  grep -q '^check: *OK' <<<"$out" || { echo "$out"; die "--check did not report OK"; }
  awk '$1 == "backend:" {print $2}' <<<"$out"
}

smoke_run() {
  local variant=$1 image=$2
  log "smoke run of $image with the environment of deploy/k8s/overlays/$variant"
  ctr=$(buildah from --pull-never --name "scan-ci-smoke-$variant-$$" "$image")
  containers+=("$ctr")
  check_image_config "$image"

  # The Deployment's environment and arguments, except that both listeners move to loopback on
  # ports the kernel picks (reported through port files in a directory shared with the host).
  local env_args=() args=() drain=0 grace=0 line
  while IFS= read -r line; do
    case $line in
      ARGS=*) mapfile -t args < <(node -e 'for (const a of JSON.parse(process.argv[1])) console.log(a)' "${line#ARGS=}") ;;
      TERMINATION_GRACE=*) ;;
      *)
        env_args+=(--env "$line")
        case $line in
          SCAN_DRAIN_DELAY_SECONDS=*) drain=${line#*=} ;;
          SCAN_SHUTDOWN_GRACE_SECONDS=*) grace=${line#*=} ;;
        esac ;;
    esac
  done < <(node deploy/k8s/tests/container-env.mjs "$variant")
  local ports=$work/ports-$variant
  mkdir -m 0777 "$ports"
  env_args+=(--env SCAN_LISTEN=127.0.0.1:0 --env SCAN_METRICS_LISTEN=127.0.0.1:0
             --env SCAN_PORT_FILE=/run/ports/grpc --env SCAN_METRICS_PORT_FILE=/run/ports/metrics)

  server_log=$work/server-$variant.log
  buildah run --isolation=chroot --volume "$ports:/run/ports" "${env_args[@]}" "$ctr" -- \
    scan-server "${args[@]}" >"$server_log" 2>&1 &
  server_run=$!
  runs+=("$server_run")
  local deadline=$((SECONDS + 60))
  until [ -s "$ports/grpc" ] && [ -s "$ports/metrics" ]; do
    kill -0 "$server_run" 2>/dev/null || { cat "$server_log"; die "scan-server exited at start"; }
    [ $SECONDS -lt $deadline ] || { tail -n 20 "$server_log"; die "no port files within 60 s"; }
    sleep 0.5
  done
  local target=127.0.0.1:$(<"$ports/grpc") metrics=http://127.0.0.1:$(<"$ports/metrics")/metrics
  wait_serving "$target"

  # The image's own HEALTHCHECK command, with SCAN_LISTEN as the server has it.
  local healthcheck
  healthcheck=$(image_config "$image" | node -e 'let t = ""; process.stdin.on("data", (d) => (t += d))
    .on("end", () => console.log(JSON.parse(t).Healthcheck.Test[1]))')
  buildah run --isolation=chroot --env "SCAN_LISTEN=$target" "$ctr" -- sh -c "$healthcheck" >/dev/null ||
    die "the image's HEALTHCHECK failed against a SERVING server"
  in_ctr scan-client --target "$target" --health "" >/dev/null || die "health \"\" is not SERVING"
  log "health: SERVING (HEALTHCHECK, \"\" and scan.v1.ScanService)"

  local dtype backend
  for dtype in f32 bf16; do
    backend=$(scan_check "$target" "$dtype")
    log "scan --check $dtype: OK on $backend"
  done
  if [ "$variant" = gpu ]; then
    # No GPU here: the server must say so, and keep serving from the CPU.
    local out
    if out=$(in_ctr scan-client --target "$target" --shape 1,1,64,8 --backend gpu 2>&1); then
      echo "$out"
      die "a GPU request succeeded on a machine without a GPU"
    fi
    grep -q FAILED_PRECONDITION <<<"$out" || { echo "$out"; die "GPU request: expected FAILED_PRECONDITION"; }
    case $backend in cpu*) ;; *) die "without a GPU, auto should pick a CPU backend, got $backend" ;; esac
    log "no GPU: GPU requests get FAILED_PRECONDITION, auto serves on $backend"
  fi

  local scrape=$work/metrics-$variant.txt
  curl -fsS --max-time 10 "$metrics" >"$scrape" || die "scrape of $metrics failed"
  grep -q '^scan_build_info{' "$scrape" || die "no scan_build_info in the scrape"
  grep -q "^scan_requests_total{.*backend=\"$backend\"" "$scrape" ||
    die "scan_requests_total has no series for backend $backend"
  log "metrics: $(grep -c '^scan_' "$scrape") scan_* samples scraped"
  if [ "$variant" = gpu ]; then
    # The server's own account of its GPUs: none usable here, and no GPU backend up.
    local gpus
    gpus=$(awk '$1 == "scan_gpu_devices" {print $2}' "$scrape")
    [ "${gpus:-0}" = 0 ] || die "scan_gpu_devices is $gpus on a machine without a GPU"
    ! grep -Eq '^scan_backend_up\{backend="cuda[^}]*\} 1' "$scrape" || die "a cuda backend reports itself up"
    log "metrics: scan_gpu_devices ${gpus:-absent}, no GPU backend up"
  fi

  # SIGTERM, as the kubelet sends it: NOT_SERVING at once, still serving during the drain delay,
  # then a clean exit (status 0) within drain delay + grace.
  local server_pid
  server_pid=$(for pid in $(descendants "$server_run"); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = scan-server ] && echo "$pid"; done | head -n 1)
  [ -n "$server_pid" ] || die "cannot find the scan-server process"
  local start=$SECONDS
  kill -TERM "$server_pid"
  sleep 1
  if in_ctr scan-client --target "$target" --timeout-ms 2000 --health scan.v1.ScanService >/dev/null 2>&1; then
    die "still SERVING after SIGTERM"
  fi
  if [ "$drain" -gt 2 ]; then
    backend=$(scan_check "$target" f32)
    log "after SIGTERM: NOT_SERVING, and still serves during the ${drain} s drain delay"
  fi
  local status=0
  wait "$server_run" || status=$?
  local took=$((SECONDS - start))
  [ "$status" -eq 0 ] || { tail -n 20 "$server_log"; die "scan-server exited with status $status after SIGTERM"; }
  [ "$took" -le $((drain + grace + 5)) ] || die "shutdown took ${took} s, over drain + grace"
  log "SIGTERM: clean exit in ${took} s (drain delay ${drain} s, grace ${grace} s)"
  grep -Ei 'gpu|cuda' "$server_log" | head -n 5 || true
}

prune() {
  log "SCAN_CI_IMAGES_PRUNE=1: removing the images, layers and caches this script made"
  buildah rmi "$image_repo:cpu" "$image_repo:cuda" "$toolkit_image" "$debian_image" 2>/dev/null || true
  buildah rmi --prune >/dev/null 2>&1 || true
  rm -rf "$cache" /var/tmp/buildah-cache-* 2>/dev/null || true
}

step "install deploy dependencies" bash scripts/install-deploy-deps.sh
# Housekeeping for machines that run this often: layers no image has used for three days (older
# builds' intermediates) go; recent ones stay as the build cache.
podman image prune --force --filter until=72h >/dev/null 2>&1 || true
if [ ! -d deploy/k8s/tests/node_modules ]; then
  step "npm ci (deploy/k8s/tests)" npm ci --prefix deploy/k8s/tests --no-audit --no-fund
fi
step "base image $debian_image" debian_base
step "toolkit image $toolkit_image" cuda_toolkit
step "build $image_repo:cpu" build_image cpu
step "build $image_repo:cuda" build_image cuda --build-arg CUDA_TOOLKIT_IMAGE="$toolkit_image"
step "smoke run cpu image" smoke_run cpu "$image_repo:cpu"
step "smoke run cuda image (no GPU)" smoke_run gpu "$image_repo:cuda"
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep "^$image_repo:" | sed 's/^/image size: /'
[ "${SCAN_CI_IMAGES_PRUNE:-0}" = 1 ] && prune
printf 'ci-images step times:\n'
printf '  %s\n' "${timings[@]}"
log "images built and smoke-run: OK"
