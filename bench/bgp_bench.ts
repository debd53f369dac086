/**
 * BGP convergence through the real parts: a gobgpd ToR and flock nodes (agent + BIRD) in
 * namespaces. Measures
 * - anycast announce: from a CNI ADD (with the anycast annotation) returning to the /128 being
 *   in the ToR's RIB, and withdraw: from the last DEL returning to its withdrawal there;
 * - a new node: from starting its agent (BIRD already up on a bootstrap config) to its summary
 *   route being in another node's kernel.
 *
 * The ToR side is read from a `gobgp monitor global rib -j` stream (one process, events
 * timestamped as they arrive), not by polling the CLI, which costs about 75 ms a call.
 *
 * Run as root: `deno run -A --no-lock bench/bgp_bench.ts [--trials 50] [--nodes 3]`
 *
 * @module
 */

import { GobgpTor } from "../tests/helpers/gobgp.ts";
import { type BgpNodePlan, startBgpNode } from "../tests/helpers/bgp_lab.ts";
import { TestNamespace } from "../tests/helpers/netns.ts";
import { gobgpPath } from "../tests/helpers/tools.ts";
import { formatTable, medianP99, ms, type ResultRow, summarize } from "./report.ts";
import { integerArgs } from "./args.ts";

const { trials: TRIALS, nodes: NEW_NODES } = integerArgs({
  trials: { default: 50, min: 1 },
  nodes: { default: 3 },
});
const TARGET_MS = 100; // BRIEF §8: anycast at the ToR after ADD / gone after the last DEL
const TOR_AS = 65000;
const ANYCAST = "fd00:ffff::5";
const PREFIX = `${ANYCAST}/128`;

function plan(i: number): BgpNodePlan {
  return {
    name: `bench-node-${i}`,
    ipv4: `10.0.0.${10 + i}`,
    ipv6: `fd00:a::${10 + i}`,
    spec: {
      cidr6: `fd00:${i}::/64`,
      cidr4: `10.244.${i}.0/24`,
      anycastCIDRs: ["fd00:ffff::/112"],
      bgp: { asn: 65000 + i, peers: [{ address: "10.0.0.1", asn: TOR_AS }] },
    },
  };
}

/** `gobgp monitor global rib` as a stream of (prefix, withdrawn, time) events. */
class RibMonitor {
  readonly #child: Deno.ChildProcess;
  #waiters: { prefix: string; withdrawal: boolean; resolve: (t: number) => void }[] = [];
  readonly done: Promise<void>;

