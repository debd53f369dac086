/**
 * What metrics cost on the pod path: agent-side ADD and DEL with metrics on and off, in the same
 * run and interleaved (pod i uses "on" when i is even), so drift of the machine hits both alike.
 * Target (issue 6): the median ADD with metrics on within 5% of off.
 *
 * The agent runs in process, its node being a throwaway network namespace; requests go through
 * its real unix socket (`callAgent`, as the plugin sends them) and build the real datapath in a
 * pod namespace each. Next to the paired figures it prints the bare cost of the metrics hook
 * (ns per call) and of one scrape with every pod on the node.
 *
 * Run as root: `deno run -A --no-lock bench/metrics_bench.ts [--pods 200] [--warmup 20]`
 *
 * @module
 */

import { join } from "node:path";
import { Agent } from "../agent/agent.ts";
import { parseNodeConfig } from "../agent/config.ts";
import { createLogger } from "../agent/logger.ts";
import type { RpcRequest } from "../agent/protocol.ts";
import { callAgent } from "../cni.ts";
import { createNode, type NodeFixture, TestNamespace } from "../tests/helpers/netns.ts";
import { summarize } from "./report.ts";
import { integerArgs } from "./args.ts";

const { pods: PODS, warmup: WARMUP } = integerArgs({
  pods: { default: 200, min: 2 },
  warmup: { default: 20 },
});
/** The target: metrics on within this factor of off. */
const TARGET_RATIO = 1.05;

const median = (samples: number[]) => summarize(samples).median;

const fmt = (ms: number) => ms.toFixed(3).padStart(8);

function row(label: string, samples: number[]): string {
  const { n, median, p99 } = summarize(samples);
  return `${label.padEnd(34)} ${String(n).padStart(5)} ${fmt(median)} ${fmt(p99)}`;
}

const dir = await Deno.makeTempDir({ prefix: "flock-metrics-bench-" });
let agent: Agent | undefined;
let node: NodeFixture | undefined;
const namespaces: TestNamespace[] = [];
try {
  // The node has an eth0 uplink like a real one; pods get a namespace each, made untimed.
  node = await createNode({ prefix: "flk-mb" });
  const nodePath = node.node.path;
  for (let i = 0; i <= PODS; i++) namespaces.push(await TestNamespace.create("flk-mbp"));
  const podPaths = namespaces.slice(0, PODS).map((ns) => ns.path);
  const warmPath = namespaces[PODS].path;

  const socketPath = join(dir, "flock.sock");
  agent = new Agent({
    nodeName: "metrics-bench",
    stateDir: join(dir, "state"),
    socketPath,
    netnsPath: nodePath,
    cooldownMs: 0,
    // Log lines are built and serialised as in production, then dropped.
    log: createLogger({ write: () => {} }),
  });
  const metrics = agent.metrics!;
  await agent.listen();
  await agent.configure(parseNodeConfig({ cidr6: "fd00:4d::/64", cidr4: "10.77.0.0/16" }, "bench"));

  const config = { cniVersion: "1.1.0", name: "flock", type: "flock", agentSocket: socketPath };
  const request = (command: "ADD" | "DEL", id: string, netns: string): RpcRequest => ({
    command,
    containerId: id,
    netns,
    ifname: "eth0",
    args: `K8S_POD_NAMESPACE=bench;K8S_POD_NAME=${id}`,
    config,
  });
  const call = async (req: RpcRequest): Promise<number> => {
    const t0 = performance.now();
    const r = await callAgent(socketPath, req, 30_000);
    const elapsed = performance.now() - t0;
    if (!r.ok) throw new Error(`${req.command} ${req.containerId}: ${JSON.stringify(r.error)}`);
    return elapsed;
  };

  for (let i = 0; i < WARMUP; i++) {
    agent.metrics = i % 2 === 0 ? metrics : undefined;
    await call(request("ADD", `warm-${i}`, warmPath));
    await call(request("DEL", `warm-${i}`, warmPath));
  }

  const add = { on: [] as number[], off: [] as number[] };
  const del = { on: [] as number[], off: [] as number[] };
  for (let i = 0; i < PODS; i++) {
    agent.metrics = i % 2 === 0 ? metrics : undefined;
    (i % 2 === 0 ? add.on : add.off).push(await call(request("ADD", `pod-${i}`, podPaths[i])));
  }
  agent.metrics = metrics;
  const scrapeMs: number[] = [];
  let scrapeBytes = 0;
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    scrapeBytes = (await metrics.encode()).length;
    scrapeMs.push(performance.now() - t0);
  }
  for (let i = 0; i < PODS; i++) {
    agent.metrics = i % 2 === 0 ? metrics : undefined;
    (i % 2 === 0 ? del.on : del.off).push(await call(request("DEL", `pod-${i}`, podPaths[i])));
  }
  agent.metrics = metrics;

  // The bare hook: what the request path adds per request with metrics on.
  const calls = 1_000_000;
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) metrics.request("ADD", undefined, 0.002);
  const hookNs = (performance.now() - t0) * 1e6 / calls;

  const addRatio = median(add.on) / median(add.off);
  const delRatio = median(del.on) / median(del.off);
  console.log(`metrics cost on the pod path (${PODS} pods, dual-stack, interleaved on/off)`);
  console.log(`${"".padEnd(34)} ${"n".padStart(5)} ${"median".padStart(8)} ${"p99".padStart(8)}`);
  console.log(row("ADD round trip, metrics off (ms)", add.off));
  console.log(row("ADD round trip, metrics on (ms)", add.on));
  console.log(row("DEL round trip, metrics off (ms)", del.off));
  console.log(row("DEL round trip, metrics on (ms)", del.on));
  console.log(row(`scrape at ${PODS} pods (ms)`, scrapeMs) + `  (${scrapeBytes} bytes)`);
  console.log(
    `metrics hook per request: ${hookNs.toFixed(0)} ns ` +
      `(${(hookNs / 1e6 / median(add.off) * 100).toFixed(4)}% of a median ADD)`,
  );
  console.log(
    `ADD median on/off: ${addRatio.toFixed(3)}  DEL median on/off: ${delRatio.toFixed(3)}`,
  );
  console.log(
    `${addRatio <= TARGET_RATIO ? "PASS" : "FAIL"}: ADD with metrics within ${
      ((TARGET_RATIO - 1) * 100).toFixed(0)
    }% of without (ratio ${addRatio.toFixed(3)} ≤ ${TARGET_RATIO})`,
  );
} finally {
  await agent?.close();
  for (const ns of namespaces) await ns.remove().catch((e) => console.error(`cleanup: ${e}`));
  await node?.remove();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
