/**
 * The netlink library against the real kernel, inside throwaway network
 * namespaces, cross-checked with `ip -j` (iproute2 reads what the kernel has,
 * independently of our decoder).
 */

import assert from "node:assert/strict";
import { TestNamespace, withNamespaces } from "../tests/helpers/netns.ts";
import {
  addAddress,
  addRoute,
  addVeth,
  AF_INET,
  AF_INET6,
  deleteAddress,
  deleteLink,
  deleteLinkOffThread,
  deleteRoute,
  deleteRoutesTo,
  formatIP,
  formatPrefix,
  getLinkByIndex,
  getLinkByName,
  Handle,
  IFA_F_NODAD,
  IN6_ADDR_GEN_MODE_NONE,
  isExists,
  isNotFound,
  listAddresses,
  listLinks,
  listRoutes,
  NetlinkArgumentError,
  NetlinkError,
  NetnsError,
  parseIP,
  parsePrefix,
  replaceRoute,
  RequestBatch,
  RT_SCOPE_LINK,
  RTN_BLACKHOLE,
  setLinkFamilySettings,
  setLinkMtu,
  setLinkNetns,
  setLinkUp,
} from "./mod.ts";
import type { IpAddr, IpLink, IpRoute } from "../tests/helpers/iproute.ts";
import { run, runOk } from "../tests/helpers/exec.ts";
import { denoPath } from "../tests/helpers/tools.ts";

/** Runs `fn` with a handle bound to `ns`, closing it however `fn` ends. */
async function withHandle<T>(ns: TestNamespace, fn: (h: Handle) => Promise<T> | T): Promise<T> {
  const h = Handle.forNetns(ns.path);
  try {
    return await fn(h);
  } finally {
    h.close();
  }
}

const PROTO = 201;

Deno.test("links: veth, get by name and index, list, up, mtu, delete", async () => {
  await withNamespaces(["flk-nl"], ([ns]) =>
    withHandle(ns, async (h) => {
      addVeth(h, { name: "nla", peerName: "nlb", mtu: 1400 });
      const a = getLinkByName(h, "nla")!;
      const b = getLinkByName(h, "nlb")!;
      assert.equal(a.kind, "veth");
      assert.equal(a.mtu, 1400);
      assert.equal(b.mtu, 1400);
      assert.equal(a.peerIndex, b.index, "IFLA_LINK of a veth is its peer");
      assert.equal(b.peerIndex, a.index);
      assert.equal(a.peerNetnsId, undefined, "both ends in one namespace");
      assert.equal(a.up, false);
      assert.equal(a.mac.length, 17);
      assert.deepEqual(getLinkByIndex(h, a.index)?.name, "nla");
      assert.equal(getLinkByName(h, "missing0"), undefined);
      assert.equal(getLinkByIndex(h, 99999), undefined);

      const names = listLinks(h).map((l) => l.name).sort();
      assert.deepEqual(names, ["lo", "nla", "nlb"]);

      setLinkUp(h, a.index);
      setLinkMtu(h, a.index, 1300);
      const [shown] = await ns.ipJson<IpLink[]>(["link", "show", "nla"]);
      assert.ok(shown.flags.includes("UP"), JSON.stringify(shown.flags));
      assert.equal(shown.mtu, 1300);
      assert.equal(getLinkByName(h, "nla")!.up, true);
      setLinkUp(h, a.index, false);
      assert.equal(getLinkByName(h, "nla")!.up, false);

      assert.equal(deleteLink(h, a.index), true);
      assert.equal(deleteLink(h, a.index), false, "deleting a missing link is not an error");
      assert.equal(getLinkByName(h, "nlb"), undefined, "a veth dies with its peer");
      assert.deepEqual(await ns.ipJson<IpLink[]>(["link", "show", "type", "veth"]), []);
    }));
});

