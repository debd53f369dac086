/**
 * The CNI exec path, measured as a runtime sees it (BRIEF §8): every plugin is exec'd with the
 * CNI environment variables and its network config on stdin, inside a node namespace
 * (`nsenter --net=NODE -- PLUGIN`), exactly like containerd runs a plugin in its own namespace.
 *
 * - ADD+DEL cycle of flock (dual-stack, through `dist/flock` and the agent) next to the
 *   reference plugins ptp + host-local dual-stack and ptp + host-local IPv4-only, in one run,
 *   interleaved so machine noise hits all three alike; median, p99 and the ratios.
 * - N (default 50) concurrent flock ADDs: all succeed, no duplicate address, pods per second.
 *
 * Run as root: `deno run -A --no-lock bench/cni_bench.ts [--cycles 40] [--ds-cycles 10]`
 *
 * @module
 */

import { join } from "node:path";
import { FlockNode } from "../tests/helpers/flock.ts";
import { referencePtpConflist } from "../tests/helpers/cnitool.ts";
import { referencePluginDir } from "../tests/helpers/tools.ts";
import { writeLauncher } from "../scripts/build.ts";
import {
  addNamespaces,
  childrenCpuMs,
  deleteNamespaces,
  medianP99,
  ms,
  processCpuMs,
  ratio,
  type ResultRow,
  summarize,
} from "./report.ts";
import { integerArgs } from "./args.ts";

/** Options of {@linkcode runCniBench}. */
export interface CniBenchOptions {
  /** ADD+DEL cycles of flock and of ptp IPv4-only. */
  cycles: number;
  /** ADD+DEL cycles of ptp dual-stack (each waits ~1-2 s for DAD). */
  dsCycles: number;
  /** Number of concurrent ADDs. */
  concurrent: number;
  /** Rounds of the concurrent ADD burst. */
  rounds: number;
  /** Progress lines on stderr. */
  progress?: (line: string) => void;
}

/** One exec of a plugin: wall time from spawn to exit, CPU time, and what it printed. */
interface PluginRun {
  ms: number;
  /** CPU of the exec and its children; meaningful only when no other exec overlaps it. */
  cpuMs: number;
  code: number;
  stdout: string;
}

/** A plugin as a runtime invokes it: its path, its network config and its CNI_PATH. */
interface PluginSetup {
  label: string;
  path: string;
  netconf: string;
  cniPath: string;
}

const PTP4 = { subnet4: "10.96.0.0/16" };
const PTP_DS = { subnet4: "10.95.0.0/16", subnet6: "fd00:95::/64" };
const FLOCK_CONFIG = { cidr6: "fd00:97::/64", cidr4: "10.97.0.0/16" };

