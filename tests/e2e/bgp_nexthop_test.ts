/**
 * BGP next hops of mixed-family sessions, end to end: a flock node (agent + BIRD) peers with a
 * gobgpd two hops away, behind a router namespace. What the peer must get, and what an
 * operator would check: the next hop in the peer's RIB is a global address of the node in the
 * route's own family (not `::ffff:a.b.c.d`, not a link-local, not missing), the peer's kernel
 * can install a route through it, and a pod answers pings sent from the peer's side over it.
 *
 * Topology (all namespaces this test creates):
 *
 * ```
 * node (eth0 10.0.0.11, fd00:a::11) ── router br0 (10.0.0.1, fd00:a::1)
 *                                      router rt1 (10.1.0.1, fd00:b::1) ── peer br0 (10.1.0.2, fd00:b::2), gobgpd
 * ```
 *
 * The direct cases peer with a gobgpd ToR on the node's own segment over an IPv4-only link
 * (10.0.0.0/24, link-locals only), the node's global IPv6 on lo or nowhere.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY, runOk } from "../helpers/exec.ts";
import { eventually } from "../helpers/eventually.ts";
import { ping, TestNamespace } from "../helpers/flock.ts";
import { type BgpLabNode, startBgpNode } from "../helpers/bgp_lab.ts";
import { GobgpTor, type RibPath } from "../helpers/gobgp.ts";
import { Fabric } from "../helpers/fabric.ts";
import { addAddress, linkVeth } from "../helpers/netns.ts";
import { gobgpPath } from "../helpers/tools.ts";
import type { BgpPeerSpec } from "../../agent/config.ts";

const NODE_AS = 65001;
const PEER_AS = 65000;
const CIDR6 = "fd00:1::/64";
const CIDR4 = "10.244.1.0/24";
const ANYCAST6 = "fd00:ffff::/112";
const ANYCAST4 = "10.255.255.0/24";

/** A routed two-hop lab: the node, a router, the gobgpd peer. */
interface Lab {
  node: BgpLabNode;
  peer: GobgpTor;
  router: Fabric;
}

async function sysctl(ns: TestNamespace, ...settings: string[]): Promise<void> {
  await runOk(["ip", "netns", "exec", ns.name, "sysctl", "-q", "-w", ...settings]);
}

/** The lab node's NodeConfig spec, with its one BGP peer. */
function nodeSpec(peer: Omit<BgpPeerSpec, "asn">) {
  return {
    cidr6: CIDR6,
    cidr4: CIDR4,
    anycastCIDRs: [ANYCAST6, ANYCAST4],
    bgp: {
      asn: NODE_AS,
      peers: [{ ...peer, asn: PEER_AS }],
      gracefulRestart: { enabled: true, restartTime: 120 },
    },
  };
}

/**
 * Builds the lab; `peerAddress` picks the session's family (the peer's IPv4 or IPv6 address),
 * `nodeIpv4` whether the node has an IPv4 underlay address at all.
 */