  constructor(tor: GobgpTor, family: "ipv4" | "ipv6") {
    this.#child = new Deno.Command(gobgpPath(), {
      args: [
        "--target",
        `unix://${tor.socketPath}`,
        "monitor",
        "global",
        "rib",
        "-a",
        family,
        "-j",
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.done = this.#read();
  }

  async #read(): Promise<void> {
    let buf = "";
    for await (const chunk of this.#child.stdout.pipeThrough(new TextDecoderStream())) {
      const now = performance.now();
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line.startsWith("[")) continue;
        for (
          const path of JSON.parse(line) as { nlri: { prefix: string }; withdrawal?: boolean }[]
        ) {
          const withdrawal = path.withdrawal === true;
          this.#waiters = this.#waiters.filter((w) => {
            if (w.prefix !== path.nlri.prefix || w.withdrawal !== withdrawal) return true;
            w.resolve(now);
            return false;
          });
        }
      }
    }
  }

  /** Resolves with the arrival time of the next matching event (registered before acting). */
  next(prefix: string, withdrawal: boolean, timeoutMs = 10_000): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no event for ${prefix}`)), timeoutMs);
      this.#waiters.push({
        prefix,
        withdrawal,
        resolve: (t) => {
          clearTimeout(timer);
          resolve(t);
        },
      });
    });
  }

  async close(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // gone
    }
    await this.#child.status;
    await this.done.catch(() => {});
  }
}

async function main(): Promise<void> {
  await using cleanup = new AsyncDisposableStack();
  const neighbors = Array.from({ length: 2 + NEW_NODES }, (_, i) => ({
    address: plan(i + 1).ipv4!,
    asn: 65001 + i,
  }));
  const tor = await GobgpTor.start({
    asn: TOR_AS,
    routerId: "10.0.0.1",
    addresses: ["10.0.0.1/24", "fd00:a::1/64"],
    neighbors,
  });
  cleanup.use(tor);
  const n1 = await startBgpNode(tor, plan(1), cleanup);
  const n2 = await startBgpNode(tor, plan(2), cleanup);
  await tor.waitRib("ipv6", (rib) => "fd00:1::/64" in rib && "fd00:2::/64" in rib, 30_000);
  const monitor = new RibMonitor(tor, "ipv6");
  cleanup.defer(() => monitor.close());
  // Let the monitor's initial dump pass.
  await new Promise((r) => setTimeout(r, 500));

  const pod = await TestNamespace.create("flk-bgpb");
  cleanup.use(pod);
  const netconfExtra = {
    runtimeConfig: {
      "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/anycast": ANYCAST },
    },
  };
  // Times from the plugin's exit ("returned") and from its start: the agent programs the route
  // before it answers, so the ToR often has it before the plugin process has exited (< 0 ms).
  const announce: number[] = [];
  const withdraw: number[] = [];
  const announceFromStart: number[] = [];
  const withdrawFromStart: number[] = [];
  for (let i = 0; i < TRIALS; i++) {
    const id = `bench-any-${i}`;
    const seen = monitor.next(PREFIX, false);
    const addStart = performance.now();
    const add = await n1.flock.cni("ADD", {
      containerId: id,
      netns: pod.path,
      extraConfig: netconfExtra,
    });
    const added = performance.now();
    if (add.code !== 0) throw new Error(`ADD failed: ${add.stdout}${add.stderr}`);
    announce.push(await seen - added);
    announceFromStart.push(await seen - addStart);
    const gone = monitor.next(PREFIX, true);
    const delStart = performance.now();
    const del = await n1.flock.cni("DEL", { containerId: id, netns: pod.path });
    const deleted = performance.now();
    if (del.code !== 0) throw new Error(`DEL failed: ${del.stdout}`);
    withdraw.push(await gone - deleted);
    withdrawFromStart.push(await gone - delStart);
  }

  // New nodes: agent start -> its summary in n2's kernel (BIRD to ToR to n2's BIRD to kernel).
  const join: number[] = [];
  for (let k = 0; k < NEW_NODES; k++) {
    const p = plan(3 + k);
    const t0 = performance.now();
    await startBgpNode(tor, p, cleanup);
    const deadline = Date.now() + 30_000;
    for (;;) {
      const routes = await n2.flock.ns.ipJson<{ dst: string }[]>([
        "-6",
        "route",
        "show",
        "proto",
        "bird",
      ]);
      if (routes.some((r) => r.dst === p.spec.cidr6)) break;
      if (Date.now() > deadline) throw new Error(`${p.name} never reached n2`);
      await new Promise((r) => setTimeout(r, 10));
    }
    join.push(performance.now() - t0);
  }

  const a = summarize(announce);
  const w = summarize(withdraw);
  const j = summarize(join);
  const as = summarize(announceFromStart);
  const ws = summarize(withdrawFromStart);
  const rows: ResultRow[] = [
    {
      what: "anycast in ToR RIB after ADD returned",
      figure: medianP99(a),
      target: `median ≤ ${TARGET_MS} ms`,
      pass: a.median <= TARGET_MS,
    },
    {
      what: "anycast withdrawn at ToR after last DEL",
      figure: medianP99(w),
      target: `median ≤ ${TARGET_MS} ms`,
      pass: w.median <= TARGET_MS,
    },
    { what: "  same, from the plugin's start (exec incl.)", figure: medianP99(as) },
    { what: "  same for the withdrawal, from DEL's start", figure: medianP99(ws) },
    {
      what: "new node: agent start -> summary in peer's kernel",
      figure: `median ${ms(j.median)} / max ${ms(j.max)} (n=${j.n})`,
    },
    {
      what: "reference: BIRD kernel->ToR (notes/bird.md)",
      figure: "14-31 ms",
    },
  ];
  console.log(formatTable("BGP convergence (gobgpd ToR, BIRD per node)", rows));
}

if (import.meta.main) await main();