Deno.test("links: deleteLinkOffThread deletes a veth while the event loop keeps running", async () => {
  await withNamespaces(["flk-nl-off"], ([ns]) =>
    withHandle(ns, async (h) => {
      addVeth(h, { name: "offa", peerName: "offb" });
      addVeth(h, { name: "offc", peerName: "offd" });
      const a = getLinkByName(h, "offa")!;
      const c = getLinkByName(h, "offc")!;
      // The kernel takes tens of ms (RCU) per veth: timers must fire and other requests on the
      // same handle must work meanwhile.
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      try {
        const deleting = deleteLinkOffThread(h, a.index);
        assert.ok(getLinkByName(h, "offc"), "the handle serves other requests meanwhile");
        assert.equal(await deleting, true);
      } finally {
        clearInterval(timer);
      }
      assert.ok(ticks > 0, "timers ran while the link was being deleted");
      assert.equal(getLinkByName(h, "offa"), undefined);
      assert.equal(getLinkByName(h, "offb"), undefined, "a veth dies with its peer");
      assert.equal(await deleteLinkOffThread(h, a.index), false, "a missing link is not an error");
      await Promise.all([deleteLinkOffThread(h, c.index), deleteLinkOffThread(h, c.index)]);
      assert.deepEqual(await ns.ipJson<IpLink[]>(["link", "show", "type", "veth"]), []);
      await assert.rejects(
        () => deleteLinkOffThread(h, -1),
        NetlinkError,
        "a kernel error comes back as a NetlinkError",
      );
    }));
});

Deno.test("links: veth peer created straight in another namespace, and moved", async () => {
  await withNamespaces(
    ["flk-nl-node", "flk-nl-pod"],
    ([node, pod]) =>
      withHandle(node, (h) =>
        withHandle(pod, async (p) => {
          // The node has its own eth0; the pod's eth0 must never meet it.
          await node.ip(["link", "add", "eth0", "type", "veth", "peer", "name", "up0"]);
          const peerMac = new Uint8Array([0x0a, 0x58, 0xfe, 0x01, 0x02, 0x03]);
          const echoed = addVeth(h, {
            name: "flockx",
            peerName: "eth0",
            peerNetnsFd: p.netnsFd,
            mac: new Uint8Array([0x0a, 0x58, 0xfe, 0x0a, 0x0b, 0x0c]),
            peerMac,
          });
          const host = getLinkByName(h, "flockx")!;
          const peer = getLinkByName(p, "eth0")!;
          assert.notEqual(host.peerNetnsId, undefined, "peer is in another namespace");
          assert.equal(host.peerIndex, peer.index);
          assert.equal(peer.peerIndex, host.index);
          assert.equal(peer.mac, "0a:58:fe:01:02:03");
          assert.equal(host.mac, "0a:58:fe:0a:0b:0c");
          // The kernel (6.3 and later) echoes the new end, with the peer's index in its namespace.
          assert.equal(echoed?.index, host.index);
          assert.equal(echoed?.peerIndex, peer.index);
          assert.equal(echoed?.mac, host.mac);
          const podLinks = await pod.ipJson<IpLink[]>(["link", "show"]);
          assert.deepEqual(podLinks.map((l) => l.ifname).sort(), ["eth0", "lo"]);
          const nodeLinks = await node.ipJson<IpLink[]>(["link", "show"]);
          assert.deepEqual(nodeLinks.map((l) => l.ifname).sort(), ["eth0", "flockx", "lo", "up0"]);

          // setLinkNetns: move a link over and rename it on the way.
          addVeth(h, { name: "mv0", peerName: "mv1" });
          setLinkNetns(h, getLinkByName(h, "mv1")!.index, p.netnsFd, "net1");
          assert.ok(getLinkByName(p, "net1"));
          assert.equal(getLinkByName(h, "mv1"), undefined);
          assert.throws(
            () => setLinkNetns(h, getLinkByName(h, "mv0")!.index, p.netnsFd, "x".repeat(16)),
            NetlinkArgumentError,
          );
        })),
  );
});

