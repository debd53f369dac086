import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type AnycastPath,
  anycastRoute,
  AnycastRoutes,
  pathKeys,
  routesMatch,
  RTNH_F_ONLINK,
} from "./anycast.ts";
import { Datapath, FLOCK_ROUTE_PROTOCOL, hostIfaceName } from "./datapath.ts";
import { Store } from "./store.ts";
import {
  AF_INET,
  AF_INET6,
  formatPrefix,
  Handle,
  listRoutes,
  lookupRoute,
  parseIP,
  RT_SCOPE_LINK,
} from "../netlink/mod.ts";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { TestNamespace } from "../tests/helpers/netns.ts";
import type { IpRoute } from "../tests/helpers/iproute.ts";

const v6 = parseIP("fd00:ffff::5");
const v4 = parseIP("10.255.0.5");

Deno.test("anycastRoute: no holder means no route", () => {
  assert.equal(anycastRoute(v6, []), undefined);
  assert.equal(anycastRoute(v4, []), undefined);
});

Deno.test("anycastRoute: one holder is a plain scope-link route via its veth", () => {
  for (const address of [v6, v4]) {
    const r = anycastRoute(address, [{ oif: 7, podIP: parseIP("fd00:1::2") }])!;
    assert.equal(formatPrefix(r.dst), address === v6 ? "fd00:ffff::5/128" : "10.255.0.5/32");
    assert.equal(r.oif, 7);
    assert.equal(r.gateway, undefined);
    assert.equal(r.multipath, undefined);
    assert.equal(r.scope, RT_SCOPE_LINK);
    assert.equal(r.protocol, FLOCK_ROUTE_PROTOCOL);
  }
});

Deno.test("anycastRoute: IPv4 ECMP uses device-only next hops ordered by ifindex", () => {
  const r = anycastRoute(v4, [{ oif: 9 }, { oif: 3 }, { oif: 9 }])!;
  assert.deepEqual(r.multipath, [{ oif: 3 }, { oif: 9 }]);
  assert.equal(r.scope, RT_SCOPE_LINK);
  assert.equal(r.protocol, FLOCK_ROUTE_PROTOCOL);
  assert.deepEqual(pathKeys(r), ["3", "9"]);
});

Deno.test("anycastRoute: IPv6 ECMP goes via each holder's own address, onlink", () => {
  const paths: AnycastPath[] = [
    { oif: 12, podIP: parseIP("fd00:1::c") },
    { oif: 4, podIP: parseIP("fd00:1::4") },
  ];
  const r = anycastRoute(v6, paths)!;
  assert.equal(r.oif, undefined);
  assert.deepEqual(r.multipath?.map((h) => [h.oif, h.flags]), [[4, RTNH_F_ONLINK], [
    12,
    RTNH_F_ONLINK,
  ]]);
  assert.deepEqual(pathKeys(r), ["12 via fd00:1::c", "4 via fd00:1::4"]);
  assert.throws(() => anycastRoute(v6, [{ oif: 1, podIP: parseIP("fd00:1::1") }, { oif: 2 }]));
});

Deno.test("routesMatch: compares paths, not flags or order", () => {
  const want = anycastRoute(v4, [{ oif: 3 }, { oif: 9 }]);
  // What the kernel reports: flags (linkdown) and its own order.
  const kernel = { ...want!, multipath: [{ oif: 9, flags: 16 }, { oif: 3, flags: 0 }] };
  assert.ok(routesMatch([kernel], want));
  assert.ok(!routesMatch([kernel, kernel], want), "a duplicate route is a mismatch");
  assert.ok(!routesMatch([kernel], anycastRoute(v4, [{ oif: 3 }])));
  assert.ok(!routesMatch([kernel], undefined));
  assert.ok(routesMatch([], undefined));
  assert.ok(!routesMatch([], want));
});

