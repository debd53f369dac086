/**
 * The agent's side of a pod start (BRIEF §8): the time the agent itself spends on one ADD, with
 * an empty node and with 1,000 pods on it, and the agent's memory (VmRSS) idle and at 1,000 pods,
 * with where it is (bench/smaps.ts: the deno executable's code, V8's heap, malloc, …).
 *
 * The agent runs as its own process inside a node namespace (the test fixture `FlockNode`,
 * standalone mode). Requests go straight to its RPC socket, so no plugin exec is in the
 * figures. The time per ADD is the `ms` of the agent's own log line for it (request decoded to
 * response ready), next to the socket round trip the client sees (connect, request, agent work,
 * response); when the log lacks lines, the round trip is the figure.
 *
 * Run as root: `deno run -A --no-lock bench/agent_bench.ts [--samples 200] [--pods 1000]
 * [--bare-uplink]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { callAgent } from "../cni.ts";
import type { RpcRequest } from "../agent/protocol.ts";
import { FlockNode } from "../tests/helpers/flock.ts";
import {
  addNamespaces,
  deleteNamespaces,
  formatRss,
  medianP99,
  ms,
  ratio,
  type ResultRow,
  rssOf,
  summarize,
} from "./report.ts";
import { formatBreakdown, rssBreakdownOf } from "./smaps.ts";
import { agentDenoDir } from "./agent_deno_dir.ts";

/** Options of {@linkcode runAgentBench}. */
export interface AgentBenchOptions {
  /** Timed ADD (+ DEL) pairs at each pod count. */
  samples: number;
  /** Pods on the node for the second measurement. */
  pods: number;
  /** Progress lines on stderr. */
  progress?: (line: string) => void;
  /**
   * Give the node's uplink an IPv4 address, as a dual-stack node has (default true; false
   * reproduces the figures before 2026-12-02). Without one, each IPv4 host route makes the kernel
   * scan every device of the node for a source address (`inet_select_addr`), which grows with the
   * pods (docs/benchmarks.md, "Link-up experiments").
   */
  uplinkIPv4?: boolean;
}

const CONFIG = { cidr6: "fd00:98::/64", cidr4: "10.98.0.0/16" };
const RPC_TIMEOUT_MS = 30_000;
/** Quiet time before the last RSS reading (V8's memory reducer starts 8 s after activity). */
const LONG_IDLE_MS = 20_000;

/** Agent-side and round-trip times of one series of requests. */
interface Series {
  agentAdd: number[];
  agentDel: number[];
  rpcAdd: number[];
}

/** The agent's own duration (`ms`) per (command, container ID) from its JSON log lines. */
function agentTimes(log: string): Map<string, number> {
  const times = new Map<string, number>();
  for (const line of log.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const entry = JSON.parse(line) as Record<string, unknown>;
      if (typeof entry.ms === "number" && typeof entry.command === "string") {
        times.set(`${entry.command} ${entry.containerId}`, entry.ms);
      }
    } catch { /* not a log line of ours */ }
  }
  return times;
}

