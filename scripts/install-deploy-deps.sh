#!/usr/bin/env bash
# Installs what the image and manifest checks need (scripts/ci-images.sh, ci-deploy-checks.sh)
# from Debian 12's archive: buildah builds and runs images without a daemon, podman imports local
# base images into the same storage, debootstrap makes the Debian base, docker-compose validates
# the compose file offline, curl scrapes metrics. kubectl (with kustomize), node and npm come with
# the machine image. Idempotent: packages already present are skipped.
set -euo pipefail

packages=(buildah podman debootstrap docker-compose curl ca-certificates)
missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  echo "install-deploy-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deploy-deps: all ${#packages[@]} packages present"
fi

for tool in kubectl node npm; do
  command -v "$tool" >/dev/null || { echo "install-deploy-deps: $tool is missing" >&2; exit 1; }
done
