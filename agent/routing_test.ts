import assert from "node:assert/strict";
import {
  birdInputFor,
  linkNextHop6ByPeer,
  nextHop6For,
  NodeRouting,
  peersOnLinksWithoutIpv6,
  peersWithoutIpv4Address,
  peersWithoutIpv4Link,
  reloadSummary,
  routerIdFor,
  SUMMARY_ROUTES_DUMP,
} from "./routing.ts";
import { ConfigError, parseNodeConfig } from "./config.ts";
import { ROOT_ONLY, run } from "../tests/helpers/exec.ts";
import { birdPath, hasTool } from "../tests/helpers/tools.ts";
import { TestNamespace } from "../tests/helpers/netns.ts";
import { BirdDaemon, bootstrapBirdConfig } from "../tests/helpers/bird.ts";
import { AF_INET, formatIP, Handle, listAddresses } from "../netlink/mod.ts";
import { renderBirdConfig } from "../bird/config.ts";
import { patch } from "../tests/helpers/patch.ts";
import { DumpInterruptedError } from "../netlink/errors.ts";

const plain = parseNodeConfig({ cidr6: "fd00:1::/64", bgp: { asn: 64512, nodeMesh: true } }, "t");
const configured = parseNodeConfig(
  { cidr6: "fd00:1::/64", bgp: { asn: 64512, routerID: "192.0.2.7" } },
  "t",
);

Deno.test("routerIdFor: bgp.routerID, else the node's first IPv4 address, else a name hash", () => {
  assert.deepEqual(routerIdFor(configured, "node-1", ["10.0.0.11"]), {
    id: "192.0.2.7",
    source: "bgp.routerID",
  });
  // kubelet may list the IPv6 InternalIP first: the first IPv4 one is taken all the same.
  assert.deepEqual(routerIdFor(plain, "node-1", ["fd00:a::11", "10.0.0.11", "10.0.0.99"]), {
    id: "10.0.0.11",
    source: "nodeInternalIP",
  });
  // IPv6-only node (or standalone mode, which has no Node object): FNV-1a-32 of the name, the
  // same value as before cluster mode knew better (pinned: a restart must not change it).
  for (const addresses of [undefined, [], ["fd00:a::11"], ["0.0.0.0", "not an address"]]) {
    assert.deepEqual(routerIdFor(plain, "node-1", addresses), {
      id: "84.196.51.131",
      source: "nodeNameHash",
    });
  }
  assert.equal(routerIdFor(plain, "flk-mesh-1").id, "146.66.89.16");
});

Deno.test("birdInputFor: bird.conf's router id follows the node's addresses", () => {
  const conf = (addresses?: string[]) =>
    renderBirdConfig(birdInputFor(plain, "node-1", [], addresses));
  assert.match(conf(["fd00:a::11", "10.0.0.11"]), /^router id 10\.0\.0\.11;$/m);
  assert.match(conf(), /^router id 84\.196\.51\.131;$/m);
  assert.match(
    renderBirdConfig(birdInputFor(configured, "node-1", [], ["10.0.0.11"])),
    /^router id 192\.0\.2\.7;$/m,
  );
});

Deno.test("nextHop6For: the node's global IPv6, InternalIPs first, never a pod's or a mapped one", () => {
  const node = parseNodeConfig(
    { cidr6: "fd00:1::/64", anycastCIDRs: ["fd00:ffff::/112"], bgp: { asn: 64512 } },
    "t",
  );
  // Cluster mode: the Node's IPv6 InternalIP beats whatever the interfaces have.
  assert.equal(nextHop6For(node, ["10.0.0.11", "FD00:A::11"], ["fd00:b::9"]), "fd00:a::11");
  // Standalone (no InternalIPs): the first usable interface address.
  const local = ["fd00:1::5", "fd00:ffff::1", "fd00:b::9", "fd00:a::11"];
  assert.equal(nextHop6For(node, [], local), "fd00:b::9");
  // Never link-local, IPv4-mapped, loopback or unspecified: a peer cannot route to those.
  assert.equal(nextHop6For(node, ["fe80::1", "::ffff:10.0.0.11", "::1", "::"], []), null);
  // Interfaces not known: undefined, BIRD's own choice stays.
  assert.equal(nextHop6For(node, ["10.0.0.11"]), undefined);
  assert.equal(birdInputFor(node, "n", [], ["10.0.0.11"], new Map(), []).nextHop6, null);
});