/** Execs `plugin` in the node namespace with a runtime's environment; times spawn to exit. */
async function execPlugin(
  nodeNs: string,
  plugin: PluginSetup,
  command: "ADD" | "DEL",
  containerId: string,
  netns: string,
): Promise<PluginRun> {
  const cpuBefore = childrenCpuMs();
  const started = performance.now();
  const child = new Deno.Command("nsenter", {
    args: [`--net=${nodeNs}`, "--", plugin.path],
    clearEnv: true,
    env: {
      PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_NETNS: netns,
      CNI_IFNAME: "eth0",
      CNI_PATH: plugin.cniPath,
    },
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(plugin.netconf));
  await w.close();
  const out = await child.output();
  return {
    ms: performance.now() - started,
    cpuMs: childrenCpuMs() - cpuBefore,
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
  };
}

function ok(run: PluginRun, what: string): PluginRun {
  if (run.code !== 0) throw new Error(`${what} failed (exit ${run.code}): ${run.stdout.trim()}`);
  return run;
}

function ptpNetconf(name: string, dataDir: string, subnets: typeof PTP4 | typeof PTP_DS): string {
  const list = referencePtpConflist({ name, dataDir, ...subnets }) as {
    plugins: Record<string, unknown>[];
  };
  const { plugins, ...header } = list;
  return JSON.stringify({ ...header, ...plugins[0] });
}

/** Addresses (without prefix length) of a CNI Result. */
function resultAddresses(stdout: string): string[] {
  const result = JSON.parse(stdout) as { ips?: { address: string }[] };
  return (result.ips ?? []).map((ip) => ip.address.split("/")[0]);
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** Runs the exec-path benchmark; returns the table rows. */
export async function runCniBench(opts: CniBenchOptions): Promise<ResultRow[]> {
  const progress = opts.progress ?? (() => {});
  const tag = `flk-cb-${Deno.pid}`;
  const podNames: string[] = [];
  // A bundle older than the plugin's sources sends every exec down the launcher's slow lane
  // (main.ts, ~10 ms more): rebuild it so that the current code is measured.
  await writeLauncher();
  const node = await FlockNode.start({ config: FLOCK_CONFIG, name: "bench-node" });
  // host-local's state dirs; made after the node so that a failed start leaves nothing behind.
  const dir = await Deno.makeTempDir({ prefix: "flock-cni-bench-" });
  try {
    const refDir = referencePluginDir();
    const plugins = {
      flock: {
        label: "flock dual-stack",
        path: node.plugin,
        netconf: await node.netconf(),
        cniPath: node.binDir,
      },
      ptp4: {
        label: "ptp+host-local IPv4-only",
        path: join(refDir, "ptp"),
        netconf: ptpNetconf("bench-ptp4", join(dir, "ptp4"), PTP4),
        cniPath: refDir,
      },
      ptpDs: {
        label: "ptp+host-local dual-stack",
        path: join(refDir, "ptp"),
        netconf: ptpNetconf("bench-ptpds", join(dir, "ptpds"), PTP_DS),
        cniPath: refDir,
      },
    } satisfies Record<string, PluginSetup>;

    // One pod namespace per plugin for the cycles (reused: DEL leaves it empty), plus one per
    // concurrent ADD.
    const cyclePods = { flock: `${tag}-f`, ptp4: `${tag}-p4`, ptpDs: `${tag}-pds` };
    const burstPods = Array.from({ length: opts.concurrent }, (_, i) => `${tag}-c${i}`);
    podNames.push(...Object.values(cyclePods), ...burstPods);
    await addNamespaces(podNames);
    const nsPath = (name: string) => `/var/run/netns/${name}`;

    // What nsenter + exec alone costs (included in every figure below, for every plugin).
    const bare: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t = performance.now();
      await new Deno.Command("nsenter", { args: [`--net=${node.ns.path}`, "--", "/bin/true"] })
        .output();
      bare.push(performance.now() - t);
    }

    const newSamples = () => ({
      add: [] as number[],
      del: [] as number[],
      cycle: [] as number[],
      /** CPU of both execs, plus the agent's for flock. */
      cpu: [] as number[],
    });
    const samples = { flock: newSamples(), ptp4: newSamples(), ptpDs: newSamples() };
    const agentPid = node.agent!.pid;
    const cycle = async (key: keyof typeof plugins, i: number) => {
      const plugin = plugins[key];
      const id = `bench-${key}-${i}`;
      const netns = nsPath(cyclePods[key]);
      const agentCpu = key === "flock" ? await processCpuMs(agentPid) : 0;
      const add = ok(await execPlugin(node.ns.path, plugin, "ADD", id, netns), `${key} ADD`);
      const del = ok(await execPlugin(node.ns.path, plugin, "DEL", id, netns), `${key} DEL`);
      // flock's DEL answers before its veth is gone; the kernel's deletion (~40 ms) would slow
      // the reference's next veth deletion (measured: ptp's DEL 26 → 45 ms). Untimed, and
      // before the agent's CPU is read, so that the deletion's CPU is counted.
      if (key === "flock") await node.settled();
      samples[key].add.push(add.ms);
      samples[key].del.push(del.ms);
      samples[key].cycle.push(add.ms + del.ms);
      const agentUsed = key === "flock" ? await processCpuMs(agentPid) - agentCpu : 0;
      samples[key].cpu.push(add.cpuMs + del.cpuMs + agentUsed);
    };
    // Warm-up: first runs fill page caches and Deno's code cache.
    for (const key of ["flock", "ptp4"] as const) await cycle(key, -1);
    for (const key of Object.keys(samples) as (keyof typeof samples)[]) {
      for (const list of Object.values(samples[key])) list.length = 0;
    }
    // Interleave: flock and ptp4 every round, ptp dual-stack spread evenly over the rounds.
    const dsEvery = Math.max(1, Math.floor(opts.cycles / Math.max(1, opts.dsCycles)));
    for (let i = 0; i < opts.cycles; i++) {
      await cycle("flock", i);
      await cycle("ptp4", i);
      if (i % dsEvery === 0 && samples.ptpDs.cycle.length < opts.dsCycles) {
        await cycle("ptpDs", i);
      }
      if (i % 10 === 9) progress(`cycles: ${i + 1}/${opts.cycles}`);
    }
    while (samples.ptpDs.cycle.length < opts.dsCycles) {
      await cycle("ptpDs", opts.cycles + samples.ptpDs.cycle.length);
    }

    const flock = summarize(samples.flock.cycle);
    const ptp4 = summarize(samples.ptp4.cycle);
    const ptpDs = summarize(samples.ptpDs.cycle);
    const rows: ResultRow[] = [
      { what: "nsenter + exec of /bin/true (in every figure)", figure: medianP99(summarize(bare)) },
    ];
    for (const key of ["flock", "ptp4", "ptpDs"] as const) {
      const c = summarize(samples[key].cycle);
      rows.push({ what: `ADD+DEL cycle, ${plugins[key].label}`, figure: medianP99(c) });
      rows.push({
        what: `  of which ADD / DEL (medians)`,
        figure: `${ms(summarize(samples[key].add).median)} / ${
          ms(summarize(samples[key].del).median)
        }`,
      });
      rows.push({
        what: key === "flock"
          ? "  CPU per cycle (2 execs + agent, mean)"
          : "  CPU per cycle (mean)",
        figure: ms(mean(samples[key].cpu)),
      });
    }
    const vsDs = flock.median / ptpDs.median;
    const vs4 = flock.median / ptp4.median;
    rows.push({
      what: "flock cycle / ptp dual-stack cycle (medians)",
      figure: `${ratio(vsDs)} (p99 ${ratio(flock.p99 / ptpDs.p99)})`,
      target: "≤ 0.1×",
      pass: vsDs <= 0.1,
    });
    rows.push({
      what: "flock cycle / ptp IPv4-only cycle (medians)",
      figure: `${ratio(vs4)} (p99 ${ratio(flock.p99 / ptp4.p99)})`,
      target: "≤ 1.5×",
      pass: vs4 <= 1.5,
    });

    // N concurrent ADDs through the exec path, then the DELs, also concurrent.
    const rates: number[] = [];
    const burstCpu: number[] = [];
    let failures = 0;
    let duplicates = 0;
    let leftovers = 0;
    for (let round = 0; round < opts.rounds; round++) {
      const cpu0 = childrenCpuMs() + await processCpuMs(agentPid);
      const t0 = performance.now();
      const adds = await Promise.all(
        burstPods.map((pod, i) =>
          execPlugin(node.ns.path, plugins.flock, "ADD", `burst-${round}-${i}`, nsPath(pod))
        ),
      );
      const wall = performance.now() - t0;
      burstCpu.push((childrenCpuMs() + await processCpuMs(agentPid) - cpu0) / opts.concurrent);
      const failed = adds.filter((r) => r.code !== 0);
      failures += failed.length;
      const addresses = adds.filter((r) => r.code === 0).flatMap((r) => resultAddresses(r.stdout));
      duplicates += addresses.length - new Set(addresses).size;
      rates.push(opts.concurrent / (wall / 1000));
      progress(
        `burst ${round + 1}/${opts.rounds}: ${opts.concurrent} ADDs in ${ms(wall)}` +
          (failed.length ? `, ${failed.length} failed: ${failed[0].stdout.trim()}` : ""),
      );
      await Promise.all(
        burstPods.map((pod, i) =>
          execPlugin(node.ns.path, plugins.flock, "DEL", `burst-${round}-${i}`, nsPath(pod))
        ),
      );
      leftovers += (await node.flockLinks()).length;
    }
    const rate = summarize(rates);
    rows.push({
      what: `${opts.concurrent} concurrent ADDs: failures / duplicate addresses`,
      figure: `${failures} / ${duplicates} (${opts.rounds} rounds)`,
      target: "0 / 0",
      pass: failures === 0 && duplicates === 0,
    });
    rows.push({
      what: `${opts.concurrent} concurrent ADDs: pods per second`,
      figure: `median ${rate.median.toFixed(1)}/s (range ${rate.min.toFixed(1)}–${
        rate.max.toFixed(1)
      })`,
      target: "≥ 30/s",
      pass: rate.median >= 30,
    });
    rows.push({
      what: `${opts.concurrent} concurrent ADDs: CPU per ADD (execs + agent, mean)`,
      figure: ms(mean(burstCpu)),
    });
    rows.push({
      what: "flock links left after the concurrent DELs",
      figure: String(leftovers),
      target: "0",
      pass: leftovers === 0,
    });
    return rows;
  } finally {
    await node.remove();
    await deleteNamespaces(podNames);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const args = integerArgs({
    cycles: { default: 40, min: 1 },
    "ds-cycles": { default: 10 },
    concurrent: { default: 50, min: 1 },
    rounds: { default: 3, min: 1 },
  });
  const { formatTable } = await import("./report.ts");
  const rows = await runCniBench({
    cycles: args.cycles,
    dsCycles: args["ds-cycles"],
    concurrent: args.concurrent,
    rounds: args.rounds,
    progress: (line) => console.error(line),
  });
  console.log(formatTable("CNI exec path", rows));
}