async function startLab(
  cleanup: AsyncDisposableStack,
  peer: Omit<BgpPeerSpec, "asn">,
  nodeIpv4 = true,
): Promise<Lab> {
  const router = await Fabric.start("flk-rtr");
  cleanup.use(router);
  await addAddress(router.ns, "br0", "10.0.0.1/24");
  await addAddress(router.ns, "br0", "fd00:a::1/64");
  await sysctl(router.ns, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1");

  const nodeSession = peer.address.includes(":") ? "fd00:a::11" : "10.0.0.11";
  const tor = await GobgpTor.start({
    asn: PEER_AS,
    routerId: "10.1.0.2",
    addresses: ["10.1.0.2/24", "fd00:b::2/64"],
    neighbors: [{ address: nodeSession, asn: NODE_AS, multihopTtl: 4 }],
  });
  cleanup.use(tor);
  const port = tor.nextPortName();
  await linkVeth(router.ns, tor.ns, "rt1", port);
  await tor.attach(port);
  await addAddress(router.ns, "rt1", "10.1.0.1/24");
  await addAddress(router.ns, "rt1", "fd00:b::1/64");
  await tor.ns.ip(["route", "add", "default", "via", "10.1.0.1"]);
  await tor.ns.ip(["-6", "route", "add", "default", "via", "fd00:b::1"]);

  const node = await startBgpNode(router, {
    name: "nh-node",
    ipv4: nodeIpv4 ? "10.0.0.11" : undefined,
    ipv6: "fd00:a::11",
    spec: nodeSpec(peer),
  }, cleanup);
  if (nodeIpv4) await node.flock.ns.ip(["route", "replace", "default", "via", "10.0.0.1"]);
  else await node.flock.ns.ip(["-4", "route", "replace", "default", "via", "inet6", "fd00:a::1"]);
  await node.flock.ns.ip(["-6", "route", "replace", "default", "via", "fd00:a::1"]);
  // The router knows the node's pod CIDRs through the node (static routes, as a fabric would).
  await router.ns.ip(["-6", "route", "add", CIDR6, "via", "fd00:a::11"]);
  await router.ns.ip(["route", "add", CIDR4, "via", "inet6", "fd00:a::11"]);
  return { node, peer: tor, router };
}

/** The direct lab: the node and the gobgpd ToR on its own segment. */
interface DirectLab {
  node: BgpLabNode;
  tor: GobgpTor;
}

/** The next hop of the prefix's best path in the peer's RIB (NEXT_HOP or MP_REACH_NLRI). */
function nextHop(paths: RibPath[] | undefined): string | undefined {
  const attrs = paths?.find((p) => p.best)?.attrs ?? paths?.[0]?.attrs ?? [];
  return attrs.find((a) => a.type === 14 || a.type === 3)?.nexthop;
}

/**
 * Installs `prefix` in the peer's kernel through the BGP next hop as a router resolves a
 * multihop one (recursively: through the route to the next hop); fails if that is not possible.
 */
async function installThroughNextHop(ns: TestNamespace, prefix: string, hop: string) {
  const [via] = await ns.ipJson<{ gateway?: string; dev: string }[]>(["route", "get", hop]);
  assert.ok(via?.gateway, `the peer has no route to next hop ${hop}`);
  const gw = via.gateway.includes(":") ? ["inet6", via.gateway] : [via.gateway];
  await ns.ip(["route", "replace", prefix, "via", ...gw, "dev", via.dev]);
}

/** The IPv6 link-local address of `dev`. */
async function linkLocal(ns: TestNamespace, dev: string): Promise<string> {
  const [link] = await ns.ipJson<{ addr_info: { local: string; scope: string }[] }[]>(
    ["-6", "addr", "show", "dev", dev, "scope", "link"],
  );
  return link.addr_info.find((a) => a.scope === "link")!.local;
}

/** Pings up to three times (the first may race neighbour discovery on three links). */
async function reaches(from: TestNamespace, address: string): Promise<boolean> {
  for (let i = 0; i < 3; i++) if (await ping(from, address)) return true;
  return false;
}

/** Routes and neighbours of every lab namespace, for a failure message. */
async function dump(lab: Lab): Promise<string> {
  const out: string[] = [];
  for (
    const [name, ns] of [["node", lab.node.flock.ns], ["router", lab.router.ns], [
      "peer",
      lab.peer.ns,
    ]] as const
  ) {
    for (const args of [["-6", "route"], ["-4", "route"], ["-6", "neigh"], ["-6", "addr"]]) {
      out.push(`${name}: ip ${args.join(" ")}`, await ns.ip(args).catch((e) => String(e)));
    }
  }
  return out.join("\n");
}

/**
 * What a failed case prints: the lab's routes when it has a router (`lab`), the peer's log,
 * BIRD's protocols and its configuration.
 */
async function printDiagnostics(node: BgpLabNode, peer: GobgpTor, lab?: Lab): Promise<void> {
  if (lab) console.log(await dump(lab));
  console.log(await peer.log());
  console.log((await node.bird.birdc(["show", "protocols", "all"])).stdout);
  console.log(await Deno.readTextFile(node.bird.configPath));
}

/** A pod on the lab node; returns its addresses (IPv6 first). */
async function addPod(
  node: BgpLabNode,
  cleanup: AsyncDisposableStack,
  id: string,
  anycast?: string,
): Promise<string[]> {
  const ns = await TestNamespace.create("flk-nhp");
  cleanup.use(ns);
  const extraConfig = anycast
    ? {
      runtimeConfig: {
        "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/anycast": anycast },
      },
    }
    : undefined;
  const r = await node.flock.cni("ADD", { containerId: id, netns: ns.path, extraConfig });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return (r.json as { ips: { address: string }[] }).ips.map((i) => i.address.split("/")[0]);
}

