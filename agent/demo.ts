/**
 * `flock demo [--nodes N]`: flock's main job with no cluster. It brings up N (default 2) node
 * namespaces on a shared "fabric" segment, each running BIRD and a flock agent in standalone
 * mode with its own NodeConfig; the nodes peer over BGP and learn each other's pod summaries.
 * It starts pods on every node through the real CNI exec path, shows their addresses and the
 * BGP-learned routes, pings pod to pod across nodes over IPv6 and IPv4, shows an anycast
 * address served on every node failing over when the local replica goes, then deletes the pods
 * and removes everything it made — also when a step fails or on Ctrl-C.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { locateBirdProgram } from "../bird/process.ts";
import {
  type BirdPrograms,
  DemoInterrupted,
  DemoLab,
  type DemoNode,
  must,
  run,
} from "./demo_lab.ts";
import {
  DEFAULT_DEMO_NODES,
  DEMO_ANYCAST,
  type DemoPodPlan,
  MAX_DEMO_NODES,
  planDemo,
} from "./demo_plan.ts";

/** Bound on BGP convergence (sessions up, every summary in every kernel). */
const CONVERGE_TIMEOUT_MS = 30_000;

/** A pod after its ADD: where it runs and what it got. */
interface RunningPod {
  node: DemoNode;
  pod: DemoPodPlan;
  /** `node/app`, as the output names it. */
  label: string;
  ipv6: string;
  ipv4: string;
  /** Already deleted (the anycast step deletes one). */
  deleted?: boolean;
}

function indent(text: string, by = "   "): string {
  return text.trimEnd().split("\n").map((l) => by + l).join("\n");
}

function seconds(since: number): string {
  return `${((performance.now() - since) / 1000).toFixed(1)} s`;
}

/** Runs the demo; returns the exit code (0 when every ping answered and nothing was left). */
export async function demoMain(args: string[]): Promise<number> {
  let nodeCount = DEFAULT_DEMO_NODES;
  try {
    const { values } = parseArgs({ args, options: { nodes: { type: "string" } }, strict: true });
    if (values.nodes !== undefined) nodeCount = Number(values.nodes);
    planDemo(nodeCount, "check");
  } catch (e) {
    console.error(
      `flock demo: ${(e as Error).message}\nusage: flock demo [--nodes 2..${MAX_DEMO_NODES}]`,
    );
    return 2;
  }
  if (Deno.uid() !== 0) {
    console.error("flock demo needs root (it creates network namespaces)");
    return 1;
  }
  const bird = locateBirdProgram("bird");
  const birdc = locateBirdProgram("birdc");
  if (!bird || !birdc) {
    console.error("flock demo needs BIRD 2 (bird and birdc; Debian package bird2)");
    return 1;
  }

  const tag = crypto.randomUUID().slice(0, 6);
  const plan = planDemo(nodeCount, tag);
  // Listen before the first thing is made, so that a Ctrl-C at any point is cleaned up after.
  const interrupt = new AbortController();
  const onSignal = () => interrupt.abort();
  for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, onSignal);
  const lab = await DemoLab.create(plan, interrupt);
  const started = performance.now();
  let ok = false;
  const nodes: DemoNode[] = [];
  try {
    ok = await runDemo(lab, { bird, birdc }, nodes);
  } catch (e) {
    // Ctrl-C in a terminal reaches the agents and BIRDs too, so a step may fail first.
    if (e instanceof DemoInterrupted || lab.interrupted) {
      console.error("== interrupted: cleaning up");
    } else {
      console.error(`demo failed: ${(e as Error).message}`);
      for (const node of nodes) {
        console.error(`-- ${node.plan.name} agent log (last lines)\n${await node.agentLogTail()}`);
        console.error(
          `-- ${node.plan.name} BIRD log (last lines)\n${
            (await node.bird.log()).trimEnd().split("\n").slice(-10).join("\n")
          }`,
        );
      }
    }
  } finally {
    await lab[Symbol.asyncDispose]();
    for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.removeSignalListener(sig, onSignal);
  }
  console.log(
    `== removed ${lab.removed.namespaces} namespaces, ${lab.removed.processes} processes and ${lab.dir}`,
  );
  const verdict = ok ? `OK (${seconds(started)})` : lab.interrupted ? "interrupted" : "FAILED";
  console.log(`== demo ${verdict}`);
  return ok ? 0 : lab.interrupted ? 130 : 1;
}