Deno.test("links: addr_gen_mode, IPv4 forwarding and proxy_arp through IFLA_AF_SPEC", async () => {
  await withNamespaces(["flk-nl"], ([ns]) =>
    withHandle(ns, async (h) => {
      addVeth(h, { name: "afa", peerName: "afb" });
      const { index } = getLinkByName(h, "afa")!;
      const sysctl = async (key: string) =>
        (await ns.exec(["cat", `/proc/sys/net/${key}`])).stdout.trim();
      assert.equal(await sysctl("ipv4/conf/afa/proxy_arp"), "0");
      setLinkFamilySettings(h, index, {
        ipv6AddrGenMode: IN6_ADDR_GEN_MODE_NONE,
        ipv4Forwarding: true,
        ipv4ProxyArp: true,
        ipv4RpFilter: 0,
      });
      assert.equal(await sysctl("ipv6/conf/afa/addr_gen_mode"), "1");
      assert.equal(await sysctl("ipv4/conf/afa/forwarding"), "1");
      assert.equal(await sysctl("ipv4/conf/afa/proxy_arp"), "1");
      assert.equal(await sysctl("ipv4/conf/afa/rp_filter"), "0");
      const link = getLinkByName(h, "afa")!;
      assert.equal(link.ipv6AddrGenMode, IN6_ADDR_GEN_MODE_NONE);
      assert.deepEqual(link.ipv4, { forwarding: true, proxyArp: true, rpFilter: 0 });
      setLinkFamilySettings(h, index, { ipv4ProxyArp: false });
      assert.equal(getLinkByName(h, "afa")!.ipv4?.proxyArp, false);
      assert.equal(await sysctl("ipv4/conf/afa/forwarding"), "1", "untouched knobs stay");
      // With addr_gen_mode none, bringing the link up adds no EUI-64 link-local.
      setLinkUp(h, index);
      assert.deepEqual(listAddresses(h, { family: AF_INET6, index }), []);
    }));
});

Deno.test("addresses: add (nodad), list, delete — both families", async () => {
  await withNamespaces(["flk-nl"], ([ns]) =>
    withHandle(ns, async (h) => {
      addVeth(h, { name: "ada", peerName: "adb" });
      const { index } = getLinkByName(h, "ada")!;
      setLinkFamilySettings(h, index, { ipv6AddrGenMode: IN6_ADDR_GEN_MODE_NONE });
      setLinkUp(h, index);
      addAddress(h, { index, prefix: parsePrefix("fd00::5/128"), noDad: true });
      addAddress(h, { index, prefix: parsePrefix("fe80::1/64"), noDad: true });
      addAddress(h, { index, prefix: parsePrefix("10.1.0.5/32") });

      const v6 = listAddresses(h, { family: AF_INET6, index });
      assert.deepEqual(v6.map((a) => formatPrefix(a.prefix)).sort(), ["fd00::5/128", "fe80::1/64"]);
      for (const a of v6) assert.ok(a.flags & IFA_F_NODAD, formatPrefix(a.prefix));
      const v4 = listAddresses(h, { family: AF_INET });
      assert.deepEqual(v4.map((a) => `${formatPrefix(a.prefix)}#${a.index}`).sort(), [
        "10.1.0.5/32#" + index,
        "127.0.0.1/8#1",
      ]);
      assert.equal(listAddresses(h, { index }).length, 3);

      const [shown] = await ns.ipJson<IpAddr[]>(["addr", "show", "dev", "ada"]);
      const byAddr = new Map(shown.addr_info.map((a) => [`${a.local}/${a.prefixlen}`, a]));
      assert.deepEqual([...byAddr.keys()].sort(), ["10.1.0.5/32", "fd00::5/128", "fe80::1/64"]);
      assert.equal(byAddr.get("fd00::5/128")!.nodad, true);
      assert.equal(byAddr.get("fe80::1/64")!.nodad, true);

      // Adding again: typed EEXIST; with replace: fine.
      const err = assert.throws(
        () => addAddress(h, { index, prefix: parsePrefix("10.1.0.5/32") }),
        (e: unknown) => e instanceof NetlinkError && e.exists && isExists(e),
      );
      void err;
      addAddress(h, { index, prefix: parsePrefix("10.1.0.5/32"), replace: true });

      assert.equal(deleteAddress(h, index, parsePrefix("10.1.0.5/32")), true);
      assert.equal(deleteAddress(h, index, parsePrefix("10.1.0.5/32")), false);
      assert.equal(deleteAddress(h, index, parsePrefix("fd00::5/128")), true);
      assert.equal(deleteAddress(h, index, parsePrefix("fd00::5/128")), false);
      assert.deepEqual(
        listAddresses(h, { index }).map((a) => formatPrefix(a.prefix)),
        ["fe80::1/64"],
      );
    }));
});

