// Offline checks of every rendered kustomization (node --test): each object is valid against the
// Kubernetes API schemas (kubernetes-models; Prometheus Operator CRDs from
// @kubernetes-models/prometheus-operator), and the deployment rules of issue 9 hold.
// SCAN_SERVER_BIN (optional): a scan-server binary whose --help must know every SCAN_* variable.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import YAML from "yaml";
import { render, repo, variants, serverContainer, containerEnv } from "./render.mjs";

// apiVersion -> the module with its models.
function modelModule(apiVersion) {
  if (apiVersion === "monitoring.coreos.com/v1") {
    return "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
  }
  return `kubernetes-models/${apiVersion}`;
}

async function validateSchema(object) {
  let models;
  try {
    models = await import(modelModule(object.apiVersion));
  } catch {
    assert.fail(`${object.kind}/${object.metadata?.name}: no schema for apiVersion ${object.apiVersion}`);
  }
  const Model = models[object.kind];
  assert.ok(Model, `no schema for ${object.apiVersion} ${object.kind}`);
  new Model(object).validate(); // throws with the failing path
}

const rendered = Object.fromEntries(
  Object.entries(variants).map(([name, path]) => [name, render(path)]),
);
const one = (objects, kind, pred = () => true) => {
  const found = objects.filter((o) => o.kind === kind && pred(o));
  assert.equal(found.length, 1, `expected one ${kind}, found ${found.length}`);
  return found[0];
};
const matches = (selector, labels) =>
  Object.entries(selector).every(([key, value]) => labels?.[key] === value);
const portOf = (address) => Number(address.slice(address.lastIndexOf(":") + 1));