Deno.test("birdInputFor: single-hop peers on links without IPv6 are marked, multihop ones not", () => {
  const node = parseNodeConfig({
    cidr6: "fd00:1::/64",
    bgp: {
      asn: 65001,
      nodeMesh: true,
      peers: [
        { address: "10.0.0.1", asn: 65000 },
        { address: "10.9.0.1", asn: 65000, multihop: 2 },
        { address: "10.0.1.1", asn: 65000 },
      ],
    },
  }, "t");
  const mesh = [{ name: "n2", address: "10.0.0.12", asn: 65001, cidrs: ["fd00:2::/64"] }];
  const bare = new Set(["10.0.0.1", "10.9.0.1", "10.0.0.12"]);
  const input = birdInputFor(node, "n", mesh, [], new Map(), ["fd00:a::11"], bare);
  assert.deepEqual(input.peers?.map((p) => [p.address, p.linkWithoutIpv6 ?? false]), [
    ["10.0.0.1", true],
    ["10.9.0.1", false], // multihop: gets the node's global IPv6 anyway
    ["10.0.1.1", false],
  ]);
  assert.equal(input.meshPeers?.[0].linkWithoutIpv6, true);
  const text = renderBirdConfig(input);
  assert.match(text, /neighbor 10\.0\.0\.1 as 65000;\n[^}]*ipv6 \{[^}]*peer_10_0_0_1_export6;/);
  assert.match(text, /filter peer_10_0_0_1_export6 \{\n {2}bgp_next_hop = fd00:a::11;/);
});

Deno.test("birdInputFor: a single-hop IPv4 peer's link IPv6 is its IPv6 next hop, set in its filter", () => {
  const node = parseNodeConfig({
    cidr6: "fd00:1::/64",
    cidr4: "10.244.1.0/24",
    bgp: {
      asn: 65001,
      peers: [
        { address: "10.0.1.1", asn: 65000 },
        { address: "10.9.0.1", asn: 65000, multihop: 2 },
        { address: "10.0.2.1", asn: 65000 },
      ],
    },
  }, "t");
  // 10.9.0.1 is multihop: the node's global IPv6, whatever its first hop's link has.
  const links = new Map([["10.0.1.1", "fd00:c::11"], ["10.9.0.1", "fd00:e::11"]]);
  const input = birdInputFor(node, "n", [], [], new Map(), ["fd00:a::11"], new Set(), links);
  assert.deepEqual(input.peers?.map((p) => [p.address, p.linkNextHop6]), [
    ["10.0.1.1", "fd00:c::11"],
    ["10.9.0.1", undefined],
    ["10.0.2.1", undefined],
  ]);
  const text = renderBirdConfig(input);
  assert.match(text, /filter peer_10_0_1_1_export6 \{\n {2}bgp_next_hop = fd00:c::11;/);
  assert.match(text, /filter peer_10_9_0_1_export6 \{\n {2}bgp_next_hop = fd00:a::11;/);
  // A link whose address is not known: BIRD's own pick, as before.
  assert.match(text, /neighbor 10\.0\.2\.1 as 65000;\n {2}ipv6 \{[^}]*flock_export6;/);
  // Only the IPv6 channel's filter: IPv4 keeps the session address (next hop self).
  assert.match(text, /neighbor 10\.0\.1\.1 as 65000;\n[^}]*\};\n {2}ipv4 \{[^}]*flock_export4;/);
});

Deno.test("birdInputFor: a Secret's password is rendered; a peer without one is left out", () => {
  const node = parseNodeConfig(
    {
      cidr6: "fd00:1::/64",
      bgp: {
        asn: 64512,
        peers: [
          { address: "fd00:a::1", asn: 65000, passwordSecretRef: { name: "bgp", key: "tor-1" } },
          { address: "fd00:a::2", asn: 65000, passwordSecretRef: { name: "bgp", key: "tor-2" } },
          { address: "fd00:a::3", asn: 65000, password: "inline" },
        ],
      },
    },
    "t",
    { secretRefs: true },
  );
  const input = birdInputFor(node, "node-1", [], [], new Map([["bgp/tor-1", "from-secret"]]));
  assert.deepEqual(input.peers, [
    { address: "fd00:a::1", asn: 65000, password: "from-secret" },
    { address: "fd00:a::3", asn: 65000, password: "inline" },
  ]);
  const text = renderBirdConfig(input);
  assert.match(text, /password "from-secret";/);
  assert.doesNotMatch(text, /fd00:a::2/);
  assert.doesNotMatch(text, /password "";/);
});

/**
 * What an operator gets from a NodeConfig: either the parser refuses it with a ConfigError, or
 * the bird.conf rendered from it is one real BIRD accepts. A config that parses but that BIRD
 * refuses leaves the node with no BGP session at all (the whole reload is rejected).
 */
