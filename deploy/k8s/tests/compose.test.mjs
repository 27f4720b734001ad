// Offline checks of deploy/compose (node --test): `docker-compose config` accepts each file set,
// every bind mount exists (config does not check), and the service names, ports and paths agree
// with deploy/prometheus/prometheus.yml and deploy/grafana/provisioning, which are mounted, not
// copied. Skipped where docker-compose is not installed (scripts/install-deploy-deps.sh has it).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import YAML from "yaml";
import { repo } from "./render.mjs";

const composeDir = join(repo, "deploy/compose");
const fileSets = { cpu: ["compose.yaml"], gpu: ["compose.yaml", "compose.gpu.yaml"] };
const haveCompose = (() => {
  try {
    execFileSync("docker-compose", ["version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

function config(files) {
  const args = files.flatMap((f) => ["-f", join(composeDir, f)]);
  return YAML.parse(execFileSync("docker-compose", [...args, "config"], { encoding: "utf8" }));
}
const portOf = (address) => Number(String(address).slice(String(address).lastIndexOf(":") + 1));
const seconds = (duration) => {
  const m = /^(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$/.exec(String(duration));
  assert.ok(m, `duration ${duration}`);
  return Number(m[1] ?? 0) * 60 + Number(m[2] ?? 0);
};
const yamlFiles = (dir) =>
  readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).map((f) => YAML.parse(readFileSync(join(dir, f), "utf8")));

for (const [variant, files] of Object.entries(fileSets)) {
  test(`compose ${variant}: valid, and wired to deploy/prometheus and deploy/grafana`, { skip: !haveCompose && "docker-compose not installed" }, () => {
    const { services } = config(files);
    assert.deepEqual(Object.keys(services).sort(), ["grafana", "prometheus", "scan-server"]);

    for (const [name, service] of Object.entries(services)) {
      for (const volume of service.volumes ?? []) {
        const [source] = String(volume).split(":");
        if (source.startsWith("/")) assert.ok(existsSync(source), `${name}: bind mount ${source} exists`);
      }
    }

    const server = services["scan-server"];
    assert.equal(server.build.dockerfile, "docker/Dockerfile");
    assert.equal(server.build.target, variant === "gpu" ? "cuda" : "cpu");
    const env = server.environment;
    const drain = Number(env.SCAN_DRAIN_DELAY_SECONDS ?? 0);
    const grace = Number(env.SCAN_SHUTDOWN_GRACE_SECONDS ?? 30);
    assert.ok(seconds(server.stop_grace_period) > drain + grace, "stop_grace_period > drain + grace");
    assert.equal(server.read_only, true);
    assert.deepEqual(server.cap_drop, ["ALL"]);
    if (variant === "gpu") {
      const devices = server.deploy.resources.reservations.devices;
      assert.ok(devices.some((d) => d.driver === "nvidia" && d.capabilities.includes("gpu")));
    }

    // Prometheus scrapes the server by its compose service name and metrics port.
    const prometheusYml = YAML.parse(readFileSync(join(repo, "deploy/prometheus/prometheus.yml"), "utf8"));
    const targets = prometheusYml.scrape_configs.flatMap((c) => (c.static_configs ?? []).flatMap((s) => s.targets));
    assert.ok(
      targets.includes(`scan-server:${portOf(env.SCAN_METRICS_LISTEN)}`),
      `prometheus.yml scrapes scan-server:${portOf(env.SCAN_METRICS_LISTEN)} (targets: ${targets})`,
    );
    assert.ok(
      services.prometheus.command.includes("--config.file=/etc/prometheus/prometheus.yml") &&
        services.prometheus.volumes.some((v) => v.endsWith(":/etc/prometheus:ro")),
      "Prometheus reads deploy/prometheus as mounted",
    );

    // Grafana: the datasource names the prometheus service; dashboards load from the mount.
    const datasources = yamlFiles(join(repo, "deploy/grafana/provisioning/datasources")).flatMap((f) => f.datasources);
    assert.ok(datasources.some((d) => d.type === "prometheus" && new URL(d.url).host === "prometheus:9090"));
    const paths = yamlFiles(join(repo, "deploy/grafana/provisioning/dashboards"))
      .flatMap((f) => f.providers).map((p) => p.options.path);
    const dashboardMount = services.grafana.volumes.find((v) => v.includes("/deploy/grafana/dashboards:"));
    assert.ok(dashboardMount, "deploy/grafana/dashboards is mounted");
    assert.ok(paths.includes(dashboardMount.split(":")[1]), `dashboards mounted where provisioning looks (${paths})`);
  });
}

test("compose: scan-server knows every SCAN_* variable the compose file sets", (t) => {
  const binary = process.env.SCAN_SERVER_BIN;
  if (!haveCompose || !binary) return t.skip("needs docker-compose and SCAN_SERVER_BIN");
  const help = execFileSync(binary, ["--help"], { encoding: "utf8" });
  for (const name of Object.keys(config(fileSets.cpu).services["scan-server"].environment)) {
    assert.ok(help.includes(`env ${name}`), `scan-server --help does not list ${name}`);
  }
});