const COMMON = { ...ROOT_ONLY, sanitizeResources: false, sanitizeOps: false };

/** What a case's body gets: its lab's parts, the node's namespace and the test's cleanup stack. */
type Case<L> = L & { ns: TestNamespace; cleanup: AsyncDisposableStack };

/**
 * Registers a case on a fresh lab: `start` builds it, `fn` runs the case on it; when `fn`
 * fails, `diagnose` prints the lab's state before the failure is reported (and the lab torn down).
 */
function labTest<L extends { node: BgpLabNode }>(
  name: string,
  start: (cleanup: AsyncDisposableStack) => Promise<L>,
  diagnose: (lab: L) => Promise<void>,
  fn: (lab: Case<L>) => Promise<void>,
) {
  Deno.test({
    name,
    ...COMMON,
    async fn() {
      await using cleanup = new AsyncDisposableStack();
      const lab = await start(cleanup);
      try {
        await fn({ ...lab, ns: lab.node.flock.ns, cleanup });
      } catch (e) {
        await diagnose(lab);
        throw e;
      }
    },
  });
}

/** A case on the routed two-hop lab ({@link startLab}); a failure prints its routes too. */
function routedLabTest(
  t: {
    name: string;
    peer: Omit<BgpPeerSpec, "asn">;
    nodeIpv4?: boolean;
    fn: (lab: Case<Lab>) => Promise<void>;
  },
) {
  labTest(
    t.name,
    (cleanup) => startLab(cleanup, t.peer, t.nodeIpv4),
    (lab) => printDiagnostics(lab.node, lab.peer, lab),
    t.fn,
  );
}

/** A case on the direct lab ({@link startDirectLab}): the node and its ToR. */
function directLabTest(
  t: { name: string; nodeIpv6: boolean; fn: (lab: Case<DirectLab>) => Promise<void> },
) {
  labTest(
    t.name,
    (cleanup) => startDirectLab(cleanup, t.nodeIpv6),
    (lab) => printDiagnostics(lab.node, lab.tor),
    t.fn,
  );
}

/** `flock status ARGS…` against the lab node's agent; its stdout. */
async function flockStatus(node: BgpLabNode, ...args: string[]): Promise<string> {
  const socket = ["--socket", node.flock.socketPath];
  return (await runOk([node.flock.executable, "status", ...socket, ...args])).stdout;
}

/** The `bgp` part of `flock status --json`. */
async function statusBgp(node: BgpLabNode) {
  return JSON.parse(await flockStatus(node, "--json")).bgp;
}

for (const uplinkHasIpv6 of [true, false]) {
  routedLabTest({
    name: `bgp next hop: IPv4 multihop session carries IPv6 with the node's global IPv6 ` +
      `(${uplinkHasIpv6 ? "on the uplink" : "on lo only, uplink without one"})`,
    peer: { address: "10.1.0.2", multihop: 2 },
    async fn({ node, peer, router, ns, cleanup }) {
      if (!uplinkHasIpv6) {
        // A fabric node with its routable IPv6 on the loopback: before the fix BIRD announced
        // `::` here and the peer dropped every IPv6 route.
        await ns.ip(["-6", "addr", "del", "fd00:a::11/64", "dev", "eth0"]);
        await addAddress(ns, "lo", "fd00:a::11/128");
        await ns.ip(["-6", "route", "replace", "fd00:a::/64", "dev", "eth0"]);
        await ns.ip(["-6", "route", "replace", "default", "via", "fd00:a::1"]);
        // The router reaches the loopback address through the node's link-local, as a fabric
        // that routes node loopbacks does.
        const ll = await linkLocal(ns, "eth0");
        for (const dst of ["fd00:a::11/128", CIDR6]) {
          await router.ns.ip(["-6", "route", "replace", dst, "via", ll, "dev", "br0"]);
        }
        await node.bird.birdc(["restart", "peer_10_1_0_2"]);
      }
      await peer.waitEstablished();
      const [pod6] = await addPod(node, cleanup, "nh-pod");
      await addPod(node, cleanup, "nh-any", "fd00:ffff::7");
      const rib = await peer.waitRib(
        "ipv6",
        (rib) => CIDR6 in rib && "fd00:ffff::7/128" in rib,
      );
      // A global IPv6 of the node: not ::ffff:10.0.0.11, not a link-local, not missing.
      assert.equal(nextHop(rib[CIDR6]), "fd00:a::11");
      assert.equal(nextHop(rib["fd00:ffff::7/128"]), "fd00:a::11");
      const rib4 = await peer.waitRib("ipv4", (rib) => CIDR4 in rib);
      assert.equal(nextHop(rib4[CIDR4]), "10.0.0.11");
      await installThroughNextHop(peer.ns, CIDR6, nextHop(rib[CIDR6])!);
      assert.ok(await reaches(peer.ns, pod6), `peer -> pod ${pod6} through fd00:a::11`);
      const log = await Deno.readTextFile(node.flock.agentLogPath);
      assert.doesNotMatch(log, /IPv6 routes not announced/);
    },
  });
}

