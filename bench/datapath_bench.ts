/**
 * Per-pod datapath cost: `Datapath.setup` and `teardown` for N pods (default
 * 200) in process, inside a throwaway node namespace, next to the bare cost of
 * the netlink round trips they are made of.
 *
 * Pod namespaces are created with `ip netns add` before the timed region and
 * deleted afterwards (also on failure). Every request the library sends is
 * counted and timed by wrapping `Handle.prototype.execute`, `dump` and `executeAll` (a batch of
 * requests sent in one datagram counts as one round trip).
 *
 * Run as root: `deno run -A --no-lock bench/datapath_bench.ts [--pods 200]`
 *
 * @module
 */

import { getLinkByName, Handle, parseIP, type QueuedRequest } from "../netlink/mod.ts";
import type { MessageWriter, NetlinkMessage } from "../netlink/wire.ts";
import { Datapath, hostIfaceName, type PodNetwork } from "../agent/datapath.ts";
import { summarize } from "./report.ts";
import { integerArgs } from "./args.ts";

const { pods: PODS, warmup: WARMUP } = integerArgs({
  pods: { default: 200, min: 1 },
  warmup: { default: 20 },
});

const prefix = `flk-bench-${Deno.pid}`;
const created: string[] = [];

function ip(args: string[]): void {
  const out = new Deno.Command("ip", { args, stdout: "null", stderr: "piped" }).outputSync();
  if (!out.success) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

function addNetns(name: string): string {
  ip(["netns", "add", name]);
  created.push(name);
  return `/var/run/netns/${name}`;
}

function removeAll(): void {
  for (const name of created.splice(0)) {
    try {
      ip(["netns", "del", name]);
    } catch (e) {
      console.error(`cleanup: ${(e as Error).message}`);
    }
  }
}
globalThis.addEventListener("unload", removeAll);

// ---- instrumentation: count and time every netlink request --------------------------------

interface RequestLog {
  count: number;
  ms: number;
  ops: string[];
  opMs: number[];
}
let log: RequestLog | undefined;
const proto = Handle.prototype as unknown as Record<
  "execute" | "dump",
  (this: Handle, msg: MessageWriter, op: string) => NetlinkMessage[]
>;
/** Marks requests sent into a pod's namespace (the node's are the others). */
const podSide = (h: Handle) =>
  h.netnsPath.startsWith(`/var/run/netns/${prefix}-node`) ? "" : " [pod]";
const short = (op: string) => op.replace(/#\d+|[0-9a-f:.]+\/\d+|flock[0-9a-f]{8}/g, "…");
/** Times `call` as one round trip named `op` when a measurement is running. */
function logged<T>(op: () => string, call: () => T): T {
  if (!log) return call();
  const t0 = performance.now();
  try {
    return call();
  } finally {
    const ms = performance.now() - t0;
    log.ms += ms;
    log.opMs.push(ms);
    log.count++;
    log.ops.push(op());
  }
}
for (const method of ["execute", "dump"] as const) {
  const original = proto[method];
  proto[method] = function (msg, op) {
    return logged(() => short(op) + podSide(this), () => original.call(this, msg, op));
  };
}
// A batch is one round trip: one datagram out, its ACKs back. While `unbatched` is set, each of
// its requests is sent on its own instead, so that each is timed (see perRequest).
let unbatched = false;
const executeAll = Handle.prototype.executeAll;
Handle.prototype.executeAll = function (requests: QueuedRequest[]) {
  if (unbatched) {
    for (const r of requests) this.execute(r.msg, r.operation);
    return;
  }
  return logged(
    () => `batch [${requests.map((r) => short(r.operation)).join("; ")}]`,
    () => executeAll.call(this, requests),
  );
};

function measured<T>(fn: () => T): { ms: number; requests: RequestLog; value: T } {
  const requests: RequestLog = { count: 0, ms: 0, ops: [], opMs: [] };
  log = requests;
  const t0 = performance.now();
  try {
    const value = fn();
    return { ms: performance.now() - t0, requests, value };
  } finally {
    log = undefined;
  }
}

/**
 * Sets up `count` pods one after the other in `netns` with every request on its own (no
 * batches), tearing each down and letting the kernel's deferred work finish before the next;
 * returns each request's times, in the order setup sends them, and their names.
 */
async function perRequest(
  dp: Datapath,
  netns: string,
  first: number,
  count: number,
): Promise<{ ops: string[]; ms: number[][] }> {
  const ms: number[][] = [];
  let ops: string[] = [];
  for (let i = 0; i < count; i++) {
    const p = pod(first + i, netns);
    unbatched = true;
    try {
      const m = measured(() => dp.setup(p));
      m.requests.opMs.forEach((t, k) => (ms[k] ??= []).push(t));
      ops = m.requests.ops;
    } finally {
      unbatched = false;
    }
    dp.teardown(p.containerId, p);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { ops, ms };
}

// ---- statistics ---------------------------------------------------------------------------

function row(label: string, samples: number[], note = ""): string {
  const { n, median, p99, max } = summarize(samples);
  const f = (x: number) => x.toFixed(3).padStart(8);
  return `${label.padEnd(44)} ${String(n).padStart(5)} ${f(median)} ${f(p99)} ${f(max)}  ${note}`;
}

// ---- the run ------------------------------------------------------------------------------

function pod(i: number, netns: string): PodNetwork {
  const hex = i.toString(16);
  return {
    containerId: `bench${i.toString().padStart(6, "0")}${"0".repeat(52)}`,
    netns,
    ifname: "eth0",
    ipv6: parseIP(`fd00:be::${hex}`),
    ipv4: parseIP(`10.200.${i >> 8}.${i & 0xff}`),
  };
}

try {
  const nodePath = addNetns(`${prefix}-node`);
  // The node gets an eth0 uplink like a real one (a veth; this kernel has no dummy).
  ip(["netns", "add", `${prefix}-up`]);
  created.push(`${prefix}-up`);
  ip([
    "-n",
    `${prefix}-node`,
    ...`link add eth0 type veth peer name up0 netns ${prefix}-up`.split(" "),
  ]);
  ip(["-n", `${prefix}-node`, "link", "set", "eth0", "up"]);

  const t0 = performance.now();
  const podPaths: string[] = [];
  for (let i = 0; i < PODS; i++) podPaths.push(addNetns(`${prefix}-p${i}`));
  const warmPath = addNetns(`${prefix}-warm`);
  const prepMs = performance.now() - t0;

  const node = Handle.forNetns(nodePath);
  try {
    const dp = new Datapath(node);
    dp.ensureNode();

    // Warm-up (JIT, kernel slab caches): set up and tear down one pod repeatedly.
    for (let i = 0; i < WARMUP; i++) {
      const p = pod(60_000 + i, warmPath);
      dp.setup(p);
      dp.teardown(p.containerId, p);
    }

    const STEP_SAMPLES = 40;
    const stepsEmpty = await perRequest(dp, warmPath, 61_000, STEP_SAMPLES);

    const setup: number[] = [];
    const setupNetlink: number[] = [];
    const setupRequests: number[] = [];
    let setupOps: string[] = [];
    for (let i = 0; i < PODS; i++) {
      const m = measured(() => dp.setup(pod(i, podPaths[i])));
      setup.push(m.ms);
      setupNetlink.push(m.requests.ms);
      setupRequests.push(m.requests.count);
      if (i === 0) setupOps = m.requests.ops;
    }
    const problems = dp.check(pod(PODS - 1, podPaths[PODS - 1]));
    if (problems.length) throw new Error(`last pod is not right: ${problems.join("; ")}`);
    const stepsFull = await perRequest(dp, warmPath, 62_000, STEP_SAMPLES);

    // Bare round trips with PODS pods present.
    const getlink: number[] = [];
    const hostName = `flock${"0".repeat(8)}`; // absent: one GETLINK answered by ENODEV
    const presentName = hostIfaceName(pod(0, "").containerId);
    const getlinkPresent: number[] = [];
    for (let i = 0; i < 2000; i++) {
      let t = performance.now();
      getLinkByName(node, presentName);
      getlinkPresent.push(performance.now() - t);
      t = performance.now();
      getLinkByName(node, hostName);
      getlink.push(performance.now() - t);
    }
    const openNs: number[] = [];
    for (let i = 0; i < 500; i++) {
      const t = performance.now();
      Handle.forNetns(podPaths[i % PODS]).close();
      openNs.push(performance.now() - t);
    }
    const requestsPerSetup = summarize(setupRequests).median;
    const replay: number[] = [];
    for (let i = 0; i < 300; i++) {
      const t = performance.now();
      for (let j = 0; j < requestsPerSetup; j++) getLinkByName(node, presentName);
      replay.push(performance.now() - t);
    }

    const teardown: number[] = [];
    const teardownNetlink: number[] = [];
    const teardownRequests: number[] = [];
    const teardownPerOp: number[][] = [];
    let teardownOps: string[] = [];
    for (let i = 0; i < PODS; i++) {
      const p = pod(i, podPaths[i]);
      const m = measured(() => dp.teardown(p.containerId, { ipv6: p.ipv6, ipv4: p.ipv4 }));
      teardown.push(m.ms);
      teardownNetlink.push(m.requests.ms);
      teardownRequests.push(m.requests.count);
      m.requests.opMs.forEach((ms, k) => (teardownPerOp[k] ??= []).push(ms));
      if (i === 0) teardownOps = m.requests.ops;
    }

    const first = Math.min(50, Math.floor(PODS / 4));
    console.log(
      `flock datapath benchmark — ${PODS} pods, dual-stack, in a node namespace ` +
        `(kernel ${Deno.osRelease()}, Deno ${Deno.version.deno}; ${PODS} pod netns prepared ` +
        `in ${(prepMs / 1000).toFixed(1)} s, untimed)\n`,
    );
    console.log(
      `${"what (ms)".padEnd(44)} ${"n".padStart(5)} ${"median".padStart(8)} ${"p99".padStart(8)} ${
        "max".padStart(8)
      }`,
    );
    console.log(row("setup (one pod, whole call)", setup, "target: median < 3 ms"));
    console.log(row("  of which netlink round trips", setupNetlink));
    console.log(row(`  first ${first} pods`, setup.slice(0, first)));
    console.log(row(`  last ${first} pods (${PODS - first}+ present)`, setup.slice(-first)));
    console.log(row("teardown (one pod, whole call)", teardown));
    console.log(row("  of which netlink round trips", teardownNetlink));
    teardownOps.forEach((op, k) => console.log(row(`    ${k + 1}. ${op}`, teardownPerOp[k])));
    console.log(row("bare: RTM_GETLINK by name (present)", getlinkPresent));
    console.log(row("bare: RTM_GETLINK by name (absent, ENODEV)", getlink));
    console.log(row("bare: Handle.forNetns + close (pod netns)", openNs, "no netlink"));
    console.log(
      row(`bare: ${requestsPerSetup} × RTM_GETLINK (= setup's count)`, replay),
    );
    console.log(
      `\nround trips per setup: ${requestsPerSetup} (${setupOps.join(", ")})`,
    );
    console.log(
      `\nsetup's requests sent one by one (no batches), medians of ${STEP_SAMPLES} setups ` +
        `(ms): with 0 pods / with ${PODS} pods present`,
    );
    stepsEmpty.ops.forEach((op, k) => {
      const a = summarize(stepsEmpty.ms[k]).median, b = summarize(stepsFull.ms[k] ?? []).median;
      console.log(
        `  ${String(k + 1).padStart(2)}. ${op.padEnd(44)} ${a.toFixed(3)} / ${b.toFixed(3)}`,
      );
    });
    const sum = (steps: { ms: number[][] }) =>
      steps.ms.reduce((total, times) => total + summarize(times).median, 0);
    console.log(
      `  sum of the medians${" ".repeat(38)} ${sum(stepsEmpty).toFixed(3)} / ${
        sum(stepsFull).toFixed(3)
      }`,
    );
    console.log(
      `round trips per teardown: ${summarize(teardownRequests).median} (${teardownOps.join(", ")})`,
    );
    const median = summarize(setup).median;
    console.log(`\nsetup median ${median.toFixed(3)} ms: ${median < 3 ? "PASS" : "FAIL"} (< 3 ms)`);
  } finally {
    node.close();
  }
} finally {
  removeAll();
}
