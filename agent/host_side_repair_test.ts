/**
 * The host side repair (host_side_repair.ts, Datapath.restoreHostSide) on a real node namespace
 * and store, without an agent process: what a flapped veth gets back, what is never touched
 * (a veth left down, another pod's veth, a record being released), what triggers a repair (a
 * veth someone else set up, a host route deleted) and what does not (the agent's own ups and
 * deletions), and the look at one dump for lost notifications.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createNode, type NodeFixture, TestNamespace } from "../tests/helpers/netns.ts";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { setUpCommitted } from "../tests/helpers/committed_pod.ts";
import { Datapath, type PodNetwork } from "./datapath.ts";
import { getLinkByName, Handle, parseIP } from "../netlink/mod.ts";
import { type Attachment, Store } from "./store.ts";
import { HostSideRepair, podsLackingHostRoutes, type RepairTarget } from "./host_side_repair.ts";
import { freeUnroutedWithheld } from "./withheld.ts";
import type { IpRoute } from "../tests/helpers/iproute.ts";

/** A node with a store, a datapath and two set-up, committed pods. */
interface Lab extends AsyncDisposable {
  fixture: NodeFixture;
  handle: Handle;
  store: Store;
  datapath: Datapath;
  pods: { ns: TestNamespace; net: PodNetwork; rec: Attachment }[];
  /** Told each host veth the datapath sets up (its `onHostVethUp`); a repair's noteOwnUp. */
  ownUp: (index: number) => void;
  /**
   * Sets up and commits pod `n` (fd00:48::n unless `ipv4Only`, 10.48.0.n) in a namespace of its
   * own.
   */
  addPod(n: number, ipv4Only?: boolean): Promise<Lab["pods"][number]>;
}

async function lab(prefix: string): Promise<Lab> {
  const fixture = await createNode({ prefix });
  const dir = await Deno.makeTempDir({ prefix: "flock-hsr-" });
  const handle = Handle.forNetns(fixture.node.path);
  const store = Store.open(join(dir, "state"));
  const l = { fixture, handle, store, pods: [] as Lab["pods"], ownUp: (_: number) => {} };
  const datapath = new Datapath(handle, {
    routesIPv4: true,
    onHostVethUp: (index) => l.ownUp(index),
  });
  const pods = l.pods;
  const cleanup = async () => {
    for (const p of pods) await p.ns.remove();
    store.close();
    handle.close();
    await fixture.remove();
    await Deno.remove(dir, { recursive: true });
  };
  const addPod = async (n: number, ipv4Only = false) => {
    const ns = await TestNamespace.create(`${prefix}${n}`);
    const net: PodNetwork = {
      containerId: `hsr-${n}`,
      netns: ns.path,
      ifname: "eth0",
      ipv6: ipv4Only ? undefined : parseIP(`fd00:48::${n}`),
      ipv4: parseIP(`10.48.0.${n}`),
    };
    pods.push({ ns, net, rec: undefined as unknown as Attachment });
    const hostIface = setUpCommitted(datapath, store, net);
    const pod = pods.at(-1)!;
    Object.assign(pod, { net: { ...net, hostIface }, rec: store.get(net.containerId, "eth0")! });
    return pod;
  };
  try {
    for (const n of [1, 2]) await addPod(n);
  } catch (e) {
    await cleanup();
    throw e;
  }
  return Object.assign(l, { datapath, addPod, [Symbol.asyncDispose]: cleanup });
}

/** The node's flock host routes through `dev` as destinations, sorted. */
async function routesVia(l: Lab, dev: string): Promise<string[]> {
  const out: string[] = [];
  for (const family of ["-6", "-4"]) {
    const routes = await l.fixture.node.ipJson<IpRoute[]>([
      family,
      "route",
      "show",
      "proto",
      "201",
      "dev",
      dev,
    ]);
    out.push(...routes.map((r) => r.dst));
  }
  return out.sort();
}

async function flap(l: Lab, dev: string, end: "up" | "down" = "up"): Promise<void> {
  await l.fixture.node.ip(["link", "set", dev, "down"]);
  if (end === "up") await l.fixture.node.ip(["link", "set", dev, "up"]);
}

