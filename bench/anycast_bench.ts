/**
 * What anycast adds to a pod's ADD and DEL on the agent side: `AnycastRoutes.sync` (read the
 * committed holders from the store, compare with the kernel's route, replace it) next to the
 * pod's own `Datapath.setup`, in process, on a node that already carries background pods.
 *
 * Every holder holds one IPv6 and one IPv4 anycast address, so each sync programs two routes
 * (one of them IPv6 ECMP via the holders' /128s, the other IPv4 ECMP over device next hops).
 *
 * Run as root: `deno run -A --no-lock bench/anycast_bench.ts [--pods 200] [--holders 32]`
 *
 * @module
 */

import { join } from "node:path";
import { getLinkByName, Handle, listLinks, parseIP } from "../netlink/mod.ts";
import { Datapath, hostIfaceName } from "../agent/datapath.ts";
import { AnycastRoutes } from "../agent/anycast.ts";
import { Store } from "../agent/store.ts";
import { addNamespaces, deleteNamespaces, summarize } from "./report.ts";
import { integerArgs } from "./args.ts";

const { pods: PODS, holders: HOLDERS } = integerArgs({
  pods: { default: 200 },
  holders: { default: 32, min: 2 },
});
const ANYCAST = ["fd00:ffff::5", "10.255.0.5"];
const ADD_TARGET_MS = 3; // BRIEF §8: agent-side ADD median

const prefix = `flk-acbench-${Deno.pid}`;
const namespaces: string[] = [];

function row(label: string, samples: number[], note = ""): string {
  const { n, median, p99, max } = summarize(samples);
  const f = (x: number) => x.toFixed(3).padStart(8);
  return `${label.padEnd(46)} ${String(n).padStart(5)} ${f(median)} ${f(p99)} ${f(max)}  ${note}`;
}

