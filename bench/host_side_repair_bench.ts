/**
 * What the host side self-repair (agent/host_side_repair.ts) costs, on a node with N committed
 * records whose host routes are all present:
 *
 * - a poll after K ADDs (`Datapath.setup` of K new pods): what each ADD costs the agent now (its
 *   link and route notifications read, its own up consumed by a token, no repair check), next to
 *   the repair check every ADD cost before the tokens (`restoreHostSide` of a whole pod) and one
 *   bare RTM_GETLINK;
 * - an idle poll (the every-500-ms cost), and a poll reading the notifications of M routes of
 *   another protocol added and deleted (the node's other route changes: judged by their header);
 * - a host route deleted by hand: the poll that reads its notification and repairs it;
 * - a veth flap's repair (`restoreHostSide` after a down and up);
 * - the look made only when notifications were lost (`podsLackingHostRoutes`, one route dump per
 *   family; before, every 30 s sweep made it), next to its bare dumps.
 *
 * Run: `deno run -A --no-lock bench/host_side_repair_bench.ts [--records 1000] [--rounds 30]
 * [--adds 20] [--foreign 1000]`. Needs root; works in namespaces it creates (`flk-hsrb…`) and
 * removes, also on failure. The N records' routes share one veth (no pod namespace each): the
 * look reads only the store and the routes.
 *
 * @module
 */

import { join } from "node:path";
import { createNode, TestNamespace } from "../tests/helpers/netns.ts";
import { runOk } from "../tests/helpers/exec.ts";
import { setUpCommitted } from "../tests/helpers/committed_pod.ts";
import { Datapath, FLOCK_ROUTE_PROTOCOL, type PodNetwork } from "../agent/datapath.ts";
import { HostSideRepair, podsLackingHostRoutes } from "../agent/host_side_repair.ts";
import { Store } from "../agent/store.ts";
import {
  AF_INET,
  AF_INET6,
  formatIP,
  getLinkByName,
  Handle,
  listRoutes,
  parseIP,
} from "../netlink/mod.ts";
import { integerArgs } from "./args.ts";