routedLabTest({
  name: "bgp next hop: IPv6 session carries IPv4 with the node's IPv6 (RFC 8950), " +
    "node without IPv4 underlay",
  peer: { address: "fd00:b::2", multihop: 2 },
  nodeIpv4: false,
  async fn({ node, peer, cleanup }) {
    await peer.waitEstablished();
    const [, pod4] = await addPod(node, cleanup, "nh-pod4");
    const rib4 = await peer.waitRib("ipv4", (rib) => CIDR4 in rib);
    // gobgpd negotiated the extended next hop: the IPv4 route's next hop is IPv6.
    assert.equal(nextHop(rib4[CIDR4]), "fd00:a::11");
    const rib6 = await peer.waitRib("ipv6", (rib) => CIDR6 in rib);
    assert.equal(nextHop(rib6[CIDR6]), "fd00:a::11");
    // The peer's kernel installs the IPv4 route through an IPv6 gateway, and it carries traffic.
    await installThroughNextHop(peer.ns, CIDR4, nextHop(rib4[CIDR4])!);
    const [route] = await peer.ns.ipJson<{ gateway: string; via?: { family: string } }[]>(
      ["-4", "route", "show", CIDR4],
    );
    assert.equal(route.via?.family, "inet6");
    assert.ok(await reaches(peer.ns, pod4), `peer -> pod ${pod4} over an IPv6 next hop`);
  },
});

/**
 * A node with its global IPv6 only on lo, peering over a direct (single-hop) IPv4 session with
 * a ToR on an IPv4-only link (an L3 fabric's usual node). `nodeIpv6`: whether lo holds one.
 */
async function startDirectLab(
  cleanup: AsyncDisposableStack,
  nodeIpv6: boolean,
): Promise<DirectLab> {
  const tor = await GobgpTor.start({
    asn: PEER_AS,
    routerId: "10.0.0.1",
    addresses: ["10.0.0.1/24"],
    neighbors: [{ address: "10.0.0.11", asn: NODE_AS }],
  });
  cleanup.use(tor);
  // The ToR's own global IPv6 lives on its loopback too: the source of its pings.
  await addAddress(tor.ns, "lo", "fd00:b::1/128");
  const node = await startBgpNode(tor, {
    name: "nh-direct",
    ipv4: "10.0.0.11",
    ipv6: "fd00:a::11",
    spec: nodeSpec({ address: "10.0.0.1" }),
  }, cleanup);
  const ns = node.flock.ns;
  await ns.ip(["-6", "addr", "del", "fd00:a::11/64", "dev", "eth0"]);
  if (nodeIpv6) await addAddress(ns, "lo", "fd00:a::11/128");
  // The node's IPv6 way out is the ToR's link-local, as a fabric's default route would be.
  const torLl = await linkLocal(tor.ns, "br0");
  await ns.ip(["-6", "route", "replace", "default", "via", torLl, "dev", "eth0"]);
  // A fresh agent on these addresses (its address watch would get there too; the restart
  // keeps the cases independent of its poll).
  await node.flock.restartAgent();
  return { node, tor };
}