function timed(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

const podName = (i: number) => `${prefix}-p${i}`;
const nodeName = `${prefix}-node`;
const dir = await Deno.makeTempDir({ prefix: "flock-acbench-" });
namespaces.push(nodeName, ...Array.from({ length: PODS + HOLDERS }, (_, i) => podName(i)));
await addNamespaces(namespaces);
const handle = Handle.forNetns(`/var/run/netns/${nodeName}`);
const store = Store.open(join(dir, "state"));
try {
  const datapath = new Datapath(handle);
  const routes = new AnycastRoutes({ node: handle, store });

  /** Records, sets up and commits pod `i` (as the ADD path does); returns the setup time. */
  const addPod = (i: number, anycast: string[]): number => {
    const containerId = `bench-${i}`;
    const ipv6 = `fd00:1::${(i + 16).toString(16)}`;
    const ipv4 = `10.1.${(i + 16) >> 8}.${(i + 16) & 255}`;
    store.insertPending({
      containerId,
      ifname: "eth0",
      netns: `/var/run/netns/${podName(i)}`,
      hostIface: hostIfaceName(containerId),
      ipv6,
      ipv4,
      anycast,
    });
    const ms = timed(() =>
      datapath.setup({
        containerId,
        ifname: "eth0",
        netns: `/var/run/netns/${podName(i)}`,
        ipv6: parseIP(ipv6),
        ipv4: parseIP(ipv4),
        anycast: anycast.map((a) => parseIP(a)),
      })
    );
    store.commit(containerId, "eth0");
    return ms;
  };

  const setupPlain: number[] = [];
  for (let i = 0; i < PODS; i++) setupPlain.push(addPod(i, []));

  const setupAnycast: number[] = [];
  const syncAdd: number[] = [];
  const syncNoop: number[] = [];
  for (let k = 0; k < HOLDERS; k++) {
    setupAnycast.push(addPod(PODS + k, ANYCAST));
    syncAdd.push(timed(() => routes.sync(ANYCAST)));
    syncNoop.push(timed(() => routes.sync(ANYCAST)));
  }
  const check: number[] = [];
  for (let k = 0; k < HOLDERS; k++) {
    const rec = store.get(`bench-${PODS + k}`, "eth0")!;
    check.push(timed(() => {
      const problems = routes.check(rec);
      if (problems.length) throw new Error(problems.join("; "));
    }));
  }
  // The 10 s resync round: per address one store query and one FIB lookup, and the holders'
  // link states, from one link dump or one request per holder, whichever is cheaper (holders
  // at least half the attachments: the dump). Beside it, both ways alone.
  const ROUNDS = 20;
  const resync: number[] = [];
  const linkDump: number[] = [];
  const perHolder: number[] = [];
  const holderIfaces = store.listAnycastHolders(ANYCAST[0]).map((h) => h.hostIface);
  for (let r = 0; r < ROUNDS; r++) {
    resync.push(timed(() => {
      const report = routes.resync();
      if (report.changed.length || report.problems.length) throw new Error(report.problems[0]);
    }));
    linkDump.push(timed(() => listLinks(handle)));
    perHolder.push(timed(() => holderIfaces.forEach((name) => getLinkByName(handle, name))));
  }
  const syncDel: number[] = [];
  for (let k = 0; k < HOLDERS; k++) {
    const id = `bench-${PODS + k}`;
    syncDel.push(
      timed(() => routes.sync(ANYCAST, { without: { containerId: id, ifname: "eth0" } })),
    );
    datapath.teardown(id);
    store.delete(id, "eth0");
  }

  const add = setupAnycast.map((s, i) => s + syncAdd[i]);
  const eighth = Math.max(1, Math.floor(HOLDERS / 4));
  console.log(
    `anycast: ${PODS} background pods, ${HOLDERS} holders of ${ANYCAST.join(" + ")} (ms)\n`,
  );
  console.log(
    `${"".padEnd(46)} ${"n".padStart(5)} ${"median".padStart(8)} ${"p99".padStart(8)} ${
      "max".padStart(8)
    }`,
  );
  console.log(row("Datapath.setup, pod without anycast", setupPlain));
  console.log(row("Datapath.setup, pod with 2 anycast addresses", setupAnycast));
  console.log(row("AnycastRoutes.sync on ADD (2 routes)", syncAdd));
  console.log(row(`  … holders 1–${eighth}`, syncAdd.slice(0, eighth)));
  console.log(row(`  … holders ${HOLDERS - eighth + 1}–${HOLDERS}`, syncAdd.slice(-eighth)));
  console.log(row("AnycastRoutes.sync, route already right", syncNoop));
  console.log(row("AnycastRoutes.sync on DEL (before teardown)", syncDel));
  console.log(row("AnycastRoutes.check (CHECK, 2 addresses)", check));
  console.log(row("setup + sync (anycast ADD, agent datapath part)", add));
  const links = PODS + HOLDERS + 1;
  const way = HOLDERS * 2 >= PODS + HOLDERS ? "dump" : "requests";
  console.log(row(`AnycastRoutes.resync round (2 addresses)`, resync, `every 10 s, ${way}`));
  console.log(row(`  … one link dump (${links} links)`, linkDump));
  console.log(row(`  … one link request per holder (${HOLDERS})`, perHolder));
  const plain = summarize(setupPlain.length ? setupPlain : setupAnycast).median;
  const added = summarize(setupAnycast).median - plain + summarize(syncAdd).median;
  console.log(
    `\nanycast adds ${added.toFixed(3)} ms to a pod's ADD datapath work ` +
      `(${(added / plain).toFixed(2)}× a plain setup of ${plain.toFixed(3)} ms; ` +
      `sync alone ${(summarize(syncAdd).median / plain).toFixed(2)}×). BRIEF §8 sets no anycast ` +
      `target of its own; its ${ADD_TARGET_MS} ms median is for the whole agent-side ADD.`,
  );
} finally {
  store.close();
  handle.close();
  await deleteNamespaces(namespaces);
  await Deno.remove(dir, { recursive: true });
}
