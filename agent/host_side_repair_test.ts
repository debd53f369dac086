/**
 * The host side repair (host_side_repair.ts, Datapath.restoreHostSide) on a real node namespace
 * and store, without an agent process: what a flapped veth gets back, what is never touched
 * (a veth left down, another pod's veth, a record being released), and the sweep's one dump.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createNode, type NodeFixture, TestNamespace } from "../tests/helpers/netns.ts";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { Datapath, type PodNetwork } from "./datapath.ts";
import { formatIP, Handle, parseIP } from "../netlink/mod.ts";
import { type Attachment, Store } from "./store.ts";
import { HostSideRepair, podsLackingHostRoutes, type RepairTarget } from "./host_side_repair.ts";
import type { IpRoute } from "../tests/helpers/iproute.ts";

/** A node with a store, a datapath and two set-up, committed pods. */
interface Lab extends AsyncDisposable {
  fixture: NodeFixture;
  handle: Handle;
  store: Store;
  datapath: Datapath;
  pods: { ns: TestNamespace; net: PodNetwork; rec: Attachment }[];
}

async function lab(prefix: string): Promise<Lab> {
  const fixture = await createNode({ prefix });
  const dir = await Deno.makeTempDir({ prefix: "flock-hsr-" });
  const handle = Handle.forNetns(fixture.node.path);
  const store = Store.open(join(dir, "state"));
  const datapath = new Datapath(handle, { routesIPv4: true });
  const pods: Lab["pods"] = [];
  const cleanup = async () => {
    for (const p of pods) await p.ns.remove();
    store.close();
    handle.close();
    await fixture.remove();
    await Deno.remove(dir, { recursive: true });
  };
  try {
    for (const n of [1, 2]) {
      const ns = await TestNamespace.create(`${prefix}${n}`);
      const net: PodNetwork = {
        containerId: `hsr-${n}`,
        netns: ns.path,
        ifname: "eth0",
        ipv6: parseIP(`fd00:48::${n}`),
        ipv4: parseIP(`10.48.0.${n}`),
      };
      const { hostIface } = datapath.setup(net);
      store.insertPending({
        containerId: net.containerId,
        ifname: "eth0",
        netns: ns.path,
        hostIface,
        ipv6: formatIP(net.ipv6!),
        ipv4: formatIP(net.ipv4!),
        anycast: [],
      });
      store.commit(net.containerId, "eth0");
      pods.push({ ns, net: { ...net, hostIface }, rec: store.get(net.containerId, "eth0")! });
    }
  } catch (e) {
    await cleanup();
    throw e;
  }
  return { fixture, handle, store, datapath, pods, [Symbol.asyncDispose]: cleanup };
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
    "a record being released is not; the sweep finds a deleted route from one dump",
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

      // A route deleted by hand (no link notification): the sweep's dump finds it.
      await l.fixture.node.ip(["-4", "route", "del", "10.48.0.1", "proto", "201"]);
      assert.deepEqual(podsLackingHostRoutes(l.store, l.handle).map((r) => r.containerId), [
        "hsr-1",
      ]);
      repair.poll();
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(await routesVia(l, a.rec.hostIface), ["fd00:48::1"], "no notification");
      repair.sweep();
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(await routesVia(l, a.rec.hostIface), whole);
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