directLabTest({
  name: "bgp next hop: direct IPv4 session carries IPv6 with the node's global IPv6 on lo " +
    "(IPv4-only uplink)",
  nodeIpv6: true,
  async fn({ node, tor, cleanup }) {
    await tor.waitEstablished();
    const [pod6, pod4] = await addPod(node, cleanup, "nh-direct-pod");
    const rib = await tor.waitRib("ipv6", (rib) => CIDR6 in rib);
    // Before the fix BIRD announced `::` here and gobgpd dropped every IPv6 route.
    assert.equal(nextHop(rib[CIDR6]), "fd00:a::11");
    const rib4 = await tor.waitRib("ipv4", (rib) => CIDR4 in rib);
    assert.equal(nextHop(rib4[CIDR4]), "10.0.0.11");
    // The ToR reaches the node's loopback through the node's link-local, as a fabric that
    // routes node loopbacks does (BIRD appends that link-local to the next hop on some runs,
    // not on others: the ToR cannot count on it).
    const nodeLl = await linkLocal(node.flock.ns, "eth0");
    await tor.ns.ip(["-6", "route", "replace", "fd00:a::11/128", "via", nodeLl, "dev", "br0"]);
    await installThroughNextHop(tor.ns, CIDR6, nextHop(rib[CIDR6])!);
    assert.ok(await reaches(tor.ns, pod6), `ToR -> pod ${pod6} through fd00:a::11`);
    await tor.ns.ip(["route", "replace", CIDR4, "via", "10.0.0.11"]);
    assert.ok(await reaches(tor.ns, pod4), `ToR -> pod ${pod4}`);
    const log = await Deno.readTextFile(node.flock.agentLogPath);
    assert.doesNotMatch(log, /IPv6 routes not announced/);
  },
});

directLabTest({
  name: "bgp next hop: direct IPv4 session on a node without any global IPv6 carries IPv4 only; " +
    "flock status names the peer",
  nodeIpv6: false,
  async fn({ node, tor, cleanup }) {
    await tor.waitEstablished();
    await addPod(node, cleanup, "nh-nov6-pod");
    const rib4 = await tor.waitRib("ipv4", (rib) => CIDR4 in rib);
    assert.equal(nextHop(rib4[CIDR4]), "10.0.0.11");
    // No IPv6 route with `::` as next hop, none at all: the session has no IPv6 channel.
    assert.deepEqual(Object.keys(await tor.rib("ipv6")), []);
    assert.deepEqual((await statusBgp(node)).peersWithoutIpv6, ["10.0.0.1"]);
    assert.match(await flockStatus(node), /^ {2}NO IPv6 ROUTES to 10\.0\.0\.1: /m);
    const log = await Deno.readTextFile(node.flock.agentLogPath);
    assert.match(log, /IPv6 routes not announced/);
  },
});

/** Milliseconds until `check` holds (polled every 20 ms, for at most 15 s). */
async function msUntil(what: string, check: () => Promise<boolean>): Promise<number> {
  const start = performance.now();
  await eventually(what, check, (ok) => ok, 15_000, 20);
  return performance.now() - start;
}

/** The ToR's view of one session: when it came up and how often it went down. */
async function sessionInfo(tor: GobgpTor, address: string) {
  const r = await tor.gobgp(["neighbor", address, "-j"]);
  if (r.code !== 0) throw new Error(`gobgp neighbor ${address}: ${r.stderr}`);
  const n = JSON.parse(r.stdout) as {
    state: {
      session_state: number;
      flops?: number;
      messages?: { received?: { notification?: number }; sent?: { notification?: number } };
    };
    timers?: { state?: { uptime?: { seconds?: number } } };
  };
  return {
    established: n.state.session_state === 6,
    upSince: n.timers?.state?.uptime?.seconds,
    flops: n.state.flops ?? 0,
    notifications: (n.state.messages?.received?.notification ?? 0) +
      (n.state.messages?.sent?.notification ?? 0),
  };
}

/**
 * Every route event of the ToR's RIB while it runs (`gobgp monitor global rib -j`, one family,
 * from its current contents on), for asserting what was never withdrawn.
 */
class RibMonitor implements AsyncDisposable {
  readonly events: (RibPath & { withdrawal?: boolean })[] = [];
  #child: Deno.ChildProcess;
  #reading: Promise<void>;