for (const [variant, objects] of Object.entries(rendered)) {
  const gpu = variant.startsWith("gpu");
  const monitoring = variant.endsWith("+monitoring");

  test(`${variant}: every object matches its API schema`, async () => {
    assert.ok(objects.length > 0);
    for (const object of objects) await validateSchema(object);
  });

  test(`${variant}: deployment probes, ports, resources and shutdown timing`, () => {
    const deployment = one(objects, "Deployment");
    const pod = deployment.spec.template.spec;
    const container = serverContainer(deployment);
    assert.ok(container, "a container named scan-server");
    assert.match(container.image, gpu ? /:cuda(-|$)/ : /:cpu(-|$)/);

    const ports = Object.fromEntries(container.ports.map((p) => [p.name, p.containerPort]));
    assert.deepEqual(Object.keys(ports).sort(), ["grpc", "metrics"]);
    const env = containerEnv(container);
    assert.equal(portOf(env.SCAN_LISTEN), ports.grpc, "SCAN_LISTEN uses the grpc port");
    assert.equal(portOf(env.SCAN_METRICS_LISTEN), ports.metrics, "SCAN_METRICS_LISTEN uses the metrics port");
    const annotations = deployment.spec.template.metadata.annotations ?? {};
    if (annotations["prometheus.io/port"]) {
      assert.equal(Number(annotations["prometheus.io/port"]), ports.metrics, "prometheus.io/port is the metrics port");
    }

    // Native gRPC probes: liveness on the server as a whole, readiness on the scan service.
    const probes = {
      startupProbe: "",
      livenessProbe: "",
      readinessProbe: "scan.v1.ScanService",
    };
    for (const [name, service] of Object.entries(probes)) {
      const probe = container[name];
      assert.ok(probe?.grpc, `${name} is a gRPC probe`);
      assert.equal(probe.grpc.port, ports.grpc, `${name} probes the grpc port`);
      assert.equal(probe.grpc.service ?? "", service, `${name} asks for service "${service}"`);
    }
    const startup = container.startupProbe;
    assert.ok(startup.periodSeconds * startup.failureThreshold >= 60, "start-up (calibration) gets at least 60 s");

    for (const kind of ["requests", "limits"]) {
      for (const resource of ["cpu", "memory"]) {
        assert.ok(container.resources?.[kind]?.[resource], `${kind}.${resource} is set`);
      }
    }
    if (gpu) {
      assert.equal(String(container.resources.limits["nvidia.com/gpu"]), "1");
      assert.ok(pod.nodeSelector?.["nvidia.com/gpu.present"], "GPU node selector");
      assert.ok(pod.tolerations?.some((t) => t.key === "nvidia.com/gpu"), "tolerates the GPU taint");
    } else {
      assert.equal(container.resources.limits["nvidia.com/gpu"], undefined);
    }

    // SIGTERM: NOT_SERVING, serve for the drain delay, then finish within the grace; the kubelet
    // must not SIGKILL before both have run out.
    const drain = Number(env.SCAN_DRAIN_DELAY_SECONDS);
    const grace = Number(env.SCAN_SHUTDOWN_GRACE_SECONDS);
    assert.ok(drain > 0 && grace > 0, "drain delay and grace are set");
    assert.ok(
      pod.terminationGracePeriodSeconds > drain + grace,
      `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} > ${drain} + ${grace}`,
    );

    assert.ok(
      pod.topologySpreadConstraints?.some(
        (c) => c.topologyKey === "kubernetes.io/hostname" &&
          matches(c.labelSelector.matchLabels, deployment.spec.template.metadata.labels),
      ),
      "replicas spread across nodes",
    );
  });

  test(`${variant}: security context`, () => {
    const deployment = one(objects, "Deployment");
    const pod = deployment.spec.template.spec;
    const container = serverContainer(deployment);
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.ok(pod.securityContext.runAsUser > 0);
    assert.equal(pod.securityContext.seccompProfile?.type, "RuntimeDefault");
    assert.equal(pod.automountServiceAccountToken, false);
    const sc = container.securityContext;
    assert.equal(sc.allowPrivilegeEscalation, false);
    assert.equal(sc.readOnlyRootFilesystem, true);
    assert.deepEqual(sc.capabilities?.drop, ["ALL"]);
    assert.equal(sc.capabilities?.add, undefined);
    assert.notEqual(sc.privileged, true);
  });

  test(`${variant}: services, autoscaler, disruption budget, network policy`, () => {
    const deployment = one(objects, "Deployment");
    const podLabels = deployment.spec.template.metadata.labels;
    assert.ok(matches(deployment.spec.selector.matchLabels, podLabels));

    const services = objects.filter((o) => o.kind === "Service");
    const clusterIp = one(services, "Service", (s) => s.spec.clusterIP !== "None");
    const headless = one(services, "Service", (s) => s.spec.clusterIP === "None");
    for (const service of [clusterIp, headless]) {
      assert.ok(matches(service.spec.selector, podLabels), `${service.metadata.name} selects the pods`);
      assert.ok(service.spec.ports.some((p) => p.name === "grpc" && p.targetPort === "grpc"));
    }
    assert.ok(clusterIp.spec.ports.some((p) => p.name === "metrics" && p.targetPort === "metrics"));
    assert.notEqual(headless.spec.publishNotReadyAddresses, true, "draining pods leave DNS");

    const hpa = one(objects, "HorizontalPodAutoscaler");
    assert.equal(hpa.apiVersion, "autoscaling/v2");
    assert.deepEqual(
      [hpa.spec.scaleTargetRef.kind, hpa.spec.scaleTargetRef.name],
      ["Deployment", deployment.metadata.name],
    );
    assert.ok(hpa.spec.minReplicas >= 2, "at least two replicas, so a disruption never empties the service");
    assert.equal(deployment.spec.replicas, undefined, "the autoscaler owns the replica count");

    const pdb = one(objects, "PodDisruptionBudget");
    assert.ok(matches(pdb.spec.selector.matchLabels, podLabels));

    const policy = one(objects, "NetworkPolicy");
    assert.ok(matches(policy.spec.podSelector.matchLabels, podLabels));
    const allowedPorts = policy.spec.ingress.flatMap((rule) => rule.ports.map((p) => p.port));
    assert.deepEqual(allowedPorts.sort(), ["grpc", "metrics"]);
  });

  if (monitoring) {
    test(`${variant}: monitoring objects come from deploy/prometheus and deploy/grafana`, () => {
      const service = one(objects, "Service", (s) => s.spec.clusterIP !== "None");
      const headless = one(objects, "Service", (s) => s.spec.clusterIP === "None");
      const monitor = one(objects, "ServiceMonitor");
      assert.ok(matches(monitor.spec.selector.matchLabels, service.metadata.labels));
      assert.ok(!matches(monitor.spec.selector.matchLabels, headless.metadata.labels), "each pod scraped once");
      assert.deepEqual(monitor.spec.endpoints.map((e) => e.port), ["metrics"]);

      const rulesFile = YAML.parse(readFileSync(join(repo, "deploy/prometheus/scan-alerts.yml"), "utf8"));
      assert.deepEqual(one(objects, "PrometheusRule").spec.groups, rulesFile.groups);
      // The alert rules' job label is the one the ServiceMonitor gives: the Service's name.
      assert.equal(service.metadata.name, "scan-service");

      const dashboard = one(objects, "ConfigMap", (c) => c.metadata.labels?.grafana_dashboard === "1");
      assert.deepEqual(
        JSON.parse(dashboard.data["scan-service.json"]),
        JSON.parse(readFileSync(join(repo, "deploy/grafana/dashboards/scan-service.json"), "utf8")),
      );
    });
  }
}

test("the committed PrometheusRule is generated from deploy/prometheus/scan-alerts.yml", () => {
  execFileSync(process.execPath, [join(repo, "deploy/k8s/tests/gen-prometheusrule.mjs"), "--check"], {
    stdio: "inherit",
  });
});

test("scan-server knows every SCAN_* variable the Deployment sets", (t) => {
  const binary = process.env.SCAN_SERVER_BIN;
  if (!binary) return t.skip("SCAN_SERVER_BIN not set");
  const help = execFileSync(binary, ["--help"], { encoding: "utf8" });
  for (const [variant, objects] of Object.entries(rendered)) {
    const env = containerEnv(serverContainer(one(objects, "Deployment")));
    for (const name of Object.keys(env)) {
      assert.ok(help.includes(`env ${name}`), `${variant}: scan-server --help does not list ${name}`);
    }
  }
});