/** A node namespace with `n` pods (veth pairs made by the real datapath) and a store. */
async function fixture(n: number, log?: (fields: Record<string, unknown>) => void) {
  const node = await TestNamespace.create("flk-acn");
  const pods: TestNamespace[] = [];
  const dir = await Deno.makeTempDir({ prefix: "flock-anycast-" });
  const handle = Handle.forNetns(node.path);
  const store = Store.open(join(dir, "state"));
  const datapath = new Datapath(handle);
  const routes = new AnycastRoutes({ node: handle, store, log });
  for (let i = 0; i < n; i++) pods.push(await TestNamespace.create("flk-acp"));
  return {
    node,
    pods,
    store,
    datapath,
    routes,
    /** Records, commits and sets up pod `i` holding `anycast`. */
    addPod(i: number, anycast: string[]) {
      const containerId = `ctr-${i}`;
      const rec = {
        containerId,
        ifname: "eth0",
        netns: pods[i].path,
        hostIface: hostIfaceName(containerId),
        ipv6: `fd00:1::${i + 10}`,
        ipv4: `10.1.0.${i + 10}`,
        anycast,
      };
      store.insertPending(rec);
      datapath.setup({
        containerId,
        ifname: "eth0",
        netns: pods[i].path,
        ipv6: parseIP(rec.ipv6),
        ipv4: parseIP(rec.ipv4),
        anycast: anycast.map((a) => parseIP(a)),
      });
      store.commit(containerId, "eth0");
      return rec;
    },
    async [Symbol.asyncDispose]() {
      store.close();
      handle.close();
      for (const p of pods) await p.remove();
      await node.remove();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function anycastRouteOf(ns: TestNamespace, address: string): Promise<IpRoute[]> {
  const family = address.includes(":") ? "-6" : "-4";
  const all = await ns.ipJson<IpRoute[]>([family, "route", "show", "proto", "201"]);
  return all.filter((r) => r.dst === address);
}

Deno.test({
  name: "AnycastRoutes: routes follow the committed holders, both families",
  ...ROOT_ONLY,
  async fn() {
    await using f = await fixture(3);
    const any = ["fd00:ffff::5", "10.255.0.5"];
    f.addPod(0, any);
    assert.deepEqual(f.routes.sync(any).changed, any);
    for (const a of any) {
      const [r, ...rest] = await anycastRouteOf(f.node, a);
      assert.deepEqual(rest, []);
      assert.equal(r.dev, hostIfaceName("ctr-0"));
      assert.equal(r.nexthops, undefined);
    }
    f.addPod(1, any);
    f.addPod(2, []);
    f.routes.sync(any);
    const six = (await anycastRouteOf(f.node, any[0]))[0];
    assert.deepEqual(
      six.nexthops?.map((h) => [h.dev, h.gateway, h.flags?.includes("onlink")]).sort(),
      [[hostIfaceName("ctr-0"), "fd00:1::10", true], [hostIfaceName("ctr-1"), "fd00:1::11", true]]
        .sort(),
    );
    const four = (await anycastRouteOf(f.node, any[1]))[0];
    assert.deepEqual(
      four.nexthops?.map((h) => h.dev).sort(),
      [hostIfaceName("ctr-0"), hostIfaceName("ctr-1")].sort(),
    );
    assert.deepEqual(f.routes.sync(any).changed, [], "a second sync changes nothing");
    assert.deepEqual(f.routes.check(f.store.get("ctr-0", "eth0")!), []);

    // DEL order: drop the path, then the veth; the other holder keeps an unbroken route.
    f.routes.sync(any, { without: { containerId: "ctr-0", ifname: "eth0" } });
    f.datapath.teardown("ctr-0");
    f.store.delete("ctr-0", "eth0");
    for (const a of any) {
      const routes = await anycastRouteOf(f.node, a);
      assert.deepEqual(routes.map((r) => r.dev), [hostIfaceName("ctr-1")], a);
    }
    f.routes.sync(any, { without: { containerId: "ctr-1", ifname: "eth0" } });
    for (const a of any) assert.deepEqual(await anycastRouteOf(f.node, a), []);
  },
});

Deno.test({
  name: "AnycastRoutes: check names a missing path and a route that differs from its holders",
  ...ROOT_ONLY,
  async fn() {
    await using f = await fixture(2);
    const any = ["10.255.0.7"];
    const a = f.addPod(0, any);
    const b = f.addPod(1, any);
    f.routes.sync(any);
    await f.node.ip(["route", "replace", "10.255.0.7/32", "dev", b.hostIface, "proto", "201"]);
    const problems = f.routes.check(f.store.get(a.containerId, "eth0")!);
    assert.match(problems.join("; "), new RegExp(`no path via ${a.hostIface}`));
    await f.node.ip(["route", "del", "10.255.0.7/32", "proto", "201"]);
    assert.match(f.routes.check(f.store.get(b.containerId, "eth0")!).join(), /lacks the flock/);
    const { held, changed } = await f.routes.syncAll();
    assert.deepEqual([...held], any);
    assert.deepEqual(changed, any);
    assert.deepEqual(f.routes.check(f.store.get(a.containerId, "eth0")!), []);
  },
});

Deno.test("Store.listAnycastHolders: committed holders of one address, oldest first", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-anycast-store-" });
  const store = Store.open(dir);
  try {
    const rec = (id: string, n: number, anycast: string[]) => ({
      containerId: id,
      ifname: "eth0",
      netns: `/run/netns/${id}`,
      hostIface: hostIfaceName(id),
      ipv6: `fd00:1::${n}`,
      anycast,
    });
    store.insertPending(rec("c1", 1, ["fd00:ffff::5", "10.255.0.5"]));
    store.insertPending(rec("c2", 2, ["fd00:ffff:0:0::5"]));
    store.insertPending(rec("c3", 3, ["fd00:ffff::6"]));
    assert.deepEqual(store.listAnycastHolders("fd00:ffff::5"), [], "pending holds nothing");
    for (const id of ["c2", "c1", "c3"]) store.commit(id, "eth0");
    assert.deepEqual(
      store.listAnycastHolders("fd00:ffff:0::5"),
      [
        { containerId: "c1", ifname: "eth0", hostIface: hostIfaceName("c1"), ipv6: "fd00:1::1" },
        { containerId: "c2", ifname: "eth0", hostIface: hostIfaceName("c2"), ipv6: "fd00:1::2" },
      ],
    );
    store.delete("c1", "eth0");
    assert.deepEqual(store.listAnycastHolders("fd00:ffff::5").map((a) => a.containerId), ["c2"]);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "AnycastRoutes: a holder's veth made again (new ifindex) is resolved afresh",
  ...ROOT_ONLY,
  async fn() {
    await using f = await fixture(2);
    const any = ["fd00:ffff::9", "10.255.0.9"];
    f.addPod(0, any);
    const b = f.addPod(1, any);
    f.routes.sync(any);
    // The veth of b goes and comes back (a repair): its index changes behind the cache.
    f.datapath.teardown(b.containerId);
    f.datapath.setup({
      containerId: b.containerId,
      ifname: "eth0",
      netns: b.netns,
      ipv6: parseIP(b.ipv6),
      ipv4: parseIP(b.ipv4),
      anycast: any.map((a) => parseIP(a)),
    });
    assert.deepEqual(f.routes.sync(any).changed, any);
    for (const a of any) {
      const [r] = await anycastRouteOf(f.node, a);
      assert.deepEqual(
        r.nexthops?.map((h) => h.dev).sort(),
        [
          hostIfaceName("ctr-0"),
          hostIfaceName("ctr-1"),
        ].sort(),
      );
    }
    assert.deepEqual(f.routes.check(f.store.get(b.containerId, "eth0")!), []);
  },
});

Deno.test({
  name: "lookupRoute: the exact FIB entry, or undefined for no route and a blackhole",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-aclk");
    const h = Handle.forNetns(ns.path);
    try {
      await ns.ip(["route", "add", "blackhole", "10.9.0.0/24", "proto", "201"]);
      await ns.ip(["route", "add", "10.9.1.0/24", "dev", "lo", "proto", "201"]);
      assert.equal(lookupRoute(h, parseIP("10.9.0.1")), undefined);
      assert.equal(lookupRoute(h, parseIP("10.8.0.1")), undefined);
      assert.equal(lookupRoute(h, parseIP("fd00::1")), undefined);
      const r = lookupRoute(h, parseIP("10.9.1.7"))!;
      assert.equal(formatPrefix(r.dst), "10.9.1.0/24");
      assert.equal(r.protocol, FLOCK_ROUTE_PROTOCOL);
    } finally {
      h.close();
    }
  },
});

Deno.test({
  name: "AnycastRoutes: resync restores an IPv4 ECMP route the kernel flushed with a lost veth",
  ...ROOT_ONLY,
  async fn() {
    await using f = await fixture(3);
    const any = ["10.255.0.11", "fd00:ffff::11"];
    f.addPod(0, any);
    f.addPod(1, any);
    f.addPod(2, ["10.255.0.12"]);
    f.routes.sync([...any, "10.255.0.12"]);
    assert.deepEqual(f.store.listAnycastAddresses(), [
      "10.255.0.11",
      "10.255.0.12",
      "fd00:ffff::11",
    ]);
    // The runtime destroys pod 0's namespace without a DEL: its veth goes, and with it the
    // whole IPv4 multipath route (IPv6 only loses that path).
    await f.pods[0].remove();
    // Namespace teardown runs in a kernel workqueue: the veth goes a moment after `ip netns del`.
    const gone = Date.now() + 5_000;
    while ((await anycastRouteOf(f.node, "10.255.0.11")).length > 0) {
      assert.ok(Date.now() < gone, "the kernel kept the multipath route of a lost veth");
      await new Promise((r) => setTimeout(r, 25));
    }
    f.routes.startResync(50);
    try {
      const deadline = Date.now() + 5_000;
      while ((await anycastRouteOf(f.node, "10.255.0.11")).length === 0) {
        assert.ok(Date.now() < deadline, "resync did not restore the route");
        await new Promise((r) => setTimeout(r, 25));
      }
    } finally {
      f.routes.stopResync();
    }
    // The lost holder's record remains (its DEL has not come), but it has no veth to route to.
    for (const a of any) {
      const routes = await anycastRouteOf(f.node, a);
      assert.deepEqual(routes.map((r) => r.dev), [hostIfaceName("ctr-1")], a);
    }
    assert.deepEqual(f.routes.resync().changed, [], "a second round changes nothing");
  },
});

Deno.test({
  name: "AnycastRoutes: 200 holders of one address (more paths than a FIB lookup answer holds)",
  ...ROOT_ONLY,
  async fn() {
    // A lookup's answer is one page (~3.7 KiB): an IPv6 route with more than ~130 paths does
    // not fit in it (EMSGSIZE), which failed the ADD of every further holder, every CHECK and
    // every resync round of the node.
    const holders = 200;
    await using node = await TestNamespace.create("flk-acmany");
    const dir = await Deno.makeTempDir({ prefix: "flock-anycast-many-" });
    const handle = Handle.forNetns(node.path);
    const store = Store.open(join(dir, "state"));
    const routes = new AnycastRoutes({ node: handle, store });
    try {
      // Host veths only (peers stay in the node namespace): a path needs nothing more.
      const links = Array.from(
        { length: holders },
        (_, i) =>
          `link add flkm${i} type veth peer name flkmp${i}\n` +
          `link set flkmp${i} up\nlink set flkm${i} up\n`,
      ).join("");
      await Deno.writeTextFile(join(dir, "links"), links);
      await node.ip(["-batch", join(dir, "links")]);
      const any = ["fd00:ffff::77", "10.255.0.77"];
      for (let i = 0; i < holders; i++) {
        const containerId = `many-${i}`;
        store.insertPending({
          containerId,
          ifname: "eth0",
          netns: "/proc/self/ns/net",
          hostIface: `flkm${i}`,
          ipv6: `fd00:1::${(i + 16).toString(16)}`,
          ipv4: `10.1.0.${i + 16}`,
          anycast: any,
        });
        store.commit(containerId, "eth0");
        routes.sync(any);
      }
      // `ip route` cannot show such a route (its dump buffer is too small): flock's dump can.
      const pathsOf = (a: string) =>
        listRoutes(handle, { family: a.includes(":") ? AF_INET6 : AF_INET, protocol: 201 })
          .filter((r) => formatPrefix(r.dst).startsWith(a + "/")).map((r) => r.multipath?.length);
      for (const a of any) assert.deepEqual(pathsOf(a), [holders], a);
      assert.deepEqual(routes.check(store.get("many-0", "eth0")!), []);
      assert.deepEqual(routes.resync(), { changed: [], problems: [] });
      routes.sync(any, { without: { containerId: "many-0", ifname: "eth0" } });
      for (const a of any) assert.deepEqual(pathsOf(a), [holders - 1], a);
    } finally {
      store.close();
      handle.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** The devices of flock's route to `address` on the node, sorted; [] when there is none. */
async function routeDevs(ns: TestNamespace, address: string): Promise<string[]> {
  const routes = await anycastRouteOf(ns, address);
  assert.ok(routes.length <= 1, `one route for ${address}: ${JSON.stringify(routes)}`);
  if (routes.length === 0) return [];
  return (routes[0].nexthops?.map((h) => h.dev) ?? [routes[0].dev!]).sort();
}

// With 3 attachments a round reads one link dump; with 8 more (records only) among them it asks
// for each holder's link instead (the cheaper way when holders are few).
for (const others of [0, 8]) {
  Deno.test({
    name:
      "AnycastRoutes: a down holder costs only its own address; ECMP over the holders that are " +
      `up (${others ? "a link request per holder" : "one link dump"} per round)`,
    ...ROOT_ONLY,
    async fn() {
      const lines: Record<string, unknown>[] = [];
      await using f = await fixture(3, (l) => lines.push(l));
      for (let i = 0; i < others; i++) {
        const containerId = `other-${i}`;
        f.store.insertPending({
          containerId,
          ifname: "eth0",
          netns: "/proc/self/ns/net",
          hostIface: hostIfaceName(containerId),
          ipv6: `fd00:2::${i + 10}`,
          anycast: [],
        });
        f.store.commit(containerId, "eth0");
      }
      // A1: one holder (pod 0); A2: two holders (pods 1 and 2). Sorted, A1's IPv4 comes first in
      // a round, so a round that stops at its first failure never reaches A2.
      const a1 = ["10.255.0.21", "fd00:ffff::21"];
      const a2 = ["10.255.0.22", "fd00:ffff::22"];
      const p0 = f.addPod(0, a1);
      const p1 = f.addPod(1, a2);
      const p2 = f.addPod(2, a2);
      f.routes.sync([...a1, ...a2]);
      const both = [p1.hostIface, p2.hostIface].sort();
      for (const a of a2) assert.deepEqual(await routeDevs(f.node, a), both, a);

      // A1's only holder goes down: the kernel drops A1's route and refuses to make it again.
      await f.node.ip(["link", "set", p0.hostIface, "down"]);
      for (const a of a2) await f.node.ip(["route", "del", a, "proto", "201"]);
      const round = f.routes.resync();
      for (const a of a2) assert.deepEqual(await routeDevs(f.node, a), both, `${a} rebuilt`);
      for (const a of a1) {
        assert.deepEqual(await routeDevs(f.node, a), [], `${a}: nobody serves it`);
      }
      assert.match(round.problems.join("; "), new RegExp(`${p0.hostIface} is down`));
      assert.deepEqual(f.routes.syncFailures, 0, "a down holder is no failure");
      assert.deepEqual(f.routes.resync().changed, [], "a second round changes nothing");

      // One of A2's holders goes down: its route is made of the other one only.
      await f.node.ip(["link", "set", p1.hostIface, "down"]);
      assert.deepEqual(f.routes.resync().changed.sort(), a2);
      for (const a of a2) assert.deepEqual(await routeDevs(f.node, a), [p2.hostIface], a);

      // Back up: the host side repair's sync (no round between) restores both paths, and A1.
      await f.node.ip(["link", "set", p1.hostIface, "up"]);
      assert.deepEqual(f.routes.sync(a2).changed.sort(), a2);
      for (const a of a2) assert.deepEqual(await routeDevs(f.node, a), both, `${a} after up`);
      await f.node.ip(["link", "set", p0.hostIface, "up"]);
      assert.deepEqual(f.routes.sync(a1).changed.sort(), a1);
      for (const a of a1) assert.deepEqual(await routeDevs(f.node, a), [p0.hostIface], a);

      // A holder that went down after the last round (its index cached as up): an ADD's sync
      // that must program the route finds out from the kernel's refusal and leaves it out.
      await f.node.ip(["link", "set", p2.hostIface, "down"]);
      for (const a of a2) await f.node.ip(["route", "del", a, "proto", "201"]).catch(() => {});
      f.routes.sync(a2);
      for (const a of a2) assert.deepEqual(await routeDevs(f.node, a), [p1.hostIface], a);
      assert.deepEqual(f.routes.check(f.store.get(p1.containerId, "eth0")!), []);
      assert.deepEqual(
        lines.filter((l) => l.level === "warn" || l.level === "error"),
        [],
        "nothing here is worth a warning",
      );
    },
  });
}

Deno.test({
  name: "AnycastRoutes: an address the kernel keeps refusing is logged once and counted",
  ...ROOT_ONLY,
  async fn() {
    const lines: Record<string, unknown>[] = [];
    await using f = await fixture(2, (l) => lines.push(l));
    const bad = "fd00:fff0::23"; // sorts before the good ones
    const good = ["10.255.0.23", "fd00:ffff::23"];
    const p0 = f.addPod(0, [bad]);
    const p1 = f.addPod(1, good);
    // IPv6 off on the holder's veth: the kernel refuses any IPv6 route through it (EACCES).
    await f.node.exec(["sysctl", "-qw", `net.ipv6.conf.${p0.hostIface}.disable_ipv6=1`]);
    for (let round = 0; round < 3; round++) {
      for (const a of good) await f.node.ip(["route", "del", a, "proto", "201"]).catch(() => {});
      const report = f.routes.resync();
      assert.match(report.problems.join("; "), /IPv6 is disabled on nexthop device/);
      for (const a of good) assert.deepEqual(await routeDevs(f.node, a), [p1.hostIface], a);
    }
    assert.equal(f.routes.syncFailures, 3, "every failed sync is counted");
    const failed = lines.filter((l) => l.msg === "anycast route sync failed");
    assert.equal(failed.length, 1, JSON.stringify(lines));
    assert.equal(failed[0].address, bad);
    assert.match(String(failed[0].error), /IPv6 is disabled/);

    await f.node.exec(["sysctl", "-qw", `net.ipv6.conf.${p0.hostIface}.disable_ipv6=0`]);
    assert.deepEqual(f.routes.resync().changed, [bad]);
    assert.deepEqual(await routeDevs(f.node, bad), [p0.hostIface]);
    const recovered = lines.filter((l) => l.msg === "anycast route sync recovered");
    assert.deepEqual(recovered.map((l) => [l.address, l.failures]), [[bad, 3]]);
  },
});