  constructor(tor: GobgpTor, family: "ipv4" | "ipv6") {
    const child = new Deno.Command(gobgpPath(), {
      args: ["--target", `unix://${tor.socketPath}`, "monitor", "global", "rib"]
        .concat(["-a", family, "--current", "-j"]),
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.#child = child;
    this.#reading = (async () => {
      let rest = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        const lines = (rest + chunk).split("\n");
        rest = lines.pop()!;
        for (const line of lines.filter((l) => l.trim())) this.events.push(...JSON.parse(line));
      }
    })();
  }

  /** Waits until the monitor has printed `prefix` (its current contents: it is live). */
  async live(prefix: string): Promise<void> {
    await eventually(
      `the ToR's RIB monitor shows ${prefix}`,
      () => Promise.resolve(this.events.some((e) => e.nlri.prefix === prefix)),
      (ok) => ok,
      10_000,
      20,
    );
  }

  /** The withdrawals of `prefix` seen so far. */
  withdrawals(prefix: string) {
    return this.events.filter((e) => e.nlri.prefix === prefix && e.withdrawal);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch { /* already gone */ }
    await this.#child.status;
    await this.#reading.catch(() => {});
  }
}

directLabTest({
  name: "bgp next hop: a global IPv6 added to lo after the agent started becomes the next hop " +
    "the ToR gets (and a replacement the new one), and its removal withdraws the IPv6 routes; " +
    "the session never resets and " +
    "the IPv4 routes are never withdrawn (no agent restart)",
  nodeIpv6: false,
  async fn({ node, tor, ns, cleanup }) {
    await tor.waitEstablished();
    await addPod(node, cleanup, "nh-late-pod");
    await tor.waitRib("ipv4", (rib) => CIDR4 in rib);
    assert.deepEqual((await statusBgp(node)).peersWithoutIpv6, ["10.0.0.1"]);
    assert.deepEqual(Object.keys(await tor.rib("ipv6")), []);
    await using monitor4 = new RibMonitor(tor, "ipv4");
    await monitor4.live(CIDR4);
    const before = await sessionInfo(tor, "10.0.0.11");
    assert.ok(before.established);
    const birdSince = await birdSessionSince(node);

    await addAddress(ns, "lo", "fd00:a::11/128");
    const addedMs = await msUntil(
      "the ToR receives the IPv6 pod CIDR",
      async () => nextHop((await tor.rib("ipv6"))[CIDR6]) === "fd00:a::11",
    );
    assert.equal((await statusBgp(node)).peersWithoutIpv6, undefined);
    const log = await Deno.readTextFile(node.flock.agentLogPath);
    assert.match(log, /bird\.conf changed: reloading BIRD/);
    assert.match(log, /IPv6 routes announced to every peer again/);

    // Another address in its place: the ToR gets the new next hop (a `next hop address` in
    // the channel would keep announcing the old one until the session restarts).
    await addAddress(ns, "lo", "fd00:a::12/128");
    await ns.ip(["-6", "addr", "del", "fd00:a::11/128", "dev", "lo"]);
    const movedMs = await msUntil(
      "the ToR gets the IPv6 pod CIDR through the new address",
      async () => nextHop((await tor.rib("ipv6"))[CIDR6]) === "fd00:a::12",
    );

    await ns.ip(["-6", "addr", "del", "fd00:a::12/128", "dev", "lo"]);
    const removedMs = await msUntil(
      "the ToR loses the IPv6 pod CIDR",
      async () => !(CIDR6 in await tor.rib("ipv6")),
    );
    assert.deepEqual((await statusBgp(node)).peersWithoutIpv6, ["10.0.0.1"]);

    // The same session throughout: BIRD applied both changes in place (a filter reload), no
    // NOTIFICATION either way, and the IPv4 summary was never withdrawn.
    const after = await sessionInfo(tor, "10.0.0.11");
    assert.deepEqual(after, before, "the ToR's session to the node was reset");
    assert.equal(await birdSessionSince(node), birdSince, "BIRD restarted the session");
    assert.deepEqual(monitor4.withdrawals(CIDR4), [], "the IPv4 pod CIDR was withdrawn");
    assert.equal(nextHop((await tor.rib("ipv4"))[CIDR4]), "10.0.0.11");
    console.log(
      `address added -> IPv6 route at the ToR: ${addedMs.toFixed(0)} ms; address replaced ` +
        `-> new next hop: ${movedMs.toFixed(0)} ms; address removed -> route withdrawn: ` +
        `${removedMs.toFixed(0)} ms; session kept`,
    );
  },
});

