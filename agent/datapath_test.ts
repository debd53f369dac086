/**
 * The per-pod datapath (BRIEF §2) in real network namespaces: a "node"
 * namespace with its own `eth0` uplink and "pod" namespaces. The contract is
 * checked with `ip -j` and /proc, traffic with `ping`, crash repair by building
 * each half-made state by hand.
 */

import assert from "node:assert/strict";
import {
  createNode,
  type NodeFixture,
  type NodeOptions,
  TestNamespace,
} from "../tests/helpers/netns.ts";
import {
  Datapath,
  DatapathInputError,
  FLOCK_ROUTE_PROTOCOL,
  hostIfaceCandidate,
  hostIfaceName,
  InterfaceConflictError,
  isFlockIfaceName,
  type PodNetwork,
} from "./datapath.ts";
import { formatIP, Handle, type IP, NetnsError, parseIP } from "../netlink/mod.ts";
import type { IpAddr, IpLink, IpRoute } from "../tests/helpers/iproute.ts";

const NODE_WITH_V4_DEFAULT: NodeOptions = {
  prefix: "flk-dpn",
  ipv4: { node: "192.168.77.2/24", peer: "192.168.77.1/24" },
  ipv6: { node: "fd77::2/64", peer: "fd77::1/64" },
  defaultRoute4: true,
  defaultRoute6: true,
};
/** A node with no IPv4 at all: Calico's #3270 situation. */
const NODE_WITHOUT_V4: NodeOptions = {
  prefix: "flk-dpn",
  ipv6: { node: "fd77::2/64", peer: "fd77::1/64" },
  defaultRoute6: true,
};

let podCounter = 0;
/** A fresh pod description in `ns` (unique container ID and addresses). */
function podIn(ns: TestNamespace, overrides: Partial<PodNetwork> = {}): PodNetwork {
  const n = ++podCounter;
  return {
    containerId: `${crypto.randomUUID().replaceAll("-", "")}${n.toString(16).padStart(8, "0")}`,
    netns: ns.path,
    ifname: "eth0",
    ipv6: parseIP(`fd00:10::${n.toString(16)}`),
    ipv4: parseIP(`10.10.${n >> 8}.${n & 0xff}`),
    ...overrides,
  };
}

/** A node namespace with eth0 uplink, a Datapath bound to it, removed afterwards. */
async function withNode(
  opts: NodeOptions,
  fn: (f: NodeFixture, dp: Datapath) => Promise<void>,
): Promise<void> {
  const fixture = await createNode(opts);
  try {
    const handle = Handle.forNetns(fixture.node.path);
    try {
      await fn(fixture, new Datapath(handle));
    } finally {
      handle.close();
    }
  } finally {
    await fixture.remove();
  }
}

/** `count` pod namespaces, removed afterwards. */
async function withPods(
  count: number,
  fn: (pods: TestNamespace[]) => Promise<void>,
): Promise<void> {
  const pods: TestNamespace[] = [];
  try {
    for (let i = 0; i < count; i++) pods.push(await TestNamespace.create("flk-dpp"));
    await fn(pods);
  } finally {
    for (const p of pods) await p.remove();
  }
}

async function sysctl(ns: TestNamespace, key: string): Promise<string> {
  const r = await ns.exec(["cat", `/proc/sys/net/${key}`]);
  assert.ok(r.success, r.stderr);
  return r.stdout.trim();
}

/** Routes of a family as "dst dev/gw proto scope" lines, sorted. */
async function routeLines(ns: TestNamespace, family: "-4" | "-6"): Promise<string[]> {
  const routes = await ns.ipJson<IpRoute[]>([family, "route", "show", "table", "all"]);
  return routes
    .filter((r) => r.type === undefined || r.type === "unicast" || r.type === "blackhole")
    .filter((r) => !r.dst.startsWith("fe80::/64") && !r.dst.startsWith("ff00::"))
    .map((r) =>
      [
        r.type === "blackhole" ? "blackhole " + r.dst : r.dst,
        r.gateway ? `via ${r.gateway}` : "",
        r.dev ? `dev ${r.dev}` : "",
        r.protocol !== undefined ? `proto ${r.protocol}` : "",
        r.scope ? `scope ${r.scope}` : "",
      ].filter(Boolean).join(" ")
    )
    .sort();
}

