/**
 * `deno task bench` / `make bench`: every pod-lifecycle target of BRIEF §8 in one run — the
 * CNI exec path against the reference plugins, the agent's own time per ADD at 0 and 1,000
 * pods, 50 concurrent ADDs, and the agent's memory — printed as one table with PASS/MISS.
 *
 * Needs root (network namespaces) and `make setup` (deno, the reference plugins). Exits 0 when
 * the run completed, whatever the verdicts: figures on a shared 2-core machine are noisy, so the
 * table is the result, not the exit code.
 *
 * After that table it runs the other benchmarks, each printing its own table: the datapath in
 * process, IPAM, metrics cost, anycast sync, BGP convergence at a gobgpd ToR, and cluster mode
 * against a real kube-apiserver.
 *
 * Run: `deno run -A --no-lock bench/run.ts [--quick] [--lifecycle-only]` (`--quick`: fewer
 * samples, 200 pods)
 *
 * @module
 */

import { parseArgs } from "node:util";
import { formatTable, type ResultRow } from "./report.ts";
import { runCniBench } from "./cni_bench.ts";
import { runAgentBench } from "./agent_bench.ts";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    "lifecycle-only": { type: "boolean", default: false },
  },
});
const quick = values.quick;
const progress = (line: string) => console.error(`[bench] ${line}`);

if (Deno.uid() !== 0) {
  console.error("bench/run.ts needs root: it creates network namespaces");
  Deno.exit(2);
}

const loadBefore = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
const started = performance.now();
const rows: ResultRow[] = [];
progress("CNI exec path: ADD+DEL cycles of flock, ptp IPv4-only, ptp dual-stack");
rows.push(
  ...await runCniBench({
    cycles: quick ? 10 : 40,
    dsCycles: quick ? 3 : 10,
    concurrent: 50,
    rounds: quick ? 1 : 3,
    progress,
  }),
);
progress("agent: ADD over the socket at 0 and N pods, memory");
rows.push(
  ...await runAgentBench({ samples: quick ? 50 : 200, pods: quick ? 200 : 1000, progress }),
);
const loadAfter = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");

console.log(formatTable("flock pod lifecycle (BRIEF §8)", rows));
const missed = rows.filter((r) => r.pass === false).length;
console.log(
  `\n${rows.filter((r) => r.pass !== undefined).length - missed} PASS, ${missed} MISS in ${
    ((performance.now() - started) / 1000).toFixed(0)
  } s; load average before ${loadBefore}, after ${loadAfter} (${navigator.hardwareConcurrency} cpus)`,
);

/** The other benchmarks, run one after another as their own processes (each cleans up itself). */
const OTHERS: { file: string; quickArgs: string[]; denoBench?: boolean }[] = [
  { file: "datapath_bench.ts", quickArgs: ["--pods", "50"] },
  { file: "veth_delete_bench.ts", quickArgs: [] },
  { file: "release_bench.ts", quickArgs: ["--pods", "30"] },
  { file: "netns_relocate_bench.ts", quickArgs: ["--pods", "100"] },
  { file: "ipam_bench.ts", quickArgs: [], denoBench: true },
  { file: "metrics_bench.ts", quickArgs: ["--pods", "50"] },
  { file: "anycast_bench.ts", quickArgs: ["--pods", "50"] },
  { file: "bgp_bench.ts", quickArgs: ["--trials", "10"] },
  { file: "kube_bench.ts", quickArgs: ["--pods", "200", "--samples", "10"] },
];

if (!values["lifecycle-only"]) {
  let failed = 0;
  for (const { file, quickArgs, denoBench } of OTHERS) {
    console.log(`\n== bench/${file}`);
    const status = await new Deno.Command(Deno.execPath(), {
      args: [
        denoBench ? "bench" : "run",
        "-A",
        "--no-lock",
        new URL(file, import.meta.url).pathname,
        ...(quick ? quickArgs : []),
      ],
      stdout: "inherit",
      stderr: "inherit",
    }).spawn().status;
    if (!status.success) {
      failed++;
      console.log(`bench/${file} failed (exit ${status.code})`);
    }
  }
  if (failed > 0) Deno.exit(1);
}