/** Runs the agent benchmark; returns the table rows. */
export async function runAgentBench(opts: AgentBenchOptions): Promise<ResultRow[]> {
  const progress = opts.progress ?? (() => {});
  const tag = `flk-ab-${Deno.pid}`;
  const measureNs = `${tag}-m`;
  const fillNs = Array.from({ length: opts.pods }, (_, i) => `${tag}-${i}`);
  // The agent's memory as on a node: with a Deno cache of its own (agent_deno_dir.ts).
  await using denoDir = await agentDenoDir();
  const node = await FlockNode.start({
    config: CONFIG,
    name: "bench-agent",
    agentEnv: { DENO_DIR: denoDir.path },
    nodeOptions: (opts.uplinkIPv4 ?? true)
      ? { ipv4: { node: "192.0.2.11/24", peer: "192.0.2.1/24" } }
      : undefined,
  });
  try {
    await addNamespaces([measureNs]);
    const config = JSON.parse(await node.netconf()) as Record<string, unknown>;
    const request = (command: "ADD" | "DEL", containerId: string, netns: string): RpcRequest => ({
      command,
      containerId,
      netns: `/var/run/netns/${netns}`,
      ifname: "eth0",
      args: "",
      config,
    });
    const call = async (req: RpcRequest): Promise<number> => {
      const t = performance.now();
      const res = await callAgent(node.socketPath, req, RPC_TIMEOUT_MS);
      if (!res.ok) {
        throw new Error(`${req.command} ${req.containerId}: ${JSON.stringify(res.error)}`);
      }
      return performance.now() - t;
    };
    const agentPid = node.agent!.pid;
    // Steady state: past the agent's idle work (1 s after the last request it trims malloc).
    const settle = () => new Promise((r) => setTimeout(r, 2_000));
    await settle();
    const rssIdle = await rssOf(agentPid);
    const mapsIdle = await rssBreakdownOf(agentPid);

    /** `count` ADD+DEL pairs in the measuring namespace; the node keeps its pod count. */
    const series = async (label: string, count: number): Promise<Series> => {
      const ids: string[] = [];
      const rpcAdd: number[] = [];
      for (let i = 0; i < count; i++) {
        const id = `${label}-${i}`;
        ids.push(id);
        rpcAdd.push(await call(request("ADD", id, measureNs)));
        await call(request("DEL", id, measureNs));
        // DEL answers before its veth is gone; the next ADD into this netns would wait for it.
        await node.settled();
      }
      // The log reaches the file through this process's pipe: wait (bounded) for the last line.
      let times = new Map<string, number>();
      for (let wait = 0; wait < 20; wait++) {
        times = agentTimes(await node.agentLog());
        if (times.has(`DEL ${ids[ids.length - 1]}`)) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const pick = (cmd: string) =>
        ids.map((id) => times.get(`${cmd} ${id}`)).filter((t): t is number => t !== undefined);
      return { agentAdd: pick("ADD"), agentDel: pick("DEL"), rpcAdd };
    };

    await series("warm", 20);
    const empty = await series("empty", opts.samples);
    progress(`empty node: ${opts.samples} ADD+DEL done`);

    await addNamespaces(fillNs);
    const fillStart = performance.now();
    const fillRpc: number[] = [];
    const lanes = 2;
    await Promise.all(Array.from({ length: lanes }, async (_, lane) => {
      for (let i = lane; i < fillNs.length; i += lanes) {
        fillRpc.push(await call(request("ADD", `fill-${i}`, fillNs[i])));
        if (i % 200 === 0) progress(`filling: ${i}/${opts.pods}`);
      }
    }));
    const fillSeconds = (performance.now() - fillStart) / 1000;
    const links = (await node.flockLinks()).length;
    if (links !== opts.pods) throw new Error(`expected ${opts.pods} flock links, found ${links}`);
    await settle();
    const rssFull = await rssOf(agentPid);
    const mapsFull = await rssBreakdownOf(agentPid);
    const full = await series("full", opts.samples);
    // A node idle for longer: V8's memory reducer collects the garbage of the burst ~8 s after
    // the last request, and idle runtime threads exit after 10 s. Context, not the verdict.
    await new Promise((r) => setTimeout(r, LONG_IDLE_MS));
    const rssLongIdle = await rssOf(agentPid);
    progress(`${opts.pods} pods: ${opts.samples} ADD+DEL done`);

    // The agent's own timing when its log has every request; else the socket round trip.
    const fromLog = empty.agentAdd.length === opts.samples && full.agentAdd.length === opts.samples;
    const source = fromLog ? "agent-side ADD (its log)" : "ADD over the agent socket";
    const e = summarize(fromLog ? empty.agentAdd : empty.rpcAdd);
    const f = summarize(fromLog ? full.agentAdd : full.rpcAdd);
    const growth = f.median / e.median;
    const addRow = (what: string, s: typeof e): ResultRow[] => [
      {
        what: `${what}: median`,
        figure: `${ms(s.median)} (n=${s.n})`,
        target: "≤ 3 ms",
        pass: s.median <= 3,
      },
      { what: `${what}: p99`, figure: ms(s.p99), target: "≤ 15 ms", pass: s.p99 <= 15 },
    ];
    return [
      ...addRow(`${source}, empty node`, e),
      ...addRow(`${source}, ${opts.pods} pods`, f),
      {
        what: `${opts.pods}-pod median / empty median`,
        figure: ratio(growth),
        target: "≤ 1.2×",
        pass: growth <= 1.2,
      },
      {
        what: "ADD socket round trip (client side), empty; full",
        figure: `${medianP99(summarize(empty.rpcAdd))}; ${medianP99(summarize(full.rpcAdd))}`,
      },
      {
        what: "DEL as the agent logs it, empty / full (medians)",
        figure: `${ms(summarize(empty.agentDel).median)} / ${ms(summarize(full.agentDel).median)}`,
      },
      {
        what: `filling ${opts.pods} pods over the socket (2 at a time)`,
        figure: `${(opts.pods / fillSeconds).toFixed(0)} pods/s, ${
          medianP99(summarize(fillRpc))
        } per ADD`,
      },
      {
        what: "agent VmRSS, idle",
        figure: formatRss(rssIdle),
        target: "≤ 64 MiB",
        pass: rssIdle.total <= 64,
      },
      {
        what: `agent VmRSS, ${opts.pods} pods`,
        figure: formatRss(rssFull),
        target: "≤ 64 MiB",
        pass: rssFull.total <= 64,
      },
      {
        what: `agent VmRSS, ${opts.pods} pods, ${LONG_IDLE_MS / 1000} s after the last request`,
        figure: formatRss(rssLongIdle),
      },
      { what: "agent RSS by mapping (MiB), idle", figure: formatBreakdown(mapsIdle) },
      { what: `agent RSS by mapping (MiB), ${opts.pods} pods`, figure: formatBreakdown(mapsFull) },
    ];
  } finally {
    // Deleting the node namespace takes every pod's host veth with it, in one kernel batch.
    await node.remove();
    await deleteNamespaces([measureNs, ...fillNs]);
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      samples: { type: "string", default: "200" },
      pods: { type: "string", default: "1000" },
      "bare-uplink": { type: "boolean", default: false },
    },
  });
  const { formatTable } = await import("./report.ts");
  const rows = await runAgentBench({
    samples: Number(values.samples),
    pods: Number(values.pods),
    uplinkIPv4: !values["bare-uplink"],
    progress: (line) => console.error(line),
  });
  console.log(formatTable("agent", rows));
}