Deno.test("deleteRoutesTo: every route of the protocol to the prefix, any dev or scope", async () => {
  await withNamespaces(["flk-nl"], ([ns]) =>
    withHandle(ns, async (h) => {
      addVeth(h, { name: "rda", peerName: "rdb" });
      const a = getLinkByName(h, "rda")!.index;
      const b = getLinkByName(h, "rdb")!.index;
      setLinkUp(h, a);
      setLinkUp(h, b);
      const v4 = parsePrefix("10.9.0.8/32");
      const v6 = parsePrefix("fd00::8/128");
      addRoute(h, { dst: v4, oif: a, scope: RT_SCOPE_LINK, protocol: PROTO });
      addRoute(h, { dst: v4, oif: b, protocol: PROTO, priority: 20 });
      addRoute(h, { dst: v4, oif: b, scope: RT_SCOPE_LINK, priority: 50 }); // not ours
      addRoute(h, { dst: v6, oif: a, protocol: PROTO });

      assert.equal(deleteRoutesTo(h, v4, PROTO), 2);
      assert.equal(deleteRoutesTo(h, v6, PROTO), 1);
      assert.equal(deleteRoutesTo(h, v6, PROTO), 0, "nothing left is not an error");
      const left = await ns.ipJson<IpRoute[]>(["route", "show", "10.9.0.8/32"]);
      assert.deepEqual(left.map((r) => `${r.dev} ${r.protocol}`), ["rdb static"]);
      assert.deepEqual(await ns.ipJson<IpRoute[]>(["-6", "route", "show", "fd00::8/128"]), []);
    }));
});

Deno.test("routes: add, replace, list by protocol, delete, blackhole — both families", async () => {
  await withNamespaces(["flk-nl"], ([ns]) =>
    withHandle(ns, async (h) => {
      addVeth(h, { name: "rta", peerName: "rtb" });
      const a = getLinkByName(h, "rta")!.index;
      const b = getLinkByName(h, "rtb")!.index;
      setLinkUp(h, a);
      setLinkUp(h, b);
      for (const dst of ["10.9.0.7/32", "fd00::7/128"]) {
        addRoute(h, { dst: parsePrefix(dst), oif: a, scope: RT_SCOPE_LINK, protocol: PROTO });
      }
      addRoute(h, { dst: parsePrefix("10.99.0.0/16"), type: RTN_BLACKHOLE, protocol: PROTO });
      addRoute(h, { dst: parsePrefix("fd00:99::/48"), type: RTN_BLACKHOLE, protocol: PROTO });

      const v4 = await ns.ipJson<IpRoute[]>(["-4", "route", "show", "proto", String(PROTO)]);
      assert.deepEqual(
        v4.map((r) => `${r.type ?? "unicast"} ${r.dst} ${r.dev ?? "-"} ${r.scope ?? "-"}`).sort(),
        ["blackhole 10.99.0.0/16 - -", "unicast 10.9.0.7 rta link"],
      );
      const v6 = await ns.ipJson<IpRoute[]>(["-6", "route", "show", "proto", String(PROTO)]);
      assert.deepEqual(
        v6.map((r) => `${r.type ?? "unicast"} ${r.dst} ${r.dev ?? "-"}`).sort(),
        ["blackhole fd00:99::/48 lo", "unicast fd00::7 rta"],
      );

      const ours4 = listRoutes(h, { family: AF_INET, protocol: PROTO });
      assert.deepEqual(
        ours4.map((r) => `${r.type} ${formatPrefix(r.dst)} ${r.oif ?? "-"} ${r.scope}`).sort(),
        [`1 10.9.0.7/32 ${a} ${RT_SCOPE_LINK}`, `${RTN_BLACKHOLE} 10.99.0.0/16 - 0`],
      );
      const ours6 = listRoutes(h, { family: AF_INET6, protocol: PROTO });
      assert.deepEqual(ours6.map((r) => formatPrefix(r.dst)).sort(), [
        "fd00:99::/48",
        "fd00::7/128",
      ]);
      assert.ok(listRoutes(h, { family: AF_INET6 }).length > ours6.length, "unfiltered sees more");
      assert.deepEqual(
        listRoutes(h, { family: AF_INET, protocol: PROTO, oif: a }).map((r) => formatPrefix(r.dst)),
        ["10.9.0.7/32"],
      );

      // add again: EEXIST; replace: moves the route to the other link.
      assert.throws(
        () =>
          addRoute(h, {
            dst: parsePrefix("10.9.0.7/32"),
            oif: a,
            scope: RT_SCOPE_LINK,
            protocol: PROTO,
          }),
        (e: unknown) => isExists(e) && /add route 10\.9\.0\.7\/32/.test((e as Error).message),
      );
      for (const dst of ["10.9.0.7/32", "fd00::7/128"]) {
        replaceRoute(h, { dst: parsePrefix(dst), oif: b, scope: RT_SCOPE_LINK, protocol: PROTO });
      }
      const moved = await ns.ipJson<IpRoute[]>(["route", "show", "10.9.0.7/32"]);
      assert.deepEqual(moved.map((r) => r.dev), ["rtb"]);
      const moved6 = await ns.ipJson<IpRoute[]>(["-6", "route", "show", "fd00::7/128"]);
      assert.deepEqual(moved6.map((r) => r.dev), ["rtb"], "replaced, not appended");

      for (const dst of ["10.9.0.7/32", "fd00::7/128"]) {
        const r = { dst: parsePrefix(dst), oif: b, scope: RT_SCOPE_LINK, protocol: PROTO };
        assert.equal(deleteRoute(h, r), true);
        assert.equal(deleteRoute(h, r), false, "deleting a missing route is not an error");
      }
      assert.equal(
        deleteRoute(h, { dst: parsePrefix("10.99.0.0/16"), type: RTN_BLACKHOLE, protocol: PROTO }),
        true,
      );
      assert.deepEqual(
        listRoutes(h, { family: AF_INET, protocol: PROTO }),
        [],
      );
      assert.throws(
        () => addRoute(h, { dst: parsePrefix("10.0.0.0/8"), gateway: parseIP("fe80::1") }),
        NetlinkArgumentError,
      );
    }));
});