async function refusedOrAcceptedByBird(spec: Record<string, unknown>): Promise<string> {
  let text: string;
  try {
    const node = parseNodeConfig(spec, "t");
    text = renderBirdConfig(birdInputFor(node, "node-1", [], ["10.0.0.11"]));
  } catch (e) {
    if (e instanceof ConfigError) return "refused";
    throw e;
  }
  const dir = await Deno.makeTempDir({ prefix: "flk-birdp-" });
  try {
    await Deno.writeTextFile(`${dir}/bird.conf`, text);
    const r = await run([birdPath(), "-p", "-c", `${dir}/bird.conf`], { timeoutMs: 10_000 });
    assert.equal(r.code, 0, `parsed, but BIRD refuses the rendered config: ${r.stderr}`);
    return "accepted";
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const withPeer = (peer: Record<string, unknown>) => ({
  cidr6: "fd00:1::/64",
  cidr4: "10.244.1.0/24",
  bgp: { asn: 65001, peers: [{ asn: 65000, ...peer }] },
});

const BIRD_P = { ignore: !hasTool(birdPath) && Deno.env.get("CI") !== "true" };

Deno.test({
  name: "NodeConfig: a multihop peer with BFD is refused or rendered so that BIRD accepts it",
  ...BIRD_P,
  fn: async () => {
    assert.equal(
      await refusedOrAcceptedByBird(withPeer({ address: "10.0.0.1", multihop: 1, bfd: false })),
      "accepted",
    );
    assert.equal(
      await refusedOrAcceptedByBird(withPeer({ address: "10.0.0.1", bfd: true })),
      "accepted",
    );
    assert.equal(
      await refusedOrAcceptedByBird(withPeer({ address: "192.0.2.1", multihop: 2, bfd: true })),
      "refused",
    );
  },
});

Deno.test({
  name: "NodeConfig: a link-local or unspecified peer address is refused, not rendered for BIRD",
  ...BIRD_P,
  fn: async () => {
    // BIRD: "Link-local addresses require defined interface", "Neighbor must be configured".
    for (const address of ["fe80::1", "FE80::a:1", "::", "0.0.0.0"]) {
      assert.equal(await refusedOrAcceptedByBird(withPeer({ address })), "refused", address);
    }
    for (const address of ["fd00:a::1", "10.0.0.1", "2001:db8:1::1"]) {
      assert.equal(await refusedOrAcceptedByBird(withPeer({ address })), "accepted", address);
    }
  },
});

Deno.test({
  name: "NodeConfig: a password with a carriage return or NUL is refused, not left to the renderer",
  ...BIRD_P,
  fn: async () => {
    // The renderer refuses "\r" (a line break in bird.conf): every render then failed, so BIRD
    // kept an old config while the status still showed the last reload as fine. BIRD would cut
    // a password at NUL (a C string) and sign with another key than the peer.
    for (const password of ["s3cret\r", "s3\u0000cret"]) {
      const spec = withPeer({ address: "10.0.0.1", password });
      assert.equal(await refusedOrAcceptedByBird(spec), "refused", JSON.stringify(password));
    }
    const spec = withPeer({ address: "10.0.0.1", password: "s3cr\u00e9t 'with' $pace{}" });
    assert.equal(await refusedOrAcceptedByBird(spec), "accepted");
  },
});

Deno.test("NodeConfig: bgp.routerID 0.0.0.0 is refused (BIRD reads it as 'not set')", () => {
  // BIRD keeps its previous id (or picks one from the interfaces) for `router id 0.0.0.0;`, so
  // the id flock publishes and compares across nodes would not be the one BIRD uses.
  assert.throws(
    () => parseNodeConfig({ cidr6: "fd00:1::/64", bgp: { asn: 65001, routerID: "0.0.0.0" } }, "t"),
    (e) => e instanceof ConfigError && /routerID/.test(e.message),
  );
  assert.equal(
    routerIdFor(
      parseNodeConfig({ cidr6: "fd00:1::/64", bgp: { asn: 65001, routerID: "0.0.0.1" } }, "t"),
      "n",
    ).id,
    "0.0.0.1",
  );
});

Deno.test("NodeConfig: a password longer than TCP MD5's 80 bytes is refused", () => {
  // Linux keeps at most 80 bytes of key (TCP_MD5SIG_MAXKEYLEN): BIRD takes the config, then
  // shuts the session down for good with "Error: Kernel MD5 auth failed".
  const spec = (password: string) => withPeer({ address: "10.0.0.1", password });
  assert.throws(
    () => parseNodeConfig(spec("a".repeat(81)), "t"),
    (e) => e instanceof ConfigError && /password/.test(e.message) && /80 bytes/.test(e.message),
  );
  assert.throws(() => parseNodeConfig(spec("\u00e9".repeat(41)), "t"), ConfigError);
  assert.equal(
    parseNodeConfig(spec("a".repeat(80)), "t").spec.bgp?.peers?.[0].password?.length,
    80,
  );
});

Deno.test({
  name:
    "NodeRouting: a BIRD reload that timed out is reported failed, then ok when the retry lands",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-rtslow");
    await using bird = await BirdDaemon.start(ns, { config: bootstrapBirdConfig("10.9.9.9") });
    const handle = Handle.forNetns(ns.path);
    // What the agent records for `flock status` and the reload metric.
    const reported: ReturnType<typeof reloadSummary>[] = [];
    const routing = new NodeRouting({
      handle,
      nodeName: "node-1",
      bird: {
        ...bird.controlOptions(),
        coalesceMs: 10,
        commandTimeoutMs: 500,
        retryMs: 200,
      },
      log: () => {},
      onBirdReload: (s) => reported.push(reloadSummary(s)),
    });
    try {
      assert.equal((await routing.configure(routingConfig()))?.result, "ok");
      assert.equal(reported.at(-1)?.ok, true);

      bird.signal("SIGSTOP");
      try {
        const withTor = routingConfig({ peers: [{ address: "fd00:9::1", asn: 65000 }] });
        const s = await routing.configure(withTor);
        assert.equal(s?.result, "failed");
        assert.equal(reported.at(-1)?.ok, false);
        assert.match(reported.at(-1)?.message ?? "", /^failed: BIRD did not answer .* retrying/);
      } finally {
        bird.signal("SIGCONT");
      }

      // No further change: the retry alone brings BIRD to the new config, and says so.
      await until(() => reported.at(-1)?.ok === true, 15_000);
      assert.equal(reported.at(-1)?.ok, true, JSON.stringify(reported.at(-1)));
      assert.equal(routing.birdStatus()?.result, "ok");
      assert.match((await bird.birdc(["show", "protocols"])).stdout, /^peer_\S+\s+BGP/m);
    } finally {
      await routing.close();
      handle.close();
    }
  },
});

Deno.test({
  name: "peersOnLinksWithoutIpv6: the IPv4 peers whose connected link has no global IPv6",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-rtbare");
    await ns.ip(["link", "add", "bare0", "type", "veth", "peer", "name", "bare1"]);
    await ns.ip(["link", "add", "dual0", "type", "veth", "peer", "name", "dual1"]);
    for (const dev of ["lo", "bare0", "bare1", "dual0", "dual1"]) {
      await ns.ip(["link", "set", dev, "up"]);
    }
    // The node's global IPv6 on lo; an IPv4-only link (link-local only) and a dual-stack one.
    await ns.ip(["addr", "add", "fd00:a::11/128", "dev", "lo"]);
    await ns.ip(["addr", "add", "10.0.0.11/24", "dev", "bare0"]);
    await ns.ip(["addr", "add", "10.0.1.11/24", "dev", "dual0"]);
    await ns.ip(["addr", "add", "fd00:c::11/64", "dev", "dual0", "nodad"]);
    const handle = Handle.forNetns(ns.path);
    try {
      const peers = ["10.0.0.1", "10.0.1.1", "10.5.0.1", "fd00:c::1"];
      // 10.5.0.1 is on no connected subnet; an IPv6 peer's link does not matter.
      assert.deepEqual([...peersOnLinksWithoutIpv6(handle, peers)], ["10.0.0.1"]);
      const node = parseNodeConfig({ cidr6: "fd00:1::/64" }, "t");
      assert.deepEqual([...linkNextHop6ByPeer(handle, node, peers)], [["10.0.1.1", "fd00:c::11"]]);
      // A deprecated address (listed first, being newer) is not picked while a stable one exists.
      await ns.ip(["addr", "add", "fd00:c::99/64", "dev", "dual0", "nodad", "preferred_lft", "0"]);
      assert.deepEqual([...linkNextHop6ByPeer(handle, node, peers)], [["10.0.1.1", "fd00:c::11"]]);
      // The link gets its global IPv6 late (SLAAC): still in duplicate address detection, it
      // is not one yet; settled, it is that peer's next hop.
      await ns.ip(["addr", "add", "fd00:d::11/64", "dev", "bare0"]);
      const tentative = await ns.ip(["-6", "addr", "show", "dev", "bare0", "tentative"]);
      if (tentative.includes("fd00:d::11")) {
        assert.equal(linkNextHop6ByPeer(handle, node, peers).get("10.0.0.1"), undefined);
      }
      for (let i = 0; i < 100; i++) {
        if (!(await ns.ip(["-6", "addr", "show", "dev", "bare0", "tentative"])).trim()) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual([...peersOnLinksWithoutIpv6(handle, peers)], []);
      assert.deepEqual(
        [...linkNextHop6ByPeer(handle, node, peers)].sort(),
        [["10.0.0.1", "fd00:d::11"], ["10.0.1.1", "fd00:c::11"]],
      );
    } finally {
      handle.close();
    }
  },
});

Deno.test({
  name: "peersWithoutIpv4Link: the IPv4 peers no IPv4 subnet of the node holds (unnumbered links)",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-rtunnum");
    await ns.ip(["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    for (const dev of ["lo", "up0", "up1"]) await ns.ip(["link", "set", dev, "up"]);
    // Unnumbered: the node's IPv4 is a /32 on lo, the ToR reached by a link route.
    await ns.ip(["addr", "add", "10.0.0.11/32", "dev", "lo"]);
    await ns.ip(["route", "add", "10.0.0.1/32", "dev", "up0"]);
    await ns.ip(["addr", "add", "10.0.1.11/24", "dev", "up0"]);
    const handle = Handle.forNetns(ns.path);
    try {
      const peers = ["10.0.1.1", "10.0.0.1", "fd00:c::1"];
      // 10.0.1.1 is on up0's subnet; an IPv6 peer is not this check's business.
      assert.deepEqual(peersWithoutIpv4Link(handle, peers), ["10.0.0.1"]);
      await ns.ip(["addr", "add", "10.0.0.11/24", "dev", "up0"]);
      assert.deepEqual(peersWithoutIpv4Link(handle, peers), []);
    } finally {
      handle.close();
    }
  },
});

/**
 * The NodeConfig of a NodeRouting test: cidr6 fd00:1::/64, AS 64512 and the router id of
 * BIRD's bootstrap config, with `bgp` fields added or overridden.
 */
function routingConfig(bgp: Record<string, unknown> = {}) {
  return parseNodeConfig(
    { cidr6: "fd00:1::/64", bgp: { asn: 64512, routerID: "10.9.9.9", ...bgp } },
    "t",
  );
}

/** An IPv4 multihop peer: its IPv6 next hop is the node's global IPv6, if it has one. */
const MULTIHOP_IPV4_PEER = { address: "10.1.0.2", asn: 65000, multihop: 2 };

/**
 * Polls `check` every 20 ms until it holds or `ms` have passed; the caller asserts what it
 * waited for (so a timeout fails with that assertion's message).
 */
async function until(check: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

/**
 * A namespace running BIRD, and a NodeRouting driving it (reloads coalesced over 10 ms, the
 * address notifications read every 50 ms) whose log lines are kept; `prepare` runs before the
 * NodeRouting is made. Disposing closes the NodeRouting, then BIRD and the namespace.
 */
async function routingLab(name: string, prepare?: (ns: TestNamespace) => Promise<void>) {
  await using stack = new AsyncDisposableStack();
  const ns = stack.use(await TestNamespace.create(name));
  const bird = stack.use(await BirdDaemon.start(ns, { config: bootstrapBirdConfig("10.9.9.9") }));
  await prepare?.(ns);
  const handle = Handle.forNetns(ns.path);
  stack.defer(() => handle.close());
  const logged: Record<string, unknown>[] = [];
  const routing = new NodeRouting({
    handle,
    nodeName: "node-1",
    bird: { ...bird.controlOptions(), coalesceMs: 10, addressPollMs: 50 },
    log: (f) => logged.push(f),
  });
  stack.defer(() => routing.close());
  const owned = stack.move();
  return { ns, bird, handle, routing, logged, [Symbol.asyncDispose]: () => owned.disposeAsync() };
}

Deno.test({
  name: "NodeRouting: an address change re-renders bird.conf; BIRD reloads only when the text " +
    "changed",
  ...ROOT_ONLY,
  async fn() {
    await using lab = await routingLab("flk-rtaddr", async (ns) => {
      // An IPv4 source for the multihop peer from the start: only the IPv6 next hop changes here.
      await ns.ip(["addr", "add", "10.0.0.11/32", "dev", "lo"]);
    });
    const { ns, bird, routing, logged } = lab;
    const reloads = () => routing.birdStatus()?.reloads ?? 0;
    await routing.configure(routingConfig({ peers: [MULTIHOP_IPV4_PEER] }));
    assert.deepEqual(routing.peersWithoutIpv6, ["10.1.0.2"]);
    const before = reloads();

    await ns.ip(["addr", "add", "fd00:a::11/128", "dev", "lo"]);
    await until(() => reloads() > before);
    assert.ok(reloads() > before, "no reload with the new next hop within 5 s");
    await routing.control!.settled();
    assert.deepEqual(routing.peersWithoutIpv6, []);
    assert.match(await Deno.readTextFile(bird.configPath), /bgp_next_hop = fd00:a::11;/);

    // An address that changes no next hop: rendered again, the same text, no reload.
    const after = reloads();
    const renders = logged.length;
    await ns.ip(["addr", "add", "10.7.0.1/24", "dev", "lo"]);
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(reloads(), after);
    assert.equal(logged.length, renders, JSON.stringify(logged.slice(renders)));
  },
});

Deno.test({
  name: "NodeRouting: a config BIRD did not take is handed over again at the next address " +
    "change, even when that change renders the same text",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-rtfail");
    await using bird = await BirdDaemon.start(ns, { config: bootstrapBirdConfig("10.9.9.9") });
    const handle = Handle.forNetns(ns.path);
    // The config's directory is missing at first: the reload fails (not written), and the
    // control's own retry is far off, so only the address path can hand the text over again.
    const dir = await Deno.makeTempDir({ prefix: "flk-rtfail-" });
    const routing = new NodeRouting({
      handle,
      nodeName: "node-1",
      bird: {
        ...bird.controlOptions(),
        configPath: `${dir}/later/bird.conf`,
        coalesceMs: 10,
        addressPollMs: 50,
        retryMs: 600_000,
      },
      log: () => {},
    });
    try {
      const first = await routing.configure(
        routingConfig({ peers: [{ address: "fd00:b::2", asn: 65000 }] }),
      );
      assert.equal(first?.result, "failed");
      await Deno.mkdir(`${dir}/later`);
      // An IPv4 address on lo: a global address change that changes no next hop (same text).
      await ns.ip(["addr", "add", "10.7.0.1/24", "dev", "lo"]);
      await until(() => routing.birdStatus()?.result === "ok");
      assert.equal(routing.birdStatus()?.result, "ok", routing.birdStatus()?.error);
      assert.match((await bird.birdc(["show", "protocols"])).stdout, /peer_fd00_b__2/);
    } finally {
      await routing.close();
      handle.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "peersWithoutIpv4Link: the other end of a point-to-point address is on its link",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-rtptp");
    await ns.ip(["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    for (const dev of ["lo", "up0", "up1"]) await ns.ip(["link", "set", dev, "up"]);
    // IFA_LOCAL 10.0.0.11 (the node's), IFA_ADDRESS 10.0.0.1 (the peer's): BIRD peers with it.
    await ns.ip(["addr", "add", "10.0.0.11", "peer", "10.0.0.1/32", "dev", "up0"]);
    const handle = Handle.forNetns(ns.path);
    try {
      const [ptp] = listAddresses(handle, { family: AF_INET }).filter((a) => a.peer);
      assert.equal(formatIP(ptp.prefix.ip), "10.0.0.11");
      assert.equal(formatIP(ptp.peer!), "10.0.0.1");
      // Only the other end: a /32 point-to-point address holds no subnet.
      assert.deepEqual(peersWithoutIpv4Link(handle, ["10.0.0.1", "10.0.0.2"]), ["10.0.0.2"]);
      // An ordinary address has no peer.
      await ns.ip(["addr", "add", "10.0.1.11/24", "dev", "up1"]);
      const plainAddress = listAddresses(handle, { family: AF_INET })
        .find((a) => formatIP(a.prefix.ip) === "10.0.1.11");
      assert.equal(plainAddress?.peer, undefined);
    } finally {
      handle.close();
    }
  },
});

Deno.test({
  name: "peersWithoutIpv4Address: IPv4 multihop peers of a node with no usable IPv4 address",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-rtnov4");
    await ns.ip(["link", "set", "lo", "up"]);
    await ns.ip(["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    await ns.ip(["link", "set", "d0", "up"]);
    await ns.ip(["addr", "add", "fd00:a::11/64", "dev", "d0"]);
    // Neither a link-local address (the pods' gateway range) nor 127.0.0.1 is a source.
    await ns.ip(["addr", "add", "169.254.1.1/32", "dev", "d0"]);
    const handle = Handle.forNetns(ns.path);
    try {
      const peers = ["10.1.0.2", "fd00:b::2", "10.0.2.2"];
      assert.deepEqual(peersWithoutIpv4Address(handle, peers), ["10.0.2.2", "10.1.0.2"]);
      assert.deepEqual(peersWithoutIpv4Address(handle, ["fd00:b::2"]), []);
      // A /32 on lo is enough: the kernel takes it as the session's source.
      await ns.ip(["addr", "add", "10.0.0.11/32", "dev", "lo"]);
      assert.deepEqual(peersWithoutIpv4Address(handle, peers), []);
    } finally {
      handle.close();
    }
  },
});

Deno.test({
  name: "NodeRouting: an IPv4 multihop peer of an IPv6-only node is named until the node gets " +
    "an IPv4 address",
  ...ROOT_ONLY,
  async fn() {
    await using lab = await routingLab("flk-rtv6only", async (ns) => {
      await ns.ip(["addr", "add", "fd00:a::11/128", "dev", "lo"]);
    });
    const { ns, routing, logged } = lab;
    const ipv6Peer = { address: "fd00:b::2", asn: 65000, multihop: 2 };
    await routing.configure(routingConfig({ peers: [MULTIHOP_IPV4_PEER, ipv6Peer] }));
    assert.deepEqual(routing.peersWithoutIpv4Address, ["10.1.0.2"]);
    const warning = logged.find((f) => /node has no IPv4 address/.test(String(f.msg)));
    assert.deepEqual(warning?.peers, ["10.1.0.2"]);
    // A multihop peer is not the single-hop check's business.
    assert.deepEqual(routing.peersWithoutIpv4Link, []);

    await ns.ip(["addr", "add", "10.0.0.11/32", "dev", "lo"]);
    await until(() => routing.peersWithoutIpv4Address.length === 0);
    assert.deepEqual(routing.peersWithoutIpv4Address, []);
    assert.ok(logged.some((f) =>
      /IPv4 address for its IPv4 multihop peers again/.test(
        String(f.msg),
      )
    ));
  },
});

Deno.test({
  name: "NodeRouting: a config BIRD rejected is not handed over again until its text changes, " +
    "and each distinct error is logged once",
  ...ROOT_ONLY,
  async fn() {
    await using lab = await routingLab("flk-rtrej", async (ns) => {
      // An IPv4 source for the multihop peer: that warning is not this test's business.
      await ns.ip(["addr", "add", "10.0.0.11/32", "dev", "lo"]);
    });
    const { ns, routing, logged } = lab;
    // A mesh peer at a link-local address: BIRD refuses it ("Link-local addresses require
    // defined interface"), a config error no retry can fix.
    const meshPeer = { name: "node-2", address: "fe80::5", asn: 64512, cidrs: ["fd00:2::/64"] };
    const rejections = () =>
      logged.filter((f) => /bird rejected the new config/.test(String(f.msg))).length;
    await routing.configure(routingConfig({ nodeMesh: true, peers: [MULTIHOP_IPV4_PEER] }));
    const first = await routing.setMeshPeers([meshPeer]);
    assert.equal(first?.result, "rejected");
    assert.match(first?.error ?? "", /Link-local/);
    assert.equal(rejections(), 1);
    const attempt = routing.birdStatus()?.lastAttempt;

    // Global address changes that render the same text: nothing handed over, nothing logged.
    const changes = 10;
    const before = logged.length;
    for (let i = 1; i <= changes; i++) {
      await ns.ip(["addr", "add", `10.7.0.${i}/24`, "dev", "lo"]);
      await new Promise((r) => setTimeout(r, 300));
    }
    const lines = logged.length - before;
    console.log(`log lines per ${changes} address changes with a rejected config: ${lines}`);
    assert.equal(lines, 0, JSON.stringify(logged.slice(before)));
    assert.equal(routing.birdStatus()?.lastAttempt, attempt, "the rejected text was re-sent");
    // The same text from another path: not re-sent either; the rejection is what it gets.
    const again = await routing.setMeshPeers([meshPeer]);
    assert.equal(again?.result, "rejected");
    assert.equal(routing.birdStatus()?.lastAttempt, attempt);

    // A changed text (the multihop peer's IPv6 next hop) with the same fault: handed over,
    // rejected, and the same error not logged again.
    const changed = await routing.setNodeAddresses(["fd00:a::11"]);
    assert.equal(changed?.result, "rejected");
    const moved = await routing.setNodeAddresses(["fd00:a::12"]);
    assert.equal(moved?.result, "rejected");
    assert.notEqual(routing.birdStatus()?.lastAttempt, attempt);
    assert.equal(rejections(), 2, "fd00:a::11's text moved the error a few lines down");

    // Fixed: taken, and a later rejection is logged again.
    assert.equal((await routing.setMeshPeers([]))?.result, "ok");
    assert.equal((await routing.setMeshPeers([meshPeer]))?.result, "rejected");
    assert.equal(rejections(), 3);
  },
});

Deno.test({
  name: "NodeRouting: after a first applyConfig that failed, no render hands BIRD that config " +
    "(a Secret or node address change before the next try)",
  ...ROOT_ONLY,
  async fn() {
    await using lab = await routingLab("flk-rtfirst");
    const { bird, routing } = lab;
    const bootstrap = await Deno.readTextFile(bird.configPath);
    const failed = routingConfig({ peers: [{ address: "fd00:b::2", asn: 65000 }] });
    {
      // The kernel refuses the route dump (not a busy one: thrown at once, no retry pauses).
      using _refused = patch(
        Handle.prototype,
        "dump",
        (real) =>
          function (this: Handle, msg, operation) {
            if (operation === SUMMARY_ROUTES_DUMP) {
              throw new Error("injected: route dump refused");
            }
            return real.call(this, msg, operation);
          },
      );
      await assert.rejects(routing.applyConfig(failed), /injected: route dump refused/);
    }
    // Cluster mode's Secret and Node watches render bird.conf whenever they change.
    assert.equal(await routing.setSecretPasswords(new Map([["ns/s/k", "pw"]])), undefined);
    assert.equal(await routing.setNodeAddresses(["10.0.0.11"]), undefined);
    assert.equal(await routing.setMeshPeers([]), undefined);
    assert.equal(routing.birdStatus()?.result, "never", "BIRD was handed the failed config");
    assert.equal(routing.routerId(), undefined, "no config in force");
    assert.equal(await Deno.readTextFile(bird.configPath), bootstrap);
    assert.doesNotMatch((await bird.birdc(["show", "protocols"])).stdout, /peer_fd00_b__2/);

    // The next try that works is what BIRD gets.
    assert.equal((await routing.configure(failed))?.result, "ok");
    assert.match((await bird.birdc(["show", "protocols"])).stdout, /peer_fd00_b__2/);
  },
});

/**
 * Has the node's address dumps fail as a busy kernel's do while `failing()` holds; counts them.
 * Disposing restores the real dump.
 */
function busyAddressDumps(failing: () => boolean): Disposable & { dumps: () => number } {
  let dumps = 0;
  const patched = patch(
    Handle.prototype,
    "dump",
    (real) =>
      function (this: Handle, msg, operation) {
        if (operation === "list addresses") {
          dumps++;
          if (failing()) throw new DumpInterruptedError(operation, "RTM_GETADDR", 6);
        }
        return real.call(this, msg, operation);
      },
  );
  return { dumps: () => dumps, [Symbol.dispose]: () => patched[Symbol.dispose]() };
}

Deno.test({
  name: "NodeRouting: a bird.conf render a busy kernel failed is retried with backoff until " +
    "BIRD has the config, with no further event",
  ...ROOT_ONLY,
  async fn() {
    await using lab = await routingLab("flk-rtrerender");
    const { bird, routing, logged } = lab;
    assert.equal((await routing.configure(routingConfig()))?.result, "ok");
    let failures = 3;
    using busy = busyAddressDumps(() => failures-- > 0);
    // Standalone mode: a SIGHUP's new peer, and no address change to render bird.conf again.
    const withPeer = routingConfig({ peers: [{ address: "fd00:b::2", asn: 65000 }] });
    await assert.rejects(routing.configure(withPeer), DumpInterruptedError);
    const started = Date.now();
    await until(() => /peer_fd00_b__2/.test(Deno.readTextFileSync(bird.configPath)), 10_000);
    await routing.control!.settled();
    const took = Date.now() - started;
    assert.match((await bird.birdc(["show", "protocols"])).stdout, /peer_fd00_b__2/);
    assert.ok(busy.dumps() > 3, "the three failed renders, then one that worked");
    // 200 + 400 + 800 ms of backoff (RENDER_RETRY_MIN_MS doubled).
    console.log(`render retried into BIRD after ${took} ms (3 busy dumps)`);
    assert.ok(took >= 1_300, `retried too soon: ${took} ms`);
    const lines = logged.filter((f) => /rendering bird\.conf/.test(String(f.msg)));
    assert.deepEqual(lines.map((f) => [f.msg, f.failures]), [
      ["rendering bird.conf failed; retrying with backoff, logged again once it recovers", 1],
      ["rendering bird.conf recovered", 3],
    ]);
    assert.equal(lines[0].retryInMs, 200);
  },
});

Deno.test({
  name: "NodeRouting: the retry of a failed render is cancelled by a newer render and by close",
  ...ROOT_ONLY,
  async fn() {
    await using lab = await routingLab("flk-rtrecancel");
    const { routing } = lab;
    assert.equal((await routing.configure(routingConfig()))?.result, "ok");
    let failing = true;
    using busy = busyAddressDumps(() => failing);
    await assert.rejects(routing.setNodeAddresses(["10.0.0.11"]), DumpInterruptedError);
    // A newer render that works: the retry pending for the failed one does not run.
    failing = false;
    await routing.setMeshPeers([]);
    const afterNewer = busy.dumps();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(busy.dumps(), afterNewer, "the cancelled retry rendered again");

    // A render failing for good, then close: no retry runs after it.
    failing = true;
    await assert.rejects(routing.setNodeAddresses(["10.0.0.12"]), DumpInterruptedError);
    await routing.close();
    const atClose = busy.dumps();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(busy.dumps(), atClose, "a render retried after close");
  },
});
