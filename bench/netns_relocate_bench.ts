/**
 * The cost of the agent sweep's look for records unknown since a restart (agent/netns_relocate.ts)
 * at `--pods` records (default 1,000): every record's path gone, every veth alive in its pod's
 * netns, each netns named under /run/netns as a runtime names it. Printed: the first sweep after
 * the restart (learning the records' netns, then finding them all), a sweep alone with all of
 * them unknown, a sweep with nothing unknown, and the netlink requests of each.
 *
 * In-process, with the real pieces: a throwaway node namespace, one netns per pod (made and
 * removed by one `ip -batch` each way), a store in a temp dir, PodHandlers as the agent makes
 * them (a new one is a restart). Everything is removed at the end, also on failure.
 *
 * Run as root: `deno run -A --no-lock bench/netns_relocate_bench.ts [--pods 1000]`
 *
 * @module
 */

import { join } from "node:path";
import { createNode, NETNS_DIR } from "../tests/helpers/netns.ts";
import { countNetlinkRequests } from "../tests/helpers/netlink_count.ts";
import { rpcRequest } from "../tests/helpers/rpc_request.ts";
import { Handle } from "../netlink/mod.ts";
import { Datapath } from "../agent/datapath.ts";
import { Store } from "../agent/store.ts";
import { AddressPool } from "../agent/ipam.ts";
import { parseNodeConfig } from "../agent/config.ts";
import { PodHandler } from "../agent/pod_handler.ts";
import type { RelocateReport } from "../agent/netns_relocate.ts";
import { formatTable, ms, type ResultRow } from "./report.ts";
import { integerArgs } from "./args.ts";

const { pods: PODS } = integerArgs({ pods: { default: 1000, min: 1, max: 1000 } });

const node = parseNodeConfig({ cidr6: "fd00:bf::/64", cidr4: "10.191.0.0/16" }, "bench");
const names = Array.from({ length: PODS }, (_, i) => `flk-rlbp-${Deno.pid}-${i}`);

/** Runs `ip -batch` with one `netns <verb> NAME` line per pod. */
async function netnsBatch(verb: "add" | "del"): Promise<void> {
  const child = new Deno.Command("ip", {
    args: ["-force", "-batch", "-"],
    stdin: "piped",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(names.map((n) => `netns ${verb} ${n}\n`).join("")));
  await writer.close();
  await child.status;
}

/** A restarted agent's handler on the store in `dir`. */
function restart(handle: Handle, dir: string, previous?: Store) {
  previous?.close();
  const store = Store.open(dir);
  const pool6 = new AddressPool(node.cidr6!, { cooldownMs: 0 });
  const pool4 = new AddressPool(node.cidr4!, { cooldownMs: 0 });
  const datapath = new Datapath(handle, { routesIPv4: true });
  return { store, handler: new PodHandler({ store, datapath, node, pool6, pool4, log: () => {} }) };
}

/** One timed sweep (or `work`) with its netlink requests. */
function measured(work: () => RelocateReport) {
  using counted = countNetlinkRequests();
  const t0 = performance.now();
  const report = work();
  const took = performance.now() - t0;
  const dumps = counted.byOperation.get("dump: list links") ?? 0;
  return { report, took, requests: `${counted.total} requests, ${dumps} link dump(s)` };
}

const fixture = await createNode({ prefix: "flk-rlb" });
const dir = await Deno.makeTempDir({ prefix: "flock-relocate-bench-" });
try {
  await netnsBatch("add");
  using handle = Handle.forNetns(fixture.node.path);
  let { store, handler } = restart(handle, dir);
  for (const [i, name] of names.entries()) {
    await handler.add(rpcRequest("ADD", `pod${i}`, `${NETNS_DIR}/${name}`, "bench"));
  }
  // Every record's path gone (the veths stay in their netns): all unknown after a restart.
  for (const rec of store.list()) store.setNetns(rec.containerId, rec.ifname, join(dir, "gone"));
  const rows: ResultRow[] = [];
  const row = (what: string, m: ReturnType<typeof measured>) =>
    rows.push({
      what,
      figure: `${ms(m.took)}: located ${m.report.located}/${m.report.lookedFor}, ` +
        `${m.report.scanned} netns opened; ${m.requests}`,
    });

  ({ store, handler } = restart(handle, dir, store));
  const first = measured(() => handler.relocateUnknownNetns());
  if (first.report.located !== PODS) throw new Error(`located ${first.report.located}/${PODS}`);
  row(`first sweep after a restart, ${PODS} unknown (learns the records, then finds them)`, first);

  ({ store, handler } = restart(handle, dir, store));
  // A CHECK learns the records' netns (its own answer fails: the path is gone).
  try {
    handler.check(rpcRequest("CHECK", "pod0", join(dir, "gone"), "bench"));
  } catch { /* expected */ }
  const alone = measured(() => handler.relocateUnknownNetns());
  if (alone.report.located !== PODS) throw new Error(`located ${alone.report.located}/${PODS}`);
  row(`sweep with ${PODS} unknown records`, alone);
  row(
    `sweep with nothing unknown (${PODS} records)`,
    measured(() => handler.relocateUnknownNetns()),
  );
  store.close();
  console.log(
    formatTable(`unknown records' netns sweep (${navigator.hardwareConcurrency} cpus)`, rows),
  );
} finally {
  await netnsBatch("del");
  await fixture.remove();
  await Deno.remove(dir, { recursive: true });
}