/** Everything of the node that flock could leave behind: links and routes. */
async function nodeSnapshot(ns: TestNamespace) {
  const links = await ns.ipJson<IpLink[]>(["link", "show"]);
  return {
    links: links.map((l) => `${l.ifindex}:${l.ifname}`).sort(),
    routes4: await routeLines(ns, "-4"),
    routes6: await routeLines(ns, "-6"),
  };
}

async function flockLinks(ns: TestNamespace): Promise<string[]> {
  const links = await ns.ipJson<IpLink[]>(["link", "show"]);
  return links.map((l) => l.ifname).filter((n) => n.startsWith("flock"));
}

async function flockRoutes(ns: TestNamespace, family: "-4" | "-6"): Promise<IpRoute[]> {
  const routes = await ns.ipJson<IpRoute[]>([family, "route", "show", "table", "all"]);
  return routes.filter((r) => String(r.protocol) === String(FLOCK_ROUTE_PROTOCOL));
}

/** Asserts the whole §2 contract for one pod, from both sides, with iproute2 and /proc. */
async function assertContract(node: TestNamespace, pod: TestNamespace, p: PodNetwork) {
  const host = hostIfaceName(p.containerId);
  assert.match(host, /^flock[0-9a-f]{8}$/);

  // Host side.
  const [hl] = await node.ipJson<IpLink[]>(["-d", "link", "show", host]);
  assert.equal(hl.linkinfo?.info_kind, "veth");
  assert.ok(hl.flags.includes("UP"), `${host} flags ${hl.flags}`);
  assert.equal(hl.inet6_addr_gen_mode, "none");
  assert.equal(await sysctl(node, `ipv6/conf/${host}/addr_gen_mode`), "1");
  assert.equal(await sysctl(node, `ipv4/conf/${host}/proxy_arp`), "1");
  assert.equal(await sysctl(node, `ipv4/conf/${host}/forwarding`), "1");
  assert.equal(await sysctl(node, `ipv6/conf/${host}/forwarding`), "1");
  assert.equal(await sysctl(node, "ipv6/conf/all/forwarding"), "1");
  assert.ok(hl.link_netnsid !== undefined, "the peer is in another namespace");
  const [ha] = await node.ipJson<IpAddr[]>(["addr", "show", "dev", host]);
  assert.deepEqual(
    ha.addr_info.map((a) => `${a.local}/${a.prefixlen} ${a.scope}${a.nodad ? " nodad" : ""}`),
    ["fe80::1/64 link nodad"],
    "exactly fe80::1/64 without DAD; no EUI-64 link-local",
  );

  // Pod side.
  const [pl] = await pod.ipJson<IpLink[]>(["-d", "link", "show", p.ifname]);
  assert.equal(pl.linkinfo?.info_kind, "veth");
  assert.ok(pl.flags.includes("UP"));
  assert.equal(pl.inet6_addr_gen_mode, "none");
  if (p.mtu) assert.equal(pl.mtu, p.mtu);
  const [pa] = await pod.ipJson<IpAddr[]>(["addr", "show", "dev", p.ifname]);
  const want: string[] = [];
  if (p.ipv4) want.push(`${formatIP(p.ipv4)}/32`);
  if (p.ipv6) want.push(`${formatIP(p.ipv6)}/128 nodad`);
  assert.deepEqual(
    pa.addr_info.map((a) => `${a.local}/${a.prefixlen}${a.nodad ? " nodad" : ""}`).sort(),
    want.sort(),
  );
  assert.ok(!pa.addr_info.some((a) => a.tentative), "nothing tentative");
  const pod6 = await routeLines(pod, "-6");
  const pod4 = await routeLines(pod, "-4");
  if (p.ipv6) {
    assert.ok(
      pod6.some((l) => l.startsWith(`default via fe80::1 dev ${p.ifname}`)),
      pod6.join("\n"),
    );
  }
  if (p.ipv4) {
    assert.ok(pod4.some((l) => l.startsWith(`default via 169.254.1.1 dev ${p.ifname}`)));
    assert.ok(
      pod4.some((l) => l.startsWith(`169.254.1.1 dev ${p.ifname}`) && /scope link/.test(l)),
    );
  } else {
    assert.ok(!pod4.some((l) => l.startsWith("default")));
  }

  // Host routes: /128 and /32 via the host veth, proto 201, scope link.
  const r4 = (await flockRoutes(node, "-4")).filter((r) => r.dev === host);
  const r6 = (await flockRoutes(node, "-6")).filter((r) => r.dev === host);
  assert.deepEqual(
    r4.map((r) => `${r.dst} ${r.scope}`),
    p.ipv4 ? [`${formatIP(p.ipv4)} link`] : [],
  );
  assert.deepEqual(r6.map((r) => r.dst), p.ipv6 ? [formatIP(p.ipv6)] : []);
  const listed = (await node.ipJson<IpRoute[]>(["route", "show", "proto", "201", "scope", "link"]))
    .filter((r) => r.dev === host);
  assert.equal(listed.length, p.ipv4 ? 1 : 0, "ip route show proto 201 scope link finds it");
}