Deno.test("routes: ECMP over two veths — IPv4 by device, IPv6 via gateways", async () => {
  await withNamespaces(["flk-nl"], ([ns]) =>
    withHandle(ns, async (h) => {
      addVeth(h, { name: "ma", peerName: "mpa" });
      addVeth(h, { name: "mb", peerName: "mpb" });
      const a = getLinkByName(h, "ma")!.index;
      const b = getLinkByName(h, "mb")!.index;
      for (const name of ["ma", "mb", "mpa", "mpb"]) setLinkUp(h, getLinkByName(h, name)!.index);

      addRoute(h, {
        dst: parsePrefix("10.50.0.1/32"),
        protocol: PROTO,
        multipath: [{ oif: a }, { oif: b }],
      });
      addRoute(h, {
        dst: parsePrefix("fd00:50::1/128"),
        protocol: PROTO,
        multipath: [{ oif: a, gateway: parseIP("fe80::2") }, {
          oif: b,
          gateway: parseIP("fe80::3"),
        }],
      });

      const [v4] = await ns.ipJson<IpRoute[]>(["route", "show", "10.50.0.1"]);
      assert.deepEqual(v4.nexthops!.map((n) => n.dev), ["ma", "mb"]);
      const [v6] = await ns.ipJson<IpRoute[]>(["-6", "route", "show", "fd00:50::1"]);
      assert.deepEqual(v6.nexthops!.map((n) => `${n.gateway} ${n.dev}`), [
        "fe80::2 ma",
        "fe80::3 mb",
      ]);

      const [ours4] = listRoutes(h, { family: AF_INET, protocol: PROTO });
      assert.deepEqual(ours4.multipath!.map((n) => n.oif), [a, b]);
      const ours6 = listRoutes(h, { family: AF_INET6, protocol: PROTO });
      assert.equal(ours6.length, 1, "one IPv6 multipath route, not one per path");
      assert.deepEqual(
        ours6[0].multipath!.map((n) => `${formatIP(n.gateway!)} #${n.oif}`),
        [`fe80::2 #${a}`, `fe80::3 #${b}`],
      );
      // listRoutes' oif filter finds a multipath route by any of its paths.
      assert.equal(listRoutes(h, { family: AF_INET, protocol: PROTO, oif: b }).length, 1);

      // Replace with one path fewer (what happens when an anycast replica leaves).
      replaceRoute(h, {
        dst: parsePrefix("10.50.0.1/32"),
        protocol: PROTO,
        multipath: [{ oif: b }],
      });
      const [after] = await ns.ipJson<IpRoute[]>(["route", "show", "10.50.0.1"]);
      assert.equal(after.dev ?? after.nexthops?.[0]?.dev, "mb");
      assert.equal(after.nexthops?.length ?? 1, 1);

      assert.equal(deleteRoute(h, ours6[0]), true);
      assert.equal(deleteRoute(h, { dst: parsePrefix("10.50.0.1/32"), protocol: PROTO }), true);
      assert.deepEqual(await ns.ipJson(["route", "show", "proto", String(PROTO)]), []);
      assert.deepEqual(await ns.ipJson(["-6", "route", "show", "proto", String(PROTO)]), []);
    }));
});