Deno.test({
  name: "restoreHostSide: a flapped veth gets its routes and fe80::1 back; a whole one, a down " +
    "one and another pod's are left as they are",
  ...ROOT_ONLY,
  async fn() {
    await using l = await lab("flk-hsra");
    const [a, b] = l.pods;
    const host = a.rec.hostIface;
    const whole = await routesVia(l, host);
    assert.deepEqual(whole, ["10.48.0.1", "fd00:48::1"]);
    assert.deepEqual(l.datapath.restoreHostSide(a.net), [], "whole: nothing restored");

    await flap(l, host, "down");
    assert.equal(l.datapath.restoreHostSide(a.net), undefined, "down: not this repair's");
    assert.deepEqual(await routesVia(l, host), []);
    const [link] = await l.fixture.node.ipJson<{ flags: string[] }[]>(["link", "show", host]);
    assert.ok(!link.flags.includes("UP"), "left down");

    await l.fixture.node.ip(["link", "set", host, "up"]);
    // B's netns named for A's veth (a record naming the wrong pod): A's veth is not B's.
    assert.equal(l.datapath.restoreHostSide({ ...a.net, netns: b.ns.path }), undefined);
    assert.deepEqual(await routesVia(l, host), [], "nothing routed through another pod's veth");
    assert.deepEqual(l.datapath.restoreHostSide(a.net), [
      "address fe80::1/64",
      "route fd00:48::1",
      "route 10.48.0.1",
    ]);
    assert.deepEqual(await routesVia(l, host), whole);
    assert.deepEqual(l.datapath.check(a.net), [], "CHECK finds the pod whole");
    assert.deepEqual(l.datapath.check(b.net), []);
  },
});

Deno.test({
  name: "HostSideRepair: a veth set up is repaired in its container's turn at the next poll; " +
    "a record being released is not; a host route deleted by hand is back at the next poll",
  ...ROOT_ONLY,
  async fn() {
    await using l = await lab("flk-hsrb");
    const [a, b] = l.pods;
    const logged: Record<string, unknown>[] = [];
    const turns: string[] = [];
    let removing = false;
    let repairs = 0;
    const target: RepairTarget = {
      store: l.store,
      datapath: l.datapath,
      isRemoving: () => removing,
    };
    const repair = new HostSideRepair({
      target: () => target,
      inTurn: (containerId, fn) => {
        turns.push(containerId);
        return fn();
      },
      log: (fields) => logged.push(fields),
      onRepaired: () => repairs++,
    });
    // Polled by hand: a period this long never fires within the test.
    repair.start(l.handle, 3_600_000);
    try {
      const whole = await routesVia(l, a.rec.hostIface);
      await flap(l, a.rec.hostIface);
      repair.poll();
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(turns, ["hsr-1"], "only A's veth came up");
      assert.deepEqual(await routesVia(l, a.rec.hostIface), whole);
      assert.equal(repairs, 1);
      assert.deepEqual(logged.map((f) => [f.msg, f.containerId, f.hostIface]), [
        ["host side restored", "hsr-1", a.rec.hostIface],
      ]);

      // Being released (its DEL answered): a flap is left alone, as is a non-committed record.
      removing = true;
      await flap(l, b.rec.hostIface);
      repair.poll();
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(await routesVia(l, b.rec.hostIface), []);
      removing = false;
      l.store.markReleasing("hsr-2", "eth0", Date.now());
      repair.sweep();
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(await routesVia(l, b.rec.hostIface), [], "a releasing record: untouched");
      assert.equal(repairs, 1);

      // A route deleted by hand (no link notification): its route notification, at the next poll.
      await l.fixture.node.ip(["-4", "route", "del", "10.48.0.1", "proto", "201"]);
      assert.deepEqual(podsLackingHostRoutes(l.store, l.handle).map((r) => r.containerId), [
        "hsr-1",
      ]);
      repair.poll();
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(await routesVia(l, a.rec.hostIface), whole, "no sweep needed");
      assert.deepEqual(logged.at(-1)?.restored, ["route 10.48.0.1"]);
      assert.equal(repairs, 2);
      assert.deepEqual(podsLackingHostRoutes(l.store, l.handle), []);

      // A record no request can serve (a corrupt store's host veth name): its failure is logged
      // once, not at every sweep.
      l.store.insertPending({
        containerId: "bad",
        ifname: "eth0",
        netns: a.ns.path,
        hostIface: "flock-far-too-long-9",
        ipv6: "fd00:48::99",
        anycast: [],
      });
      l.store.commit("bad", "eth0");
      for (let i = 0; i < 3; i++) {
        repair.sweep();
        await new Promise((r) => setTimeout(r, 20));
      }
      const failures = logged.filter((f) => f.containerId === "bad");
      assert.deepEqual(failures.map((f) => f.level), ["error", "debug", "debug"]);
      assert.match(String(failures[0].error), /invalid host interface name/);
      // Deleted while failing: no repair of it comes any more; the next poll forgets it.
      assert.equal(repair.failing, 1);
      l.store.delete("bad", "eth0");
      repair.poll();
      assert.equal(repair.failing, 0, "a deleted record's failure is not kept");
    } finally {
      await repair.close();
    }
    // Closed: nothing more is read or repaired.
    await flap(l, a.rec.hostIface);
    repair.poll();
    repair.sweep();
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(await routesVia(l, a.rec.hostIface), []);
  },
});