async function runDemo(lab: DemoLab, programs: BirdPrograms, nodes: DemoNode[]): Promise<boolean> {
  const plan = lab.plan;
  console.log(
    `== flock demo: ${plan.nodes.length} nodes routing pods over BGP, in namespaces ${plan.prefix}-*`,
  );
  console.log(`   work dir ${lab.dir}`);
  await lab.createFabric();
  console.log(`== fabric ${plan.fabricNs}: bridge br0, the nodes' shared segment`);
  for (const n of plan.nodes) {
    const peers = n.spec.bgp!.peers!.map((p) => `${p.address} (AS ${p.asn})`).join(", ");
    console.log(
      `   ${n.name} (${n.ns}): eth0 ${n.ipv4} ${n.ipv6}, AS ${n.asn}, pods ${n.spec.cidr6} ${n.spec.cidr4}, peers ${peers}`,
    );
  }

  // All nodes at once: each waits mostly for its agent to start. Settle all before going on,
  // so nothing is still being made when cleanup runs.
  const t0 = performance.now();
  const settled = await Promise.allSettled(plan.nodes.map((n) => lab.startNode(n, programs)));
  for (const s of settled) if (s.status === "fulfilled") nodes.push(s.value);
  const failed = settled.find((s) => s.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
  await Promise.all(nodes.map((n) => n.waitReady()));
  console.log(`== BIRD and a flock agent (standalone mode) run in every node (${seconds(t0)})`);

  console.log("== pods through the CNI exec path");
  const pods: RunningPod[] = [];
  for (const node of nodes) {
    for (const pod of node.plan.pods) {
      await lab.addPodNamespace(pod);
      pods.push(await addPod(node, pod));
    }
  }

  const t1 = performance.now();
  await waitConverged(lab, nodes);
  console.log(`== BGP: every node has the others' summaries in its kernel (${seconds(t1)})`);
  for (const node of nodes) {
    const sessions = (await node.bird.birdc(["show", "protocols"])).text.split("\n")
      .filter((l) => /\sBGP\s/.test(l)).map((l) => l.trim().split(/\s+/))
      .map(([name, , , state, ...rest]) => `${name} ${state} ${rest.at(-1)}`);
    console.log(`   ${node.plan.name} sessions: ${sessions.join("; ")}`);
    for (const fam of ["-6", "-4"]) {
      console.log(
        indent(
          await must("ip", ["-n", node.plan.ns, fam, "route", "show", "proto", "bird"]),
          "      ",
        ),
      );
    }
  }

  console.log("== ping across nodes (pod -> pod)");
  const apps = pods.filter((p) => p.pod.id.endsWith("-app"));
  let failures = 0;
  for (const from of apps) {
    for (const to of apps.filter((p) => p.node !== from.node)) {
      for (const target of [to.ipv6, to.ipv4]) {
        if (!(await ping(lab, from, `${to.label} ${target}`, target))) failures++;
      }
    }
  }

  failures += await showAnycast(lab, nodes, pods);

  console.log("== deleting the pods");
  for (const p of pods.filter((p) => !p.deleted)) {
    const r = await p.node.cni("DEL", p.pod);
    if (r.code !== 0) throw new Error(`DEL ${p.pod.id} failed: ${r.stdout}${r.stderr}`);
  }
  // A DEL answers before the kernel has finished deleting its veth (~40 ms): allow 2 s.
  let left = 0;
  for (let attempt = 0; attempt < 40; attempt++) {
    left = 0;
    for (const node of nodes) {
      const links = await must("ip", ["-n", node.plan.ns, "-br", "link"]);
      left += links.split("\n").filter((l) => l.startsWith("flock")).length;
    }
    if (left === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  console.log(`   flock links left on the nodes: ${left}`);
  return failures === 0 && left === 0;
}

async function addPod(node: DemoNode, pod: DemoPodPlan): Promise<RunningPod> {
  const t = performance.now();
  const r = await node.cni("ADD", pod);
  if (r.code !== 0) throw new Error(`ADD ${pod.id} failed: ${r.stdout}${r.stderr}`);
  const result = JSON.parse(r.stdout);
  const ips: string[] = result.ips.map((i: { address: string }) => i.address);
  const anycast = Object.values(pod.annotations).join(" ");
  console.log(
    `   ${node.plan.name}: ${pod.id}  ${ips.join("  ")}  host ${result.interfaces[0].name}${
      anycast ? `  anycast ${anycast}` : ""
    }  (${(performance.now() - t).toFixed(0)} ms)`,
  );
  const label = `${node.plan.name}/${pod.id.split("-").at(-1)}`;
  const address = (v6: boolean) => ips.find((a) => a.includes(":") === v6)!.split("/")[0];
  return { node, pod, label, ipv6: address(true), ipv4: address(false) };
}

/** Waits until every node's kernel has every other node's summaries as `proto bird` routes. */
async function waitConverged(lab: DemoLab, nodes: DemoNode[]): Promise<void> {
  for (const node of nodes) {
    const want = nodes.filter((n) => n !== node).flatMap((
      n,
    ) => [n.plan.spec.cidr6!, n.plan.spec.cidr4!]);
    await lab.waitFor(`the other nodes' summaries in ${node.plan.name}'s kernel`, async () => {
      const got = [
        ...await node.routes(["-6", "route", "show", "proto", "bird"]),
        ...await node.routes(["-4", "route", "show", "proto", "bird"]),
      ].map((r) => r.dst);
      return want.every((p) => got.includes(p));
    }, CONVERGE_TIMEOUT_MS);
  }
}

/** One ping from a pod's namespace; prints the line the demo test looks for. */
async function ping(
  lab: DemoLab,
  from: RunningPod,
  what: string,
  target: string,
): Promise<boolean> {
  lab.checkInterrupted();
  const r = await run("nsenter", [
    `--net=/var/run/netns/${from.pod.ns}`,
    "--",
    ..."ping -c 1 -W 2".split(" "),
    target,
  ]);
  const rtt = /time=([\d.]+ ms)/.exec(r.stdout)?.[1];
  console.log(`   ${from.label} -> ${what}: ${r.code === 0 ? `ok (${rtt})` : "FAILED"}`);
  return r.code === 0;
}

/**
 * The anycast address every node's `web` pod serves: each node routes it to its local replica
 * while BIRD also knows the other nodes' paths; deleting node 1's replica moves node 1's route
 * to the other nodes (proto bird) and its pods still reach the address. Returns failed pings.
 */
async function showAnycast(lab: DemoLab, nodes: DemoNode[], pods: RunningPod[]): Promise<number> {
  const [first] = nodes;
  const app = pods.find((p) => p.node === first && p.pod.id.endsWith("-app"))!;
  const web = pods.find((p) => p.node === first && p.pod.id.endsWith("-web"))!;
  const targets = [DEMO_ANYCAST.ipv6, DEMO_ANYCAST.ipv4];
  console.log(`== anycast ${targets.join(" ")}: a web pod on every node serves it`);
  const paths = await first.bird.birdc(["show", "route", "for", DEMO_ANYCAST.ipv6, "all"]);
  console.log(`   ${first.plan.name} BIRD knows these paths to ${DEMO_ANYCAST.ipv6}:`);
  const pathLines = paths.text.split("\n").filter((l) => /\[|via|dev/.test(l));
  console.log(pathLines.map((l) => `      ${l.trim().replace(/\s+/g, " ")}`).join("\n"));
  let failures = 0;
  for (const target of targets) {
    console.log(await kernelRoute(first, target));
    if (!(await ping(lab, app, `anycast ${target}`, target))) failures++;
  }

  console.log(
    `== deleting ${web.label}: ${first.plan.name} now reaches the anycast on the other nodes`,
  );
  const r = await first.cni("DEL", web.pod);
  if (r.code !== 0) throw new Error(`DEL ${web.pod.id} failed: ${r.stdout}${r.stderr}`);
  web.deleted = true;
  const t = performance.now();
  for (const [fam, target] of [["-6", DEMO_ANYCAST.ipv6], ["-4", DEMO_ANYCAST.ipv4]] as const) {
    await lab.waitFor(`${target} learned over BGP on ${first.plan.name}`, async () => {
      const routes = await first.routes([fam, "route", "show", target]);
      return routes.some((r) => r.protocol === "bird");
    }, CONVERGE_TIMEOUT_MS);
  }
  console.log(`   learned over BGP in ${(performance.now() - t).toFixed(0)} ms`);
  for (const target of targets) {
    console.log(await kernelRoute(first, target));
    if (!(await ping(lab, app, `anycast ${target} (remote)`, target))) failures++;
  }
  return failures;
}

/** `NODE kernel: ROUTE` for a host address (`ip route show ADDRESS`, nexthops on one line). */
async function kernelRoute(node: DemoNode, address: string): Promise<string> {
  const fam = address.includes(":") ? "-6" : "-4";
  const shown = await must("ip", ["-n", node.plan.ns, fam, "route", "show", address]);
  return `   ${node.plan.name} kernel: ${shown.trim().replace(/\s+/g, " ")}`;
}
