#!/bin/sh
# Runs in the runtime stage of docker/Dockerfile: installs the Debian packages that compile.sh found
# the binaries to need (only shared libraries: no compiler, no -dev package), then drops apt's
# lists and caches so they do not end up in the image.
set -eu
list=/usr/local/share/scan-service/runtime-packages.txt
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2046  # one package name per line, no spaces
apt-get install -y -q --no-install-recommends $(cat "$list")
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log