Deno.test("RequestBatch: one datagram, run in order, every request run, first failure thrown", async () => {
  await withNamespaces(["flk-nl"], ([ns]) =>
    withHandle(ns, async (h) => {
      addVeth(h, { name: "bta", peerName: "btb" });
      const { index } = getLinkByName(h, "bta")!;
      const batch = new RequestBatch(h);
      batch.flush(); // nothing queued: nothing sent
      // Order matters: the route needs the link up, which comes earlier in the same datagram.
      setLinkUp(batch, index);
      addAddress(batch, { index, prefix: parsePrefix("fd00::7/128"), noDad: true });
      replaceRoute(batch, {
        dst: parsePrefix("10.7.0.0/24"),
        oif: index,
        scope: RT_SCOPE_LINK,
        protocol: PROTO,
      });
      assert.equal(batch.size, 3);
      batch.flush();
      assert.equal(batch.size, 0);
      assert.ok(getLinkByName(h, "bta")!.up);
      const [route] = await ns.ipJson<IpRoute[]>(["route", "show", "proto", String(PROTO)]);
      assert.equal(route.dst, "10.7.0.0/24");

      // A failure in the middle: the requests after it still run; the first failure is thrown,
      // named by its operation.
      addAddress(batch, { index: 99999, prefix: parsePrefix("10.8.0.1/32") });
      addAddress(batch, { index, prefix: parsePrefix("10.8.0.2/32") });
      addAddress(batch, { index, prefix: parsePrefix("fd00::7/128"), noDad: true }); // EEXIST
      assert.throws(
        () => batch.flush(),
        (e: unknown) =>
          e instanceof NetlinkError && e.notFound && /add address 10\.8\.0\.1\/32/.test(e.message),
      );
      assert.deepEqual(
        listAddresses(h, { index }).map((a) => formatPrefix(a.prefix)).sort(),
        ["10.8.0.2/32", "fd00::7/128"],
      );
      // The socket is left clean: the next request reads its own answer.
      assert.equal(getLinkByName(h, "bta")!.index, index);
    }));
});

Deno.test("typed errors: exists, not found, and the kernel's own message", async () => {
  await withNamespaces(["flk-nl"], ([ns]) =>
    withHandle(ns, (h) => {
      addVeth(h, { name: "tea", peerName: "teb" });
      assert.throws(
        () => addVeth(h, { name: "tea", peerName: "tec" }),
        (e: unknown) =>
          e instanceof NetlinkError && e.exists && !e.notFound &&
          /add veth tea <-> tec: File exists \(errno 17\)/.test(e.message),
      );
      assert.throws(
        () => setLinkUp(h, 99999),
        (e: unknown) => e instanceof NetlinkError && e.notFound && isNotFound(e),
      );
      assert.throws(
        () => addAddress(h, { index: 99999, prefix: parsePrefix("10.0.0.1/32") }),
        (e: unknown) => isNotFound(e),
      );
      // A route through a link that is down: the kernel explains itself via extended ack.
      assert.throws(
        () =>
          addRoute(h, {
            dst: parsePrefix("10.0.0.0/8"),
            gateway: parseIP("192.0.2.1"),
            oif: getLinkByName(h, "tea")!.index,
          }),
        (e: unknown) =>
          e instanceof NetlinkError && typeof e.kernelMessage === "string" &&
          e.message.includes("kernel says: " + e.kernelMessage),
      );
      assert.throws(() => getLinkByName(h, "x".repeat(16)), NetlinkArgumentError);
    }));
});