async function ping(from: TestNamespace, to: IP): Promise<void> {
  const r = await from.exec(["ping", "-c", "1", "-W", "2", "-n", formatIP(to)]);
  assert.ok(r.success, `ping ${formatIP(to)} from ${from.name} failed:\n${r.stdout}${r.stderr}`);
}

Deno.test("hostIfaceName is FNV-1a-32 of the container ID, flock<8 hex>", () => {
  // Published FNV-1a-32 test vectors.
  assert.equal(hostIfaceName(""), "flock811c9dc5");
  assert.equal(hostIfaceName("a"), "flocke40c292c");
  assert.equal(hostIfaceName("foobar"), "flockbf9cf968");
  const long = "f".repeat(64);
  assert.equal(hostIfaceName(long).length, 13);
  assert.ok(isFlockIfaceName(hostIfaceName(long)));
  assert.ok(!isFlockIfaceName("flock123"));
  assert.ok(!isFlockIfaceName("eth0"));
  // The alternatives for a colliding ID: the hash of "<id>/<attempt>", all distinct.
  assert.equal(hostIfaceCandidate("foobar", 0), hostIfaceName("foobar"));
  assert.equal(hostIfaceCandidate("a", 1), hostIfaceName("a/1"));
  const alternatives = new Set([0, 1, 2, 3].map((k) => hostIfaceCandidate("collide462789", k)));
  assert.equal(alternatives.size, 4);
  assert.equal(hostIfaceName("collide462789"), hostIfaceName("collide679192"), "a known pair");
});