Deno.test({
  name: "HostSideRepair: an ADD's own veth up queues no repair check; an operator's flap right " +
    "after one is repaired; the agent's own deletions repair nothing",
  ...ROOT_ONLY,
  async fn() {
    await using l = await lab("flk-hsrc");
    const turns: string[] = [];
    const checked: string[] = [];
    let repairs = 0;
    let removing = false;
    const target: RepairTarget = {
      store: l.store,
      datapath: l.datapath,
      isRemoving: () => removing,
    };
    // The real method, counted: every check a queued repair makes.
    const restore = l.datapath.restoreHostSide.bind(l.datapath);
    l.datapath.restoreHostSide = (pod) => {
      checked.push(pod.containerId);
      return restore(pod);
    };
    const repair = new HostSideRepair({
      target: () => target,
      inTurn: (containerId, fn) => {
        turns.push(containerId);
        return fn();
      },
      log: () => {},
      onRepaired: () => repairs++,
    });
    repair.start(l.handle, 3_600_000);
    l.ownUp = (index) => repair.noteOwnUp(index);
    const settle = async () => {
      repair.poll();
      await new Promise((r) => setTimeout(r, 20));
    };
    try {
      // Two ADDs (new veths set up by the datapath): nothing to check.
      const c = await l.addPod(3);
      await l.addPod(4);
      await settle();
      assert.equal(turns.length, 0, `own ups: no repair queued (${turns})`);
      assert.equal(checked.length, 0);

      // An ADD, then an operator's flap before the next poll: the own up's token covers one up
      // notification only, the flap's is seen and repaired. IPv4 only: the flap tells only by
      // its up (IPv4 drops a device's routes silently; IPv6 would notify their deletion too).
      const e = await l.addPod(5, true);
      const whole = await routesVia(l, e.rec.hostIface);
      await flap(l, e.rec.hostIface);
      await settle();
      assert.deepEqual(await routesVia(l, e.rec.hostIface), whole);
      assert.ok(turns.includes("hsr-5") && checked.includes("hsr-5"), `${turns}`);
      assert.ok(!turns.includes("hsr-3") && !turns.includes("hsr-4"), `${turns}`);
      assert.equal(repairs, 1);

      // A DEL's own teardown (record releasing, its DEL answered): its route deletions queue at
      // most a turn that looks at the record and leaves it; nothing is checked or restored.
      turns.length = checked.length = 0;
      l.store.markReleasing(c.rec.containerId, "eth0", Date.now());
      removing = true;
      l.datapath.teardown(c.rec.containerId, {
        ipv6: c.net.ipv6,
        ipv4: c.net.ipv4,
        hostIface: c.rec.hostIface,
        netns: c.rec.netns,
      });
      await settle();
      assert.deepEqual(checked, [], "own deletion: no check");
      assert.deepEqual(await routesVia(l, c.rec.hostIface).catch(() => []), []);
      // The record gone (the DEL finished): a deletion then finds no holder, queues nothing.
      removing = false;
      l.store.delete(c.rec.containerId, "eth0");
      await l.fixture.node.ip(["-6", "route", "add", "fd00:48::3", "dev", "lo", "proto", "201"]);
      await l.fixture.node.ip(["-6", "route", "del", "fd00:48::3", "dev", "lo", "proto", "201"]);
      await settle();
      assert.deepEqual(checked, []);
      assert.equal(repairs, 1);
    } finally {
      await repair.close();
    }
  },
});

