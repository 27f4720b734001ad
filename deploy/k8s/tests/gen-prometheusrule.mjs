// Writes deploy/k8s/components/monitoring/prometheusrule.yaml from deploy/prometheus/scan-alerts.yml: the
// Prometheus Operator's PrometheusRule embeds a rules file's groups under spec, which kustomize
// cannot generate, so this does it and CI (`--check`) fails when the committed file is stale.
// Usage: node deploy/k8s/tests/gen-prometheusrule.mjs [--check]
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join, relative } from "node:path";
import YAML from "yaml";

const repo = join(dirname(fileURLToPath(import.meta.url)), "../../..");
const source = join(repo, "deploy/prometheus/scan-alerts.yml");
const target = join(repo, "deploy/k8s/components/monitoring/prometheusrule.yaml");

const rules = YAML.parse(readFileSync(source, "utf8"));
if (!rules || !Array.isArray(rules.groups)) {
  throw new Error(`${source}: expected a Prometheus rules file with groups`);
}
const rule = {
  apiVersion: "monitoring.coreos.com/v1",
  kind: "PrometheusRule",
  metadata: { name: "scan-service", labels: { "app.kubernetes.io/name": "scan-service" } },
  spec: { groups: rules.groups },
};
const text =
  `# GENERATED from ${relative(repo, source)} by ${relative(repo, fileURLToPath(import.meta.url))}:\n` +
  "# edit that file and rerun the script; CI fails when this one is stale.\n" +
  YAML.stringify(rule, { lineWidth: 0 });

if (process.argv.includes("--check")) {
  let current = "";
  try { current = readFileSync(target, "utf8"); } catch { /* missing counts as stale */ }
  if (current !== text) {
    console.error(`${relative(repo, target)} is stale: run node ${relative(repo, fileURLToPath(import.meta.url))}`);
    process.exit(1);
  }
  console.log(`${relative(repo, target)} is up to date`);
} else {
  writeFileSync(target, text);
  console.log(`wrote ${relative(repo, target)}`);
}