/** When BIRD's session to the ToR (10.0.0.1) last changed state (`show protocols`). */
async function birdSessionSince(node: BgpLabNode): Promise<string> {
  const out = (await node.bird.birdc(["show", "protocols", "peer_10_0_0_1"])).stdout;
  const line = out.split("\n").find((l) => l.startsWith("peer_10_0_0_1"));
  assert.match(line ?? "", /\bup\b.*Established/, out);
  return line!.split(/\s+/).slice(4, 6).join(" ");
}

directLabTest({
  name: "bgp next hop: a direct IPv4 peer on no link with an IPv4 address of the node " +
    "(unnumbered uplink) is named in flock status, and peers once the link gets its address",
  nodeIpv6: true,
  async fn({ node, tor, ns, cleanup }) {
    const withoutLink = async () => (await statusBgp(node)).peersWithoutIpv4Link;
    await tor.waitEstablished();
    assert.equal(await withoutLink(), undefined);
    // Unnumbered: the node's IPv4 moves to lo as a /32, the ToR reached by a link route.
    await ns.ip(["addr", "del", "10.0.0.11/24", "dev", "eth0"]);
    await addAddress(ns, "lo", "10.0.0.11/32");
    await ns.ip(["route", "replace", "10.0.0.1/32", "dev", "eth0"]);
    const namedMs = await msUntil(
      "flock status names the peer",
      async () => JSON.stringify(await withoutLink()) === '["10.0.0.1"]',
    );
    assert.match(await flockStatus(node), /^ {2}NO IPv4 LINK to 10\.0\.0\.1: /m);
    const log = await Deno.readTextFile(node.flock.agentLogPath);
    assert.match(log, /IPv4 peers on no link where the node has an IPv4 address/);
    await addPod(node, cleanup, "nh-unnum-pod");
    // BIRD waits for the neighbour: the ToR has no session, so no route with a bad next hop.
    assert.notEqual((await tor.neighborStates())["10.0.0.11"], "established");
    assert.deepEqual(await tor.prefixes(), []);

    await ns.ip(["addr", "del", "10.0.0.11/32", "dev", "lo"]);
    await addAddress(ns, "eth0", "10.0.0.11/24");
    const upMs = await msUntil(
      "the ToR receives the IPv4 pod CIDR from 10.0.0.11",
      async () => nextHop((await tor.rib("ipv4"))[CIDR4]) === "10.0.0.11",
    );
    assert.equal(await withoutLink(), undefined);
    console.log(
      `link address removed -> named in status: ${namedMs.toFixed(0)} ms; ` +
        `address back -> IPv4 route at the ToR: ${upMs.toFixed(0)} ms`,
    );
  },
});

directLabTest({
  name: "bgp next hop: a direct IPv4 session that came up on a link without a global IPv6 keeps " +
    "announcing IPv6 with a valid next hop when the link gets one later (the link's, in place): " +
    "the session never resets and the IPv4 routes are never withdrawn",
  nodeIpv6: true,
  async fn({ node, tor, ns, cleanup }) {
    await tor.waitEstablished();
    const [pod6] = await addPod(node, cleanup, "nh-slaac-pod");
    await tor.waitRib("ipv6", (rib) => nextHop(rib[CIDR6]) === "fd00:a::11");
    await tor.waitRib("ipv4", (rib) => CIDR4 in rib);
    await using monitor4 = new RibMonitor(tor, "ipv4");
    await monitor4.live(CIDR4);
    const before = await sessionInfo(tor, "10.0.0.11");
    const birdSince = await birdSessionSince(node);

    // The link's prefix arrives late (SLAAC, DHCPv6), with duplicate address detection.
    await addAddress(tor.ns, "br0", "fd00:c::1/64");
    await ns.ip(["addr", "add", "fd00:c::11/64", "dev", "eth0"]);
    // Before the fix the session fell back to BIRD's own next hop, fixed as `::` when it came
    // up: BIRD withdrew every IPv6 route ("Invalid NEXT_HOP attribute - zero address").
    const movedMs = await msUntil(
      "the ToR gets the IPv6 pod CIDR through the link's new global IPv6",
      async () => nextHop((await tor.rib("ipv6"))[CIDR6]) === "fd00:c::11",
    );
    // Still there a while later (nothing withdraws it after the reload).
    await new Promise((r) => setTimeout(r, 1_500));
    assert.equal(nextHop((await tor.rib("ipv6"))[CIDR6]), "fd00:c::11");
    // On the ToR's own segment: the next hop resolves directly (no recursion).
    await tor.ns.ip(["-6", "route", "replace", CIDR6, "via", "fd00:c::11", "dev", "br0"]);
    assert.ok(await reaches(tor.ns, pod6), `ToR -> pod ${pod6} through fd00:c::11`);

    assert.deepEqual(await sessionInfo(tor, "10.0.0.11"), before, "the session was reset");
    assert.equal(await birdSessionSince(node), birdSince, "BIRD restarted the session");
    assert.deepEqual(monitor4.withdrawals(CIDR4), [], "the IPv4 pod CIDR was withdrawn");
    assert.doesNotMatch(await node.bird.log(), /Invalid NEXT_HOP/);
    console.log(`link IPv6 added -> ToR's next hop is the link's: ${movedMs.toFixed(0)} ms`);
  },
});