// Each is a divisor or a loop bound below: at least 1.
const { records, rounds, adds, foreign } = integerArgs({
  records: { default: 1000, min: 1 },
  rounds: { default: 30, min: 1 },
  adds: { default: 20, min: 1 },
  foreign: { default: 1000, min: 1 },
});

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
const addNs: TestNamespace[] = [];
let repair: HostSideRepair | undefined;
try {
  let ownUp = (_index: number) => {};
  const datapath = new Datapath(handle, {
    routesIPv4: true,
    onHostVethUp: (index) => ownUp(index),
  });
  const pod: PodNetwork = {
    containerId: "bench-pod",
    netns: podNs.path,
    ifname: "eth0",
    ipv6: parseIP("fd00:49::ffff"),
    ipv4: parseIP("10.49.255.255"),
  };
  const hostIface = setUpCommitted(datapath, store, pod);
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

  // The repair as the agent runs it, polled by hand; every check it makes is counted.
  let checks = 0;
  /** Looks at the route dumps made because notifications were lost. */
  let lookCount = 0;
  const restore = datapath.restoreHostSide.bind(datapath);
  datapath.restoreHostSide = (p) => (checks++, restore(p));
  const hsr = repair = new HostSideRepair({
    target: () => ({ store, datapath, isRemoving: () => false }),
    inTurn: (_id, fn) => fn(),
    log: (fields) => {
      if (String(fields.msg).includes("notifications lost")) lookCount++;
    },
  });
  hsr.start(handle, 3_600_000);
  ownUp = (index) => hsr.noteOwnUp(index);
  const timed = (fn: () => void) => {
    const t = performance.now();
    fn();
    return performance.now() - t;
  };

  // K ADDs, then the poll that reads what they told; twice, the first warming the code up.
  const addBatch = async (round: number) => {
    const from = addNs.length;
    for (let i = 0; i < adds; i++) addNs.push(await TestNamespace.create(`flk-hsrb${round}${i}`));
    for (const [i, ns] of addNs.slice(from).entries()) {
      const n = from + i + 1;
      datapath.setup({
        containerId: `add-${n}`,
        netns: ns.path,
        ifname: "eth0",
        ipv6: parseIP(`fd00:4a::${n.toString(16)}`),
        ipv4: parseIP(`10.74.${n >> 8}.${n & 0xff}`),
      });
    }
    await new Promise((r) => setTimeout(r, 20));
    return timed(() => hsr.poll());
  };
  await addBatch(0);
  const addsPoll = await addBatch(1);
  const addsChecks = checks;

  const idlePoll = median(() => hsr.poll(), rounds * 10);

  // M routes of another protocol added and deleted: 2M notifications, read by bounded polls.
  const other: string[] = [];
  for (let i = 1; i <= foreign; i++) {
    other.push(`route add fd00:4b::${i.toString(16)}/128 dev hsrb0 proto static`);
  }
  for (let i = 1; i <= foreign; i++) {
    other.push(`route del fd00:4b::${i.toString(16)}/128 dev hsrb0 proto static`);
  }
  const otherFile = join(dir, "other.batch");
  await Deno.writeTextFile(otherFile, other.join("\n") + "\n");
  await runOk(["ip", "-n", fixture.node.name, "-batch", otherFile]);
  // Bounded reads (256 datagrams a poll): enough polls to read them all, and two idle ones.
  const foreignPolls = Math.ceil((2 * foreign) / 256) + 2;
  let foreignMs = 0;
  const looksBefore = lookCount;
  for (let i = 0; i < foreignPolls; i++) foreignMs += timed(() => hsr.poll());
  const foreignLost = lookCount > looksBefore;

  // A host route deleted by hand: the poll reading its notification repairs it.
  const routeRepairs: number[] = [];
  const checksBefore = checks;
  for (let i = 0; i < Math.min(rounds, 20); i++) {
    await fixture.node.ip(["-6", "route", "del", formatIP(pod.ipv6!), "dev", hostIface]);
    routeRepairs.push(timed(() => hsr.poll()));
  }
  const routeRepaired = checks - checksBefore;
  routeRepairs.sort((a, b) => a - b);

  const lacking = podsLackingHostRoutes(store, handle).length;
  const look = median(() => podsLackingHostRoutes(store, handle));
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
  const mid = (ms: number[]) => ms[Math.floor(ms.length / 2)];
  const f = (ms: number) => ms.toFixed(3);
  const perAdd = addsPoll / adds;
  console.log(`host side repair, ${records} committed records (${lacking} lacking a route):`);
  console.log(
    `  poll after ${adds} ADDs (2nd batch)    ${f(addsPoll)} ms  (${f(perAdd)} ms per ADD, ` +
      `${addsChecks} repair checks)`,
  );
  console.log(
    `  before: a check per ADD (restoreHostSide, pod whole)  ${f(wholeCheck)} ms  ` +
      `(check/poll share ${(wholeCheck / perAdd).toFixed(1)}x; bare RTM_GETLINK ${f(getLink)} ms)`,
  );
  console.log(`  idle poll                            ${f(idlePoll)} ms  (every 500 ms)`);
  console.log(
    `  ${2 * foreign} other route notifications  ${f(foreignMs)} ms in ${foreignPolls} polls ` +
      `(${f(foreignMs * 1000 / (2 * foreign))} us each${foreignLost ? ", LOST: look made" : ""})`,
  );
  console.log(
    `  host route deleted: poll + repair    ${f(mid(routeRepairs))} ms  (median of ` +
      `${routeRepairs.length}, ${routeRepaired} repairs)`,
  );
  console.log(
    `  veth flap: restoreHostSide           ${f(mid(repairs))} ms  (median of ${repairs.length})`,
  );
  console.log(
    `  look after lost notifications        ${f(look)} ms  (not periodic any more; ` +
      `bare dumps ${f(dumps)} ms, ratio ${(look / dumps).toFixed(2)})`,
  );
} finally {
  await repair?.close();
  for (const ns of addNs) await ns.remove();
  store.close();
  handle.close();
  await podNs.remove();
  await fixture.remove();
  await Deno.remove(dir, { recursive: true });
}