Deno.test("Handle.forNetns: missing path, non-netns files, other namespace kinds", async () => {
  assert.throws(
    () => Handle.forNetns("/var/run/netns/flk-does-not-exist"),
    (e: unknown) =>
      e instanceof NetnsError && e.path === "/var/run/netns/flk-does-not-exist" &&
      /does not exist/.test(e.message),
  );
  assert.throws(() => Handle.forNetns(""), NetnsError);
  const file = await Deno.makeTempFile({ prefix: "flk-not-netns-" });
  try {
    for (const path of [file, "/proc/self/ns/uts", "/tmp"]) {
      assert.throws(
        () => Handle.forNetns(path),
        (e: unknown) =>
          e instanceof NetnsError && /is not a network namespace/.test(e.message) &&
          e.message.includes(JSON.stringify(path)),
        path,
      );
    }
  } finally {
    await Deno.remove(file);
  }
  // The home namespace still works afterwards (a failed setns must not strand the thread).
  const h = Handle.current();
  try {
    assert.ok(getLinkByName(h, "lo"));
  } finally {
    h.close();
  }
  assert.throws(() => getLinkByName(h, "lo"), /is closed/);
});

Deno.test("Handle.forNetns: a FIFO as the namespace path is refused, not a hang of the whole process", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flk-fifo-" });
  try {
    const fifo = `${dir}/netns`;
    await runOk(["mkfifo", fifo]);
    // In a child: opening a FIFO for reading waits for a writer, on the only JS thread.
    const code = `import { Handle } from ${
      JSON.stringify(new URL("./mod.ts", import.meta.url).href)
    };
      try { Handle.forNetns(${JSON.stringify(fifo)}); console.log("opened"); }
      catch (e) { console.log(e.message); }`;
    const r = await run([denoPath(), "eval", "--no-lock", code], { timeoutMs: 20_000 });
    assert.equal(
      r.stdout.trim(),
      `network namespace ${JSON.stringify(fifo)}: is not a network namespace`,
      r.stderr,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("handles act in their own namespace whichever namespace runs next", async () => {
  await withNamespaces(
    ["flk-nl-a", "flk-nl-b"],
    ([na, nb]) =>
      withHandle(na, (a) =>
        withHandle(nb, async (b) => {
          addVeth(a, { name: "only-a", peerName: "only-a1" });
          addVeth(b, { name: "only-b", peerName: "only-b1" });
          assert.equal(getLinkByName(a, "only-b"), undefined);
          assert.equal(getLinkByName(b, "only-a"), undefined);
          assert.deepEqual(
            (await na.ipJson<IpLink[]>(["link", "show", "type", "veth"])).map((l) => l.ifname)
              .sort(),
            ["only-a", "only-a1"],
          );
          a.writeSysctl("net.ipv6.conf.all.forwarding", "1");
          assert.equal(a.readSysctl("net.ipv6.conf.all.forwarding"), "1");
          assert.equal(b.readSysctl("net.ipv6.conf.all.forwarding"), "0");
          assert.throws(() => a.readSysctl("kernel.hostname"), /not a network sysctl/);
        })),
  );
});

Deno.test("dumps that span several datagrams (300 links) are read whole", async () => {
  await withNamespaces(["flk-nl"], ([ns]) =>
    withHandle(ns, (h) => {
      for (let i = 0; i < 150; i++) addVeth(h, { name: `d${i}a`, peerName: `d${i}b` });
      const links = listLinks(h);
      assert.equal(links.length, 301);
      assert.equal(new Set(links.map((l) => l.index)).size, 301);
    }));
});
