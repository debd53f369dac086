/**
 * Deleting many pod veths at once (what a GC after a runtime restart does): does the kernel
 * overlap concurrent `RTM_DELLINK`s, or does it serialise them? Each deletion waits ~40 ms for
 * RCU grace periods; `deleteLinkOffThread` runs it on a worker thread, so several can be in
 * flight.
 *
 * In a throwaway node namespace with one namespace per pod (created before the timed region,
 * deleted at the end, also on failure): each round creates `--pods` veths (host end in the node,
 * peer in its pod namespace, like flock's) with `ip`, then deletes them all with
 * `deleteLinkOffThread`, at most `c` in flight, for each concurrency. Concurrencies are
 * interleaved round by round so that machine noise hits them alike. It also records the event
 * loop's longest stall meanwhile (a 1 ms timer's largest gap).
 *
 * Run as root: `deno run -A --no-lock bench/veth_delete_bench.ts [--pods 12] [--rounds 5]`
 *
 * @module
 */

import { deleteLinkOffThread, getLinkByName, Handle } from "../netlink/mod.ts";
import { forEachBounded } from "../agent/bounded.ts";
import { runOk } from "../tests/helpers/exec.ts";
import {
  addNamespaces,
  deleteNamespaces,
  formatTable,
  ms,
  ratio,
  type ResultRow,
  summarize,
} from "./report.ts";
import { integerArgs } from "./args.ts";

const { pods: PODS, rounds: ROUNDS } = integerArgs({
  pods: { default: 12, min: 1 },
  rounds: { default: 5, min: 1 },
});
const CONCURRENCIES = [...new Set([1, 2, 4, 8, PODS])].filter((c) => c <= PODS);

const prefix = `flk-vdb-${Deno.pid}`;

/** Deletes every veth, at most `concurrency` in flight; the wall time and the longest stall. */
async function deleteAll(
  node: Handle,
  names: string[],
  concurrency: number,
): Promise<{ wallMs: number; stallMs: number }> {
  const indexes = names.map((n) => getLinkByName(node, n)!.index);
  let last = performance.now();
  let stallMs = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    stallMs = Math.max(stallMs, now - last);
    last = now;
  }, 1);
  const started = performance.now();
  try {
    await forEachBounded(indexes, concurrency, async (index) => {
      await deleteLinkOffThread(node, index);
    });
  } finally {
    clearInterval(timer);
  }
  return { wallMs: performance.now() - started, stallMs };
}

const nodeName = `${prefix}-node`;
const pods = Array.from({ length: PODS }, (_, i) => `${prefix}-p${i}`);
try {
  await addNamespaces([nodeName, ...pods]);
  const names = pods.map((_, i) => `vdb${i}`);
  using node = Handle.forNetns(`/var/run/netns/${nodeName}`);
  const wall = new Map<number, number[]>(CONCURRENCIES.map((c) => [c, []]));
  const stall = new Map<number, number[]>(CONCURRENCIES.map((c) => [c, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const c of CONCURRENCIES) {
      for (const [i, name] of names.entries()) {
        await runOk([
          "ip",
          "-n",
          nodeName,
          "link",
          "add",
          name,
          "type",
          "veth",
          "peer",
          "eth0",
          "netns",
          pods[i],
        ]);
      }
      const r = await deleteAll(node, names, c);
      wall.get(c)!.push(r.wallMs);
      stall.get(c)!.push(r.stallMs);
    }
  }
  const serial = summarize(wall.get(1)!).median;
  const rows: ResultRow[] = [];
  for (const c of CONCURRENCIES) {
    const w = summarize(wall.get(c)!);
    rows.push({
      what: `delete ${PODS} veths, ${c} in flight (median of ${ROUNDS})`,
      figure: `${ms(w.median)} (${ms(w.median / PODS)}/veth; ${ratio(w.median / serial)} of 1)`,
    });
    rows.push({
      what: `  event loop's longest stall meanwhile (max)`,
      figure: ms(summarize(stall.get(c)!).max),
    });
  }
  console.log(
    formatTable(`veth deletion concurrency (${navigator.hardwareConcurrency} cpus)`, rows),
  );
} finally {
  await deleteNamespaces([nodeName, ...pods]);
}
