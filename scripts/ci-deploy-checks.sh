#!/usr/bin/env bash
# Checks everything under docker/ and deploy/ without a cluster, a Docker daemon or a registry:
#   1. Kubernetes: every overlay (and each with the monitoring component) renders with
#      `kubectl kustomize`; every object validates against the Kubernetes API schemas offline
#      (kubernetes-models, pinned in deploy/k8s/tests/package-lock.json); the deployment rules
#      hold (deploy/k8s/tests/manifests.test.mjs).
#   2. Compose: `docker-compose config` accepts deploy/compose, and its mounts and names agree with
#      deploy/prometheus and deploy/grafana (deploy/k8s/tests/compose.test.mjs).
#   3. Images: scripts/ci-images.sh builds the cpu and cuda images and smoke-runs them
#      (SCAN_CI_SKIP_IMAGES=1 skips this, for a quick local run).
# Run by .ci/run after the project's tests, so build/release/server/scan-server exists; the tests
# then also check that it knows every SCAN_* variable the manifests set.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
bash scripts/install-deploy-deps.sh
npm ci --prefix deploy/k8s/tests --no-audit --no-fund --loglevel=error

for overlay in deploy/k8s/overlays/*/; do
  echo "ci-deploy-checks: kubectl kustomize $overlay: $(kubectl kustomize "$overlay" | grep -c '^kind:') objects"
done

server=build/release/server/scan-server
if [ -x "$server" ]; then
  export SCAN_SERVER_BIN=$PWD/$server
else
  echo "ci-deploy-checks: $server not built; the SCAN_* variable checks are skipped"
fi
(cd deploy/k8s/tests && node --test)
echo "ci-deploy-checks: manifests and compose checked in $((SECONDS - start)) s"

if [ "${SCAN_CI_SKIP_IMAGES:-0}" = 1 ]; then
  echo "ci-deploy-checks: SCAN_CI_SKIP_IMAGES=1, images not built"
else
  bash scripts/ci-images.sh
fi
