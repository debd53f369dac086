/**
 * What the host side self-repair (agent/host_side_repair.ts) costs:
 *
 * - the sweep's safety net, `podsLackingHostRoutes`, on a store of N committed records whose
 *   host routes are all present (the every-30-s cost), next to the bare route dumps it makes;
 * - `Datapath.restoreHostSide` on a whole pod (what every pod's ADD costs once more, when its veth's
 *   link-up notification is read) next to one bare RTM_GETLINK;
 * - `Datapath.restoreHostSide` of a pod whose veth went down and up (the repair itself).
 *
 * Run: `deno run -A --no-lock bench/host_side_repair_bench.ts [--records 1000] [--rounds 30]`.
 * Needs root; works in namespaces it creates (`flk-hsrb…`) and removes, also on failure. The N
 * records' routes share one veth (no pod namespace each): the sweep reads only the store and
 * the routes.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { createNode, TestNamespace } from "../tests/helpers/netns.ts";
import { runOk } from "../tests/helpers/exec.ts";
import { Datapath, FLOCK_ROUTE_PROTOCOL, type PodNetwork } from "../agent/datapath.ts";
import { podsLackingHostRoutes } from "../agent/host_side_repair.ts";
import { Store } from "../agent/store.ts";
import { AF_INET, AF_INET6, getLinkByName, Handle, listRoutes, parseIP } from "../netlink/mod.ts";

const { values } = parseArgs({
  options: {
    records: { type: "string", default: "1000" },
    rounds: { type: "string", default: "30" },
  },
});
const records = Number(values.records);
const rounds = Number(values.rounds);

/** Median of `rounds` timings of `fn`, in ms. */
function median(fn: () => void, n = rounds): number {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    fn();
    ms.push(performance.now() - t);
  }
  ms.sort((a, b) => a - b);
  return ms[Math.floor(ms.length / 2)];
}

const fixture = await createNode({ prefix: "flk-hsrb" });
const podNs = await TestNamespace.create("flk-hsrbp");
const dir = await Deno.makeTempDir({ prefix: "flock-hsr-bench-" });
const handle = Handle.forNetns(fixture.node.path);
const store = Store.open(join(dir, "state"));
try {
  const datapath = new Datapath(handle, { routesIPv4: true });
  const pod: PodNetwork = {
    containerId: "bench-pod",
    netns: podNs.path,
    ifname: "eth0",
    ipv6: parseIP("fd00:49::ffff"),
    ipv4: parseIP("10.49.255.255"),
  };
  const { hostIface } = datapath.setup(pod);
  // N committed records, routed through a veth of their own (not the measured pod's: its
  // kernel-filtered route reads then see its own 2 routes, as on a real node).
  await fixture.node.ip(["link", "add", "hsrb0", "type", "veth", "peer", "name", "hsrb1"]);
  for (const dev of ["hsrb0", "hsrb1"]) await fixture.node.ip(["link", "set", dev, "up"]);
  const batch: string[] = [];
  for (let i = 1; i <= records; i++) {
    const [v6, v4] = [`fd00:49::${i.toString(16)}`, `10.49.${i >> 8}.${i & 0xff}`];
    batch.push(`route add ${v6}/128 dev hsrb0 proto ${FLOCK_ROUTE_PROTOCOL}`);
    batch.push(`route add ${v4}/32 dev hsrb0 proto ${FLOCK_ROUTE_PROTOCOL}`);
    store.insertPending({
      containerId: `rec-${i}`,
      ifname: "eth0",
      netns: podNs.path,
      hostIface: `flock${i.toString(16).padStart(8, "0")}`,
      ipv6: v6,
      ipv4: v4,
      anycast: [],
    });
    store.commit(`rec-${i}`, "eth0");
  }
  const batchFile = join(dir, "routes.batch");
  await Deno.writeTextFile(batchFile, batch.join("\n") + "\n");
  await runOk(["ip", "-n", fixture.node.name, "-batch", batchFile]);

  const lacking = podsLackingHostRoutes(store, handle).length;
  const sweep = median(() => podsLackingHostRoutes(store, handle));
  const dumps = median(() => {
    for (const family of [AF_INET6, AF_INET] as const) {
      listRoutes(handle, { family, protocol: FLOCK_ROUTE_PROTOCOL });
    }
  });
  const wholeCheck = median(() => datapath.restoreHostSide(pod), rounds * 10);
  const getLink = median(() => getLinkByName(handle, hostIface), rounds * 10);
  const repairs: number[] = [];
  for (let i = 0; i < Math.min(rounds, 20); i++) {
    await fixture.node.ip(["link", "set", hostIface, "down"]);
    await fixture.node.ip(["link", "set", hostIface, "up"]);
    repairs.push(median(() => datapath.restoreHostSide(pod), 1));
  }
  repairs.sort((a, b) => a - b);
  const repair = repairs[Math.floor(repairs.length / 2)];
  const f = (ms: number) => ms.toFixed(3);
  console.log(`host side repair, ${records} committed records (${lacking} lacking a route):`);
  console.log(`  sweep (podsLackingHostRoutes)       ${f(sweep)} ms`);
  console.log(
    `  bare flock route dumps, 2 families  ${f(dumps)} ms  (sweep/dumps ${
      (sweep / dumps).toFixed(2)
    })`,
  );
  console.log(`  restoreHostSide, pod whole          ${f(wholeCheck)} ms  (per ADD, background)`);
  console.log(
    `  bare RTM_GETLINK by name            ${f(getLink)} ms  (ratio ${
      (wholeCheck / getLink).toFixed(1)
    })`,
  );
  console.log(
    `  restoreHostSide after a flap        ${f(repair)} ms  (median of ${repairs.length})`,
  );
} finally {
  store.close();
  handle.close();
  await podNs.remove();
  await fixture.remove();
  await Deno.remove(dir, { recursive: true });
}