Deno.test({
  name: "HostSideRepair: notifications lost in an overflow: the look at the route dumps repairs " +
    "what they told, and the own-up tokens are dropped, so a later flap is still seen",
  ...ROOT_ONLY,
  async fn() {
    await using l = await lab("flk-hsrd");
    const [a] = l.pods;
    const lost: Record<string, unknown>[] = [];
    let repairs = 0;
    const target: RepairTarget = {
      store: l.store,
      datapath: l.datapath,
      isRemoving: () => false,
    };
    const repair = new HostSideRepair({
      target: () => target,
      inTurn: (_containerId, fn) => fn(),
      log: (fields) => String(fields.msg).includes("notifications lost") && lost.push(fields),
      onRepaired: () => repairs++,
    });
    // Queues of a few notifications each: the flood below overflows both.
    repair.start(l.handle, 3_600_000, { queueBytes: 4096 });
    l.ownUp = (index) => repair.noteOwnUp(index);
    const settle = async () => {
      repair.poll();
      await new Promise((r) => setTimeout(r, 20));
    };
    try {
      await l.fixture.node.ip(["link", "add", "hsrfl0", "type", "veth", "peer", "name", "hsrfl1"]);
      await l.fixture.node.ip(["link", "set", "hsrfl0", "up"]);
      const flood: string[] = [];
      for (let i = 1; i <= 40; i++) flood.push("link set hsrfl1 up", "link set hsrfl1 down");
      for (let i = 1; i <= 60; i++) {
        flood.push(`route add fd00:4c::${i} dev hsrfl0 proto static`);
        flood.push(`route del fd00:4c::${i} dev hsrfl0 proto static`);
      }
      const batch = await Deno.makeTempFile({ prefix: "flock-hsr-flood-" });
      try {
        await Deno.writeTextFile(batch, flood.join("\n") + "\n");
        await l.fixture.node.ip(["-batch", batch]);
      } finally {
        await Deno.remove(batch);
      }
      // Unseen: an ADD's own up (its token noted, its notification dropped) and A's route gone.
      // IPv4 only: its flap below tells only by the up (IPv4 drops a device's routes silently).
      const c = await l.addPod(3, true);
      const wholeC = await routesVia(l, c.rec.hostIface);
      const wholeA = await routesVia(l, a.rec.hostIface);
      await l.fixture.node.ip(["-4", "route", "del", "10.48.0.1", "proto", "201"]);
      await settle();
      assert.equal(lost.length, 1, "the loss is logged");
      assert.deepEqual(await routesVia(l, a.rec.hostIface), wholeA, "A's route back");
      assert.equal(repairs, 1);
      for (let i = 0; i < 3; i++) await settle();

      // C's token went with the loss: its flap's up is not taken for C's own.
      await flap(l, c.rec.hostIface);
      await settle();
      assert.deepEqual(await routesVia(l, c.rec.hostIface), wholeC);
      assert.equal(repairs, 2);
    } finally {
      await repair.close();
    }
  },
});

Deno.test({
  name: "HostSideRepair: an own up that told nothing (the link was up already) hides no later " +
    "flap: its token expires after two reads",
  ...ROOT_ONLY,
  async fn() {
    await using l = await lab("flk-hsre");
    let repairs = 0;
    const target: RepairTarget = { store: l.store, datapath: l.datapath, isRemoving: () => false };
    const repair = new HostSideRepair({
      target: () => target,
      inTurn: (_containerId, fn) => fn(),
      log: () => {},
      onRepaired: () => repairs++,
    });
    repair.start(l.handle, 3_600_000);
    try {
      // IPv4 only: its flap tells only by the up (no route deletion notified).
      const c = await l.addPod(3, true);
      const whole = await routesVia(l, c.rec.hostIface);
      repair.poll();
      // An up the agent asked for while the link was up already: no notification will come.
      repair.noteOwnUp(getLinkByName(l.handle, c.rec.hostIface)!.index);
      repair.poll();
      repair.poll();
      await flap(l, c.rec.hostIface);
      repair.poll();
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(await routesVia(l, c.rec.hostIface), whole, "the flap is repaired");
      assert.equal(repairs, 1);
    } finally {
      await repair.close();
    }
  },
});

