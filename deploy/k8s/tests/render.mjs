// Shared by the manifest tests and scripts/ci-images.sh: renders a kustomization with the
// machine's `kubectl kustomize` and returns its objects.
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";

export const repo = join(dirname(fileURLToPath(import.meta.url)), "../../..");

// Every kustomization that users apply (the overlays) and the overlays with the monitoring
// component, relative to the repository root.
export const variants = {
  cpu: "deploy/k8s/overlays/cpu",
  gpu: "deploy/k8s/overlays/gpu",
  "cpu+monitoring": "deploy/k8s/tests/with-monitoring/cpu",
  "gpu+monitoring": "deploy/k8s/tests/with-monitoring/gpu",
};

// Everything renders with kustomize's default load restrictor, so `kubectl apply -k` works on
// each path as it is.
export function render(path) {
  const args = ["kustomize", join(repo, path)];
  const text = execFileSync("kubectl", args, {
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  return YAML.parseAllDocuments(text).map((doc) => {
    if (doc.errors.length) throw new Error(`${path}: ${doc.errors[0].message}`);
    return doc.toJS();
  });
}

export const serverContainer = (deployment) =>
  deployment.spec.template.spec.containers.find((c) => c.name === "scan-server");

// Parses Kubernetes CPU quantities ("4", "500m").
export function cpuCores(quantity) {
  const text = String(quantity);
  return text.endsWith("m") ? Number(text.slice(0, -1)) / 1000 : Number(text);
}

// The container's environment as the kubelet would set it: plain values, and resourceFieldRef
// (limits.cpu / requests.cpu, rounded up to whole units of the divisor, as the kubelet does).
export function containerEnv(container) {
  const env = {};
  for (const entry of container.env ?? []) {
    if (entry.value !== undefined) {
      env[entry.name] = String(entry.value);
      continue;
    }
    const ref = entry.valueFrom?.resourceFieldRef;
    if (ref && /^(limits|requests)\.cpu$/.test(ref.resource)) {
      const [kind] = ref.resource.split(".");
      const cores = cpuCores(container.resources[kind].cpu);
      env[entry.name] = String(Math.ceil(cores / cpuCores(ref.divisor ?? "1")));
      continue;
    }
    throw new Error(`env ${entry.name}: only values and cpu resourceFieldRefs are supported`);
  }
  return env;
}
