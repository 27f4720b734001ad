// Prints the scan-server container's environment and arguments of a rendered overlay, one
// KEY=VALUE per line and then ARGS=<json array>, so that scripts/ci-images.sh smoke-runs the image
// exactly as the Deployment would. Usage: node container-env.mjs cpu|gpu
import { render, variants, serverContainer, containerEnv } from "./render.mjs";

const variant = process.argv[2];
if (!variants[variant]) throw new Error(`usage: container-env.mjs ${Object.keys(variants).join("|")}`);
const deployment = render(variants[variant]).find((o) => o.kind === "Deployment");
const container = serverContainer(deployment);
for (const [name, value] of Object.entries(containerEnv(container))) console.log(`${name}=${value}`);
console.log(`ARGS=${JSON.stringify([...(container.command ?? []), ...(container.args ?? [])])}`);
console.log(`TERMINATION_GRACE=${deployment.spec.template.spec.terminationGracePeriodSeconds}`);