directLabTest({
  name: "bgp next hop: a direct IPv4 peer at the other end of a point-to-point address " +
    "(`ip addr add A peer B`) is on-link: BIRD peers with it and flock status names no peer",
  nodeIpv6: true,
  async fn({ node, tor, ns, cleanup }) {
    await tor.waitEstablished();
    // The link becomes point-to-point: IFA_LOCAL 10.0.0.11, IFA_ADDRESS 10.0.0.1 (the ToR).
    await ns.ip(["addr", "del", "10.0.0.11/24", "dev", "eth0"]);
    await ns.ip(["addr", "add", "10.0.0.11", "peer", "10.0.0.1/32", "dev", "eth0"]);
    await node.flock.restartAgent();
    await node.bird.birdc(["restart", "peer_10_0_0_1"]);
    await tor.waitEstablished();
    await addPod(node, cleanup, "nh-ptp-pod");
    await tor.waitRib("ipv4", (rib) => nextHop(rib[CIDR4]) === "10.0.0.11");
    // Before the fix the agent named the ToR as on no IPv4 link, although BIRD peers with it.
    assert.equal((await statusBgp(node)).peersWithoutIpv4Link, undefined);
    assert.doesNotMatch(await flockStatus(node), /NO IPv4 LINK/);
    const log = await Deno.readTextFile(node.flock.agentLogPath);
    assert.doesNotMatch(log, /IPv4 peers on no link/);
  },
});

routedLabTest({
  name: "bgp next hop: an IPv4 multihop peer of an IPv6-only node is named in flock status, " +
    "and peers once the node gets an IPv4 address",
  peer: { address: "10.1.0.2", multihop: 2 },
  nodeIpv4: false,
  async fn({ node, peer }) {
    const withoutAddress = async () => (await statusBgp(node)).peersWithoutIpv4Address;
    // Named from the start (before the fix: nowhere), in the log and both status forms.
    assert.deepEqual(await withoutAddress(), ["10.1.0.2"]);
    assert.match(await flockStatus(node), /^ {2}NO IPv4 ADDRESS for 10\.1\.0\.2: /m);
    const log = await Deno.readTextFile(node.flock.agentLogPath);
    assert.match(log, /IPv4 multihop peers, but the node has no IPv4 address/);
    assert.notEqual((await peer.neighborStates())["10.0.0.11"], "established");

    // The node's IPv4 as a /32 on lo: the kernel takes it as the session's source.
    await addAddress(node.flock.ns, "lo", "10.0.0.11/32");
    const clearedMs = await msUntil(
      "flock status names the peer no more",
      async () => (await withoutAddress()) === undefined,
    );
    const upMs = await msUntil(
      "the peer's session to 10.0.0.11 is established",
      async () => (await peer.neighborStates())["10.0.0.11"] === "established",
    );
    console.log(
      `IPv4 address added -> peer no longer named: ${clearedMs.toFixed(0)} ms; ` +
        `-> session established: ${upMs.toFixed(0)} ms`,
    );
  },
});