Deno.test({
  name:
    "HostSideRepair: a flap keeps the addresses withheld through the veth withheld and routes " +
    "them again; the sweep never gives them back meanwhile; one deleted by hand (veth up) is",
  ...ROOT_ONLY,
  async fn() {
    await using l = await lab("flk-hsrw");
    const [a] = l.pods;
    const host = a.rec.hostIface;
    const logged: Record<string, unknown>[] = [];
    const target: RepairTarget = { store: l.store, datapath: l.datapath, isRemoving: () => false };
    // Turns run at once, or are held (A's container busy with a long request) until released.
    let hold = false;
    const held: (() => Promise<void>)[] = [];
    const repair = new HostSideRepair({
      target: () => target,
      inTurn: (_containerId, fn) => {
        if (!hold) return fn();
        return new Promise<void>((resolve, reject) => held.push(() => fn().then(resolve, reject)));
      },
      log: (fields) => logged.push(fields),
    });
    repair.start(l.handle, 3_600_000);
    // A release that found these routed through A's veth (withheld.ts), and their routes.
    const withheld = ["10.48.0.77", "fd00:48::77"];
    l.store.finishRelease("gone", "eth0", [], 1, [
      ...withheld.map((ip) => ({ ip, hostIface: host, owner: "hsr-1/eth0" })),
    ]);
    for (const ip of withheld) {
      await l.fixture.node.ip(["route", "replace", ip, "dev", host, "proto", "201"]);
    }
    const whole = await routesVia(l, host);
    assert.deepEqual(whole, ["10.48.0.1", "10.48.0.77", "fd00:48::1", "fd00:48::77"]);
    // The agent's sweep: the kernel's routes judged, then the repair's unsettled veths.
    const sweep = () =>
      freeUnroutedWithheld({
        store: l.store,
        node: l.handle,
        now: Date.now(),
        unsettled: () => repair.unsettledVeths(),
      }).map((w) => w.ip);
    try {
      // A flap whose repair waits for A's turn: the sweep in between gives nothing back.
      hold = true;
      await flap(l, host);
      repair.poll();
      assert.equal(held.length, 1, "A's repair queued");
      assert.deepEqual(sweep(), [], "unrouted, but its veth flapped: kept");
      await held.shift()!();
      assert.deepEqual(await routesVia(l, host), whole, "A's routes and the withheld ones back");
      assert.deepEqual(
        (logged.at(-1)?.restored as string[]).filter((r) => r.startsWith("withheld")),
        withheld.map((ip) => `withheld route ${ip}`),
      );
      assert.deepEqual(sweep(), [], "routed again: kept");

      // A flap the sweep looks at before any poll read it (the repair then runs within its poll).
      hold = false;
      await flap(l, host);
      assert.deepEqual(sweep(), [], "the sweep's own poll finds the flap");
      assert.deepEqual(await routesVia(l, host), whole);
      assert.deepEqual(l.store.withheld().map((w) => w.ip).sort(), withheld);

      // Left down: withheld (a release in progress); up: routed again.
      await flap(l, host, "down");
      repair.poll();
      assert.deepEqual(sweep(), []);
      await l.fixture.node.ip(["link", "set", host, "up"]);
      assert.deepEqual(sweep(), []);
      assert.deepEqual(await routesVia(l, host), whole);

      // A withheld route deleted by hand with the veth up: the address is given back.
      await l.fixture.node.ip(["-6", "route", "del", "fd00:48::77", "dev", host, "proto", "201"]);
      repair.poll();
      assert.deepEqual(sweep(), ["fd00:48::77"]);
      assert.deepEqual(l.store.withheld().map((w) => w.ip), ["10.48.0.77"]);
    } finally {
      hold = false;
      for (const run of held) await run();
      await repair.close();
    }
  },
});