for (
  const [label, opts] of [
    ["with an IPv4 default route", NODE_WITH_V4_DEFAULT],
    ["without any IPv4 route", NODE_WITHOUT_V4],
  ] as const
) {
  Deno.test(`setup meets the contract and two pods ping each other (node ${label})`, async () => {
    await withNode(opts, (f, dp) =>
      withPods(2, async ([podA, podB]) => {
        const node = f.node;
        const [eth0Before] = await node.ipJson<IpLink[]>(["link", "show", "eth0"]);
        const a = podIn(podA);
        const b = podIn(podB, { mtu: 1400 });
        const ifa = dp.setup(a);
        const ifb = dp.setup(b);
        assert.equal(ifa.hostIface, hostIfaceName(a.containerId));
        assert.notEqual(ifa.hostIndex, ifb.hostIndex);
        assert.match(ifa.podMac, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
        // What the Result reports is what the pod and the node have.
        const [podEth0] = await podA.ipJson<IpLink[]>(["link", "show", "eth0"]);
        assert.deepEqual([ifa.podMac, ifa.podIndex], [podEth0.address, podEth0.ifindex]);
        const [hostEnd] = await node.ipJson<IpLink[]>(["link", "show", ifa.hostIface]);
        assert.deepEqual([ifa.hostMac, ifa.hostIndex], [hostEnd.address, hostEnd.ifindex]);

        await assertContract(node, podA, a);
        await assertContract(node, podB, b);
        assert.deepEqual(dp.check(a), []);
        assert.deepEqual(dp.check(b), []);

        // The node's own eth0 is untouched, and the pod's eth0 never collided with it.
        const [eth0After] = await node.ipJson<IpLink[]>(["link", "show", "eth0"]);
        assert.equal(eth0After.ifindex, eth0Before.ifindex);
        assert.deepEqual(
          (await node.ipJson<IpAddr[]>(["addr", "show", "dev", "eth0"]))[0].addr_info
            .filter((x) => x.scope === "global").map((x) => x.local).sort(),
          opts.ipv4 ? ["192.168.77.2", "fd77::2"] : ["fd77::2"],
        );
        // The node-level anchor that lets proxy ARP answer for 169.254.1.1.
        assert.deepEqual(
          (await flockRoutes(node, "-4")).filter((r) => r.dev === "lo").map((r) => r.dst),
          ["169.254.1.1"],
        );

        await ping(podA, b.ipv6!);
        await ping(podB, a.ipv6!);
        await ping(podA, b.ipv4!);
        await ping(podB, a.ipv4!);

        // setup again changes nothing (idempotent).
        const before = await nodeSnapshot(node);
        const again = dp.setup(a);
        assert.deepEqual(again, ifa);
        assert.deepEqual(await nodeSnapshot(node), before);

        dp.teardown(a.containerId, a);
        dp.teardown(b.containerId, b);
        assert.deepEqual(await flockLinks(node), []);
        assert.deepEqual(
          (await flockRoutes(node, "-4")).map((r) => `${r.dst} ${r.dev}`),
          ["169.254.1.1 lo"],
          "only the node-level anchor route remains",
        );
        assert.deepEqual(await flockRoutes(node, "-6"), []);
        for (const pod of [podA, podB]) {
          const links = await pod.ipJson<IpLink[]>(["link", "show"]);
          assert.deepEqual(links.map((l) => l.ifname), ["lo"]);
        }
        assert.deepEqual(
          dp.check(a),
          [`host interface ${hostIfaceName(a.containerId)} is missing`],
        );
      }));
  });
}

Deno.test("single-stack pods: IPv6 only and IPv4 only", async () => {
  await withNode(NODE_WITHOUT_V4, (f, dp) =>
    withPods(4, async ([a6, b6, a4, b4]) => {
      const p6 = [podIn(a6, { ipv4: undefined }), podIn(b6, { ipv4: undefined })];
      const p4 = [podIn(a4, { ipv6: undefined }), podIn(b4, { ipv6: undefined })];
      for (const p of [...p6, ...p4]) dp.setup(p);
      await assertContract(f.node, a6, p6[0]);
      await assertContract(f.node, a4, p4[0]);
      await ping(a6, p6[1].ipv6!);
      await ping(a4, p4[1].ipv4!);
      for (const p of [...p6, ...p4]) {
        assert.deepEqual(dp.check(p), []);
        dp.teardown(p.containerId, p);
      }
      assert.deepEqual(await flockLinks(f.node), []);
    }));
});

Deno.test("IPv4-only pods with an MTU below IPv6's minimum (NodeConfig allows 576..1279 without cidr6)", async () => {
  await withNode(NODE_WITH_V4_DEFAULT, (f, dp) =>
    withPods(2, async ([a, b]) => {
      const pods = [
        podIn(a, { ipv6: undefined, mtu: 1000 }),
        podIn(b, { ipv6: undefined, mtu: 576 }),
      ];
      for (const p of pods) dp.setup(p);
      for (const [ns, p] of [[a, pods[0]], [b, pods[1]]] as const) {
        const host = hostIfaceName(p.containerId);
        const [hl] = await f.node.ipJson<IpLink[]>(["link", "show", host]);
        const [pl] = await ns.ipJson<IpLink[]>(["link", "show", "eth0"]);
        assert.deepEqual([hl.mtu, pl.mtu], [p.mtu, p.mtu]);
        assert.equal(await sysctl(f.node, `ipv4/conf/${host}/proxy_arp`), "1");
        assert.deepEqual(dp.check(p), []);
      }
      await ping(a, pods[1].ipv4!);
      assert.throws(
        () => dp.setup(podIn(a, { ifname: "eth1", mtu: 1000 })),
        (e: unknown) => e instanceof DatapathInputError && /1280/.test(e.message),
        "an IPv6 pod needs an MTU of at least 1280",
      );
      for (const p of pods) dp.teardown(p.containerId, p);
      assert.deepEqual(await flockLinks(f.node), []);
    }));
});

Deno.test("check: the host veth's MTU differing from the pod's is reported (the veth drops larger packets)", async () => {
  await withNode(NODE_WITH_V4_DEFAULT, (f, dp) =>
    withPods(1, async ([pod]) => {
      const p = podIn(pod, { mtu: 1400 });
      dp.setup(p);
      const host = hostIfaceName(p.containerId);
      await f.node.ip(["link", "set", host, "mtu", "9000"]);
      assert.deepEqual(dp.check(p), [`host interface ${host} has mtu 9000, want 1400`]);
      dp.setup(p);
      assert.deepEqual(dp.check(p), []);
      dp.teardown(p.containerId, p);
    }));
});

Deno.test("check: MAC addresses differing from the expected ones (prevResult's) are reported", async () => {
  await withNode(NODE_WITH_V4_DEFAULT, (f, dp) =>
    withPods(1, async ([pod]) => {
      const p = podIn(pod);
      const made = dp.setup(p);
      const host = hostIfaceName(p.containerId);
      const macs = { podMac: made.podMac, hostMac: made.hostMac };
      assert.deepEqual(dp.check(p, macs), []);
      // A result may spell the MAC in capitals (Go's net.HardwareAddr prints lower case).
      assert.deepEqual(
        dp.check(p, { podMac: made.podMac.toUpperCase(), hostMac: made.hostMac.toUpperCase() }),
        [],
      );
      assert.deepEqual(dp.check(p, { podMac: "02:00:00:00:00:01", hostMac: "02:00:00:00:00:02" }), [
        `host interface ${host} has mac ${made.hostMac}, want 02:00:00:00:00:02`,
        `pod interface eth0 has mac ${made.podMac}, want 02:00:00:00:00:01`,
      ]);
      // The kernel's MAC changed behind flock's back: the pod's neighbours hold a stale entry.
      await pod.ip(["link", "set", "eth0", "address", "02:00:00:00:00:03"]);
      assert.deepEqual(dp.check(p, macs), [
        `pod interface eth0 has mac 02:00:00:00:00:03, want ${made.podMac}`,
      ]);
      assert.deepEqual(dp.check(p), [], "no expectation, no comparison");
      dp.teardown(p.containerId, p);
      assert.deepEqual(await flockLinks(f.node), []);
    }));
});

// ---------------------------------------------------------------------------
// Crash repair: each half-made state built by hand, then setup must converge.

/** Runs `fn` with a node and one pod; asserts afterwards that setup converged. */
async function repairCase(
  build: (
    ctx: { node: TestNamespace; pod: TestNamespace; p: PodNetwork; dp: Datapath },
  ) => Promise<string[] | void>,
  opts: { pods?: number; expectCheck?: (p: PodNetwork, host: string) => string[] } = {},
) {
  await withNode(NODE_WITH_V4_DEFAULT, (f, dp) =>
    withPods(opts.pods ?? 1, async ([pod]) => {
      const p = podIn(pod);
      await build({ node: f.node, pod, p, dp });
      if (opts.expectCheck) {
        assert.deepEqual(
          dp.check(p).sort(),
          opts.expectCheck(p, hostIfaceName(p.containerId)).sort(),
        );
      }
      dp.setup(p);
      await assertContract(f.node, pod, p);
      assert.deepEqual(dp.check(p), []);
      assert.equal((await flockLinks(f.node)).length, 1, "exactly one host veth");
      dp.teardown(p.containerId, p);
      assert.deepEqual(await flockLinks(f.node), []);
    }));
}

Deno.test("repair: pair half-made, peer still on the node under another name", async () => {
  await repairCase(async ({ node, p }) => {
    const host = hostIfaceName(p.containerId);
    await node.ip(["link", "add", host, "type", "veth", "peer", "name", "tmp-peer0"]);
  }, {
    expectCheck: (p, host) => [
      `pod interface eth0 is missing in ${p.netns}`,
      `host interface ${host} is down`,
      `host interface ${host} has IPv6 addr_gen_mode 0, not none`,
      `host interface ${host} has IPv4 forwarding off`,
      `host interface ${host} has proxy_arp off`,
      `host interface ${host} lacks fe80::1/64`,
    ],
  });
});

Deno.test("repair: stray peer on the node whose ifindex is taken in the pod", async () => {
  await repairCase(async ({ node, pod, p }) => {
    const host = hostIfaceName(p.containerId);
    await node.ip(["link", "add", host, "type", "veth", "peer", "name", "tmp-peer0"]);
    const [stray] = await node.ipJson<IpLink[]>(["link", "show", "tmp-peer0"]);
    // Fill the pod's ifindex space up to the stray's index so moving it renumbers it.
    let made = 1;
    while (made < stray.ifindex) {
      await pod.ip(["link", "add", `fill${made}`, "type", "veth", "peer", "name", `fillp${made}`]);
      made += 2;
    }
  });
});

Deno.test("repair: addresses missing on either side", async () => {
  await repairCase(async ({ node, pod, p, dp }) => {
    dp.setup(p);
    const host = hostIfaceName(p.containerId);
    await node.ip(["addr", "del", "fe80::1/64", "dev", host]);
    await pod.ip(["addr", "del", `${formatIP(p.ipv6!)}/128`, "dev", "eth0"]);
    await pod.ip(["addr", "del", `${formatIP(p.ipv4!)}/32`, "dev", "eth0"]);
  }, {
    expectCheck: (p, host) => [
      `host interface ${host} lacks fe80::1/64`,
      `pod interface lacks IPv6 address ${formatIP(p.ipv6!)}`,
      `pod interface lacks IPv4 address ${formatIP(p.ipv4!)}`,
      // The IPv4 routes hang on the deleted /32; the IPv6 default via fe80::1 does not.
      `pod lacks the IPv4 default route via 169.254.1.1`,
    ],
  });
});

Deno.test("repair: routes missing on the node and in the pod", async () => {
  await repairCase(async ({ node, pod, p, dp }) => {
    dp.setup(p);
    const host = hostIfaceName(p.containerId);
    await node.ip(["route", "del", `${formatIP(p.ipv4!)}/32`, "dev", host]);
    await node.ip(["-6", "route", "del", `${formatIP(p.ipv6!)}/128`, "dev", host]);
    await pod.ip(["-6", "route", "del", "default"]);
    await pod.ip(["-4", "route", "del", "default"]);
  }, {
    expectCheck: (p, host) => [
      `node lacks the flock route ${formatIP(p.ipv6!)} dev ${host}`,
      `node lacks the flock route ${formatIP(p.ipv4!)} dev ${host}`,
      `pod lacks the IPv6 default route via fe80::1`,
      `pod lacks the IPv4 default route via 169.254.1.1`,
    ],
  });
});

Deno.test("repair: host side down (its routes went with it)", async () => {
  await repairCase(async ({ node, p, dp }) => {
    dp.setup(p);
    await node.ip(["link", "set", hostIfaceName(p.containerId), "down"]);
  }, {
    // Link down flushes IPv6 addresses (keep_addr_on_down=0) and the routes via the link.
    expectCheck: (p, host) => [
      `host interface ${host} is down`,
      `host interface ${host} lacks fe80::1/64`,
      `node lacks the flock route ${formatIP(p.ipv6!)} dev ${host}`,
      `node lacks the flock route ${formatIP(p.ipv4!)} dev ${host}`,
    ],
  });
});

Deno.test("repair: pod side down, wrong MTU and an extra address", async () => {
  await repairCase(async ({ pod, p, dp }) => {
    p.mtu = 1400;
    dp.setup(p);
    await pod.ip(["link", "set", "eth0", "mtu", "1300"]);
    await pod.ip(["addr", "add", "10.99.99.99/32", "dev", "eth0"]);
    await pod.ip(["link", "set", "eth0", "down"]);
  }, {
    expectCheck: (p) => [
      "pod interface eth0 is down",
      "pod interface eth0 has mtu 1300, want 1400",
      "pod interface has unexpected address 10.99.99.99/32",
      // Down flushed the IPv6 address (the IPv4 one stays) and every route via eth0.
      `pod interface lacks IPv6 address ${formatIP(p.ipv6!)}`,
      `pod lacks the IPv6 default route via fe80::1`,
      `pod lacks the IPv4 default route via 169.254.1.1`,
    ],
  });
});

Deno.test("repair: the pod's own IPv4 address added again by hand with a /24 (a connected route in the pod)", async () => {
  await repairCase(async ({ pod, p, dp }) => {
    dp.setup(p);
    await pod.ip(["addr", "add", `${formatIP(p.ipv4!)}/24`, "dev", "eth0"]);
  }, {
    expectCheck: (p) => [`pod interface has unexpected address ${formatIP(p.ipv4!)}/24`],
  });
});

Deno.test("repair: stale flock<hash> veth whose peer is in a different pod namespace", async () => {
  await withNode(NODE_WITH_V4_DEFAULT, (f, dp) =>
    withPods(2, async ([pod, other]) => {
      const p = podIn(pod);
      const host = hostIfaceName(p.containerId);
      await f.node.ip([
        "link",
        "add",
        host,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        other.name,
      ]);
      assert.deepEqual(dp.check(p), [
        `host interface ${host} is down`,
        `host interface ${host} has IPv6 addr_gen_mode 0, not none`,
        `host interface ${host} has IPv4 forwarding off`,
        `host interface ${host} has proxy_arp off`,
        `host interface ${host} lacks fe80::1/64`,
        `pod interface eth0 is missing in ${p.netns}`,
      ]);
      dp.setup(p);
      await assertContract(f.node, pod, p);
      assert.deepEqual(dp.check(p), []);
      // The stale pair is gone from the other namespace as well.
      const otherLinks = await other.ipJson<IpLink[]>(["link", "show"]);
      assert.deepEqual(otherLinks.map((l) => l.ifname), ["lo"]);
      dp.teardown(p.containerId, p);
    }));
});

Deno.test("repair: an eth0 in the pod that flock did not make is a conflict, not clobbered", async () => {
  await withNode(NODE_WITH_V4_DEFAULT, (f, dp) =>
    withPods(1, async ([pod]) => {
      await pod.ip(["link", "add", "eth0", "type", "veth", "peer", "name", "theirs"]);
      dp.ensureNode(); // node-level state the agent sets up at start anyway
      const before = await nodeSnapshot(f.node);
      const p = podIn(pod);
      assert.throws(() => dp.setup(p), InterfaceConflictError);
      assert.deepEqual(await nodeSnapshot(f.node), before, "nothing left on the node");
      assert.ok(await pod.ipJson<IpLink[]>(["link", "show", "theirs"]));
    }));
});

Deno.test("teardown: twice, with the pod netns deleted, with the link gone but routes left", async () => {
  await withNode(NODE_WITH_V4_DEFAULT, (f, dp) =>
    withPods(2, async ([podA, podB]) => {
      const node = f.node;
      const clean = async () => {
        assert.deepEqual(await flockLinks(node), []);
        assert.deepEqual(
          (await flockRoutes(node, "-4")).map((r) => `${r.dst} ${r.dev}`),
          ["169.254.1.1 lo"],
        );
        assert.deepEqual(await flockRoutes(node, "-6"), []);
      };

      // Twice.
      const a = podIn(podA);
      dp.setup(a);
      dp.teardown(a.containerId, a);
      dp.teardown(a.containerId, a);
      await clean();

      // The pod's namespace is already gone.
      const b = podIn(podB);
      dp.setup(b);
      await podB.remove();
      dp.teardown(b.containerId, b);
      await clean();
      assert.ok(
        dp.check(b).includes(`host interface ${hostIfaceName(b.containerId)} is missing`),
      );

      // The link is gone but flock-tagged routes to the pod's addresses survived.
      const c = podIn(podA);
      await node.ip([
        "route",
        "add",
        `${formatIP(c.ipv4!)}/32`,
        "dev",
        "eth0",
        "proto",
        "201",
        "scope",
        "link",
      ]);
      await node.ip([
        "-6",
        "route",
        "add",
        `${formatIP(c.ipv6!)}/128`,
        "dev",
        "eth0",
        "proto",
        "201",
      ]);
      // A route to the same address that flock did not make is left alone.
      await node.ip(["route", "add", `${formatIP(c.ipv4!)}/32`, "dev", "eth0", "metric", "50"]);
      dp.teardown(c.containerId, c);
      await clean();
      assert.deepEqual(
        (await node.ipJson<IpRoute[]>(["route", "show", `${formatIP(c.ipv4!)}/32`])).map((r) =>
          r.dev
        ),
        ["eth0"],
      );
      // teardown without addresses (nothing known) is still fine.
      dp.teardown(c.containerId);
    }));
});

// ---------------------------------------------------------------------------
// Bad input: typed errors that say what is wrong, and nothing half-made.

Deno.test("bad input: typed errors and nothing left behind", async () => {
  await withNode(NODE_WITH_V4_DEFAULT, (f, dp) =>
    withPods(1, async ([pod]) => {
      const before = await nodeSnapshot(f.node);
      const podBefore = await nodeSnapshot(pod);
      const notNetns = await Deno.makeTempFile({ prefix: "flk-not-netns-" });
      try {
        const cases: [Partial<PodNetwork>, new (...a: never[]) => Error, RegExp][] = [
          [{ containerId: "" }, DatapathInputError, /invalid container ID ""/],
          [{ containerId: "../etc" }, DatapathInputError, /invalid container ID "\.\.\/etc"/],
          [{ containerId: "a b" }, DatapathInputError, /invalid container ID/],
          [{ containerId: "-leading" }, DatapathInputError, /invalid container ID/],
          [{ ifname: "eth0123456789abc" }, DatapathInputError, /is 16 bytes.*at most 15/],
          [{ ifname: "" }, DatapathInputError, /pod interface name is empty/],
          [{ ifname: "a/b" }, DatapathInputError, /characters the kernel rejects/],
          [{ ipv6: parseIP("10.0.0.1") }, DatapathInputError, /10\.0\.0\.1 is not an IPv6/],
          [{ ipv4: parseIP("fd00::1") }, DatapathInputError, /fd00::1 is not an IPv4/],
          [{ ipv6: undefined, ipv4: undefined }, DatapathInputError, /no address/],
          [{ mtu: 100 }, DatapathInputError, /mtu 100 is out of range/],
          [{ netns: "/var/run/netns/flk-missing-ns" }, NetnsError, /does not exist/],
          [{ netns: notNetns }, NetnsError, /is not a network namespace/],
          [{ netns: "/proc/self/ns/uts" }, NetnsError, /is not a network namespace/],
        ];
        // A fresh Datapath: ensureNode has not run, so even node-level state must not appear.
        const fresh = new Datapath(dp.node);
        for (const [override, type, message] of cases) {
          const p = podIn(pod, override);
          assert.throws(() => fresh.setup(p), (e: unknown) => {
            assert.ok(e instanceof type, `${JSON.stringify(override)}: ${e}`);
            assert.match((e as Error).message, message);
            return true;
          });
          if (type === DatapathInputError) {
            assert.throws(() => fresh.check(p), type);
          }
        }
        assert.throws(() => dp.teardown("../x"), DatapathInputError);
        assert.deepEqual(await nodeSnapshot(f.node), before, "no new links or routes");
        assert.deepEqual(await nodeSnapshot(pod), podBefore);
      } finally {
        await Deno.remove(notNetns);
      }
    }));
});

// ---------------------------------------------------------------------------
// Node-wide forwarding: the node routes between its uplink and the pods' veths.

Deno.test("ensureNode: IPv4 forwarding on in the node namespace only when the node routes IPv4", async () => {
  const hostBefore = (await Deno.readTextFile("/proc/sys/net/ipv4/conf/all/forwarding")).trim();
  for (const routesIPv4 of [true, false]) {
    await withNode(NODE_WITH_V4_DEFAULT, async (f, dp) => {
      assert.equal(await sysctl(f.node, "ipv4/conf/all/forwarding"), "0", "a fresh netns");
      new Datapath(dp.node, { routesIPv4 }).ensureNode();
      const want = routesIPv4 ? "1" : "0";
      assert.equal(await sysctl(f.node, "ipv4/conf/all/forwarding"), want);
      // What a packet from another node needs: forwarding on the interface it arrives on.
      assert.equal(await sysctl(f.node, "ipv4/conf/eth0/forwarding"), want);
      assert.equal(await sysctl(f.node, "ipv6/conf/all/forwarding"), "1");
    });
  }
  const hostAfter = (await Deno.readTextFile("/proc/sys/net/ipv4/conf/all/forwarding")).trim();
  assert.equal(hostAfter, hostBefore, "the host namespace is untouched");
});
