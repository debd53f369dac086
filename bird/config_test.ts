/**
 * Golden tests of the bird.conf renderer: each case renders to `testdata/<name>.conf`
 * (regenerate with `UPDATE_GOLDEN=1`), the same input in another order renders the same bytes,
 * and real `bird -p` accepts every golden file.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  BirdConfigError,
  type BirdConfigInput,
  peersWithoutIpv6,
  renderBirdConfig,
} from "./config.ts";
import { run } from "../tests/helpers/exec.ts";
import { birdPath, hasTool } from "../tests/helpers/tools.ts";

const TESTDATA = fileURLToPath(new URL("./testdata/", import.meta.url));

const DUAL: BirdConfigInput = {
  routerId: "10.0.0.11",
  cidrs: ["fd00:1::/64", "10.244.1.0/24"],
  anycastCIDRs: ["fd00:ffff::/112", "10.255.255.0/24"],
  routeProtocol: 201,
  asn: 65001,
  peers: [{ address: "10.0.0.1", asn: 65000 }],
  gracefulRestart: { enabled: true, restartTime: 120 },
};

/** The golden cases: name → input. */
const CASES: Record<string, BirdConfigInput> = {
  // No AS: BIRD only learns the summaries (nothing to announce them to yet).
  "kernel-only": {
    routerId: "10.0.0.11",
    cidrs: ["fd00:1::/64", "10.244.1.0/24"],
    anycastCIDRs: [],
    routeProtocol: 201,
  },
  "dual-stack-tor": DUAL,
  // IPv6-only node: no IPv4 anywhere, session over IPv6, router id from the agent.
  "ipv6-only": {
    routerId: "172.31.7.9",
    cidrs: ["fd00:3::/64"],
    anycastCIDRs: ["fd00:ffff::/112"],
    routeProtocol: 201,
    asn: 65003,
    peers: [{ address: "fd00:a::1", asn: 65000 }],
  },
  // Two ToRs with passwords and BFD, graceful restart off, a default route accepted.
  "two-tors-bfd-password": {
    ...DUAL,
    peers: [
      { address: "10.0.0.2", asn: 65000, password: "s3cret", bfd: true },
      { address: "10.0.0.1", asn: 65000, password: "s3cret", bfd: true },
    ],
    gracefulRestart: { enabled: false, restartTime: 120 },
    acceptDefault: true,
  },
  // iBGP node mesh plus a multihop route reflector-ish peer.
  "mesh-and-multihop": {
    ...DUAL,
    peers: [{ address: "192.168.50.1", asn: 65001, multihop: 4 }],
    meshPeers: [
      {
        address: "10.0.0.13",
        asn: 65001,
        cidrs: ["fd00:3::/64", "10.244.3.0/24"],
        anycastCIDRs: ["fd00:eeee::/112"],
        description: "node-3",
      },
      {
        address: "10.0.0.12",
        asn: 65001,
        cidrs: ["fd00:2::/64", "10.244.2.0/24"],
        description: "node-2",
      },
    ],
    nextHop6: "fd00:a::11",
  },
  // IPv4 multihop sessions on a node with no global IPv6 address: they announce IPv4 only (the
  // peer would get `::` as next hop; the IPv6 channel stays, its filter rejects); the direct
  // IPv4 session and the IPv6 session keep both.
  "multihop-without-ipv6-next-hop": {
    ...DUAL,
    peers: [
      { address: "192.168.50.1", asn: 65000, multihop: 2 },
      { address: "10.0.0.1", asn: 65000 },
      { address: "fd00:b::2", asn: 65000, multihop: 2 },
    ],
    nextHop6: null,
  },
  // An IPv6-only node with an IPv4 multihop peer and no global IPv6: that session announces
  // nothing (its IPv6 filter rejects) until the node gets one; the IPv6 peer carries IPv6.
  "ipv6-only-multihop-v4-peer-silent": {
    routerId: "172.31.7.9",
    cidrs: ["fd00:3::/64"],
    anycastCIDRs: [],
    routeProtocol: 201,
    asn: 65003,
    peers: [
      { address: "192.168.50.1", asn: 65000, multihop: 2 },
      { address: "fd00:b::2", asn: 65000, multihop: 2 },
    ],
    nextHop6: null,
  },
};

const update = Deno.env.get("UPDATE_GOLDEN") === "1";

for (const [name, input] of Object.entries(CASES)) {
  Deno.test(`bird config golden: ${name}`, async () => {
    const text = renderBirdConfig(input);
    const path = `${TESTDATA}${name}.conf`;
    if (update) await Deno.writeTextFile(path, text);
    assert.equal(text, await Deno.readTextFile(path), `${name}: rendered text differs from golden`);
  });
}

Deno.test("bird config: stable for the same input in another order", () => {
  const input = CASES["mesh-and-multihop"];
  const shuffled: BirdConfigInput = {
    ...input,
    cidrs: [...input.cidrs].reverse(),
    anycastCIDRs: [...input.anycastCIDRs].reverse(),
    meshPeers: [...input.meshPeers!].reverse(),
  };
  assert.equal(renderBirdConfig(shuffled), renderBirdConfig(input));
});

/** The `protocol bgp NAME … }` block of a rendered config. */
function sessionBlock(text: string, name: string): string {
  const m = new RegExp(`protocol bgp ${name} from flock_bgp \\{\\n[\\s\\S]*?\\n\\}`).exec(text);
  assert.ok(m, `no session ${name} in:\n${text}`);
  return m[0];
}

/** The `filter NAME_export6 { … }` a session's IPv6 channel names. */
function exportFilterOf(text: string, session: string): string {
  const m = new RegExp(`filter ${session}_export6 \\{\\n[\\s\\S]*?\\n\\}`).exec(text);
  assert.ok(m, `no export filter of ${session} in:\n${text}`);
  return m[0];
}

Deno.test("bird config: each mixed-family session gets a next hop of the route's family", () => {
  const text = renderBirdConfig({
    ...DUAL,
    peers: [
      { address: "192.168.50.1", asn: 65000, multihop: 2 },
      { address: "10.0.0.1", asn: 65000 },
      { address: "fd00:b::2", asn: 65000, multihop: 2 },
    ],
    nextHop6: "FD00:A::11",
  });
  // IPv4 multihop: IPv6 routes carry the node's global IPv6 address, set by the session's
  // own export filter (no `next hop self` there: it would override the filter's).
  const multihop4 = sessionBlock(text, "peer_192_168_50_1");
  assert.match(multihop4, /ipv6 \{[^}]*export filter peer_192_168_50_1_export6;/);
  assert.doesNotMatch(multihop4, /ipv6 \{[^}]*next hop (self|address)/);
  assert.match(multihop4, /ipv4 \{[^}]*export filter flock_export4;[^}]*next hop self;/);
  assert.match(exportFilterOf(text, "peer_192_168_50_1"), /bgp_next_hop = fd00:a::11;/);
  // Direct IPv4: BIRD's interface address plus link-local, as before.
  assert.match(sessionBlock(text, "peer_10_0_0_1"), /ipv6 \{[^}]*export filter flock_export6;/);
  assert.doesNotMatch(text, /next hop address/);
  // IPv6 session: IPv4 routes with an IPv6 next hop (RFC 8950).
  const multihop6 = sessionBlock(text, "peer_fd00_b__2");
  assert.match(multihop6, /ipv4 \{[^}]*extended next hop on;/);
  assert.doesNotMatch(multihop6, /next hop address/);
});

Deno.test("bird config: peersWithoutIpv6 names the IPv4 multihop peers left without IPv6", () => {
  const peers = [
    { address: "192.168.50.1", asn: 65000, multihop: 2 },
    { address: "10.0.0.1", asn: 65000 },
    { address: "fd00:b::2", asn: 65000, multihop: 2 },
  ];
  assert.deepEqual(peersWithoutIpv6({ ...DUAL, peers, nextHop6: null }), ["192.168.50.1"]);
  assert.deepEqual(peersWithoutIpv6({ ...DUAL, peers, nextHop6: "fd00:a::11" }), []);
  assert.deepEqual(peersWithoutIpv6({ ...DUAL, peers }), []);
  // An IPv4-only node routes no IPv6: nothing is withheld.
  assert.deepEqual(
    peersWithoutIpv6({
      ...DUAL,
      cidrs: ["10.244.1.0/24"],
      anycastCIDRs: [],
      peers,
      nextHop6: null,
    }),
    [],
  );
  // The channel stays (adding or removing one restarts the session); its filter rejects all.
  const withheld = renderBirdConfig({ ...DUAL, peers, nextHop6: null });
  assert.match(sessionBlock(withheld, "peer_192_168_50_1"), /ipv6 \{/);
  assert.match(exportFilterOf(withheld, "peer_192_168_50_1"), /\{\n {2}reject;\n\}/);
  assert.match(sessionBlock(withheld, "peer_10_0_0_1"), /export filter flock_export6;/);
});

Deno.test("bird config: a direct IPv4 peer on a link without IPv6 gets the node's global IPv6", () => {
  const peers = [
    { address: "10.0.0.1", asn: 65000, linkWithoutIpv6: true },
    { address: "10.0.1.1", asn: 65000 },
    { address: "10.0.2.1", asn: 65001, linkWithoutIpv6: true, multihop: 2 },
  ];
  const text = renderBirdConfig({ ...DUAL, peers, nextHop6: "fd00:a::11" });
  // BIRD would announce `::` there (the link has no global IPv6 of its own).
  const bare = sessionBlock(text, "peer_10_0_0_1");
  assert.match(bare, /ipv6 \{[^}]*export filter peer_10_0_0_1_export6;/);
  assert.match(exportFilterOf(text, "peer_10_0_0_1"), /bgp_next_hop = fd00:a::11;/);
  assert.doesNotMatch(bare, /multihop/);
  // A direct peer on a link with its own global IPv6 is rendered as before.
  assert.match(sessionBlock(text, "peer_10_0_1_1"), /ipv6 \{[^}]*export filter flock_export6;/);
  assert.match(exportFilterOf(text, "peer_10_0_2_1"), /bgp_next_hop = fd00:a::11;/);
  // No global IPv6 at all: such a peer gets no IPv6 routes and is named, the other is not.
  const none = renderBirdConfig({ ...DUAL, peers, nextHop6: null });
  assert.match(exportFilterOf(none, "peer_10_0_0_1"), /\{\n {2}reject;\n\}/);
  assert.match(sessionBlock(none, "peer_10_0_0_1"), /ipv4 \{/);
  assert.match(sessionBlock(none, "peer_10_0_1_1"), /export filter flock_export6;/);
  assert.deepEqual(peersWithoutIpv6({ ...DUAL, peers, nextHop6: null }), ["10.0.0.1", "10.0.2.1"]);
  // An IPv6 peer's link is irrelevant: IPv6 routes there carry the session's own address.
  const v6 = [{ address: "fd00:b::2", asn: 65000, linkWithoutIpv6: true }];
  assert.deepEqual(peersWithoutIpv6({ ...DUAL, peers: v6, nextHop6: null }), []);
});

Deno.test("bird config: a direct IPv4 peer's link IPv6 is set as next hop in its own filter", () => {
  const peers = [
    { address: "10.0.1.1", asn: 65000, linkNextHop6: "FD00:C::11" },
    // Multihop: the link of the first hop is not the peer's; the node's global IPv6.
    { address: "10.0.2.1", asn: 65001, linkNextHop6: "fd00:e::11", multihop: 2 },
  ];
  const text = renderBirdConfig({ ...DUAL, peers, nextHop6: "fd00:a::11" });
  // BIRD fixes its own pick when the session comes up (`::` before the link had one): set in
  // the filter, a new link address is a filter reload, not a session reset.
  const direct = sessionBlock(text, "peer_10_0_1_1");
  assert.match(direct, /ipv6 \{[^}]*export filter peer_10_0_1_1_export6;/);
  assert.match(direct, /ipv4 \{[^}]*export filter flock_export4;\n {4}next hop self;/);
  assert.match(exportFilterOf(text, "peer_10_0_1_1"), /bgp_next_hop = fd00:c::11;/);
  assert.match(exportFilterOf(text, "peer_10_0_2_1"), /bgp_next_hop = fd00:a::11;/);
  // Even without a node address: the link's own is the session's next hop, nobody is named.
  const none = renderBirdConfig({ ...DUAL, peers: [peers[0]], nextHop6: null });
  assert.match(exportFilterOf(none, "peer_10_0_1_1"), /bgp_next_hop = fd00:c::11;/);
  assert.deepEqual(peersWithoutIpv6({ ...DUAL, peers: [peers[0]], nextHop6: null }), []);
  assert.throws(
    () => renderBirdConfig({ ...DUAL, peers: [{ ...peers[0], linkNextHop6: "10.0.0.11" }] }),
    BirdConfigError,
  );
  assert.throws(
    () => renderBirdConfig({ ...DUAL, peers: [{ ...peers[0], linkNextHop6: "::1; }" }] }),
    BirdConfigError,
  );
});

Deno.test("bird config: per-pod routes are never learned, only flock's own", () => {
  const text = renderBirdConfig(DUAL);
  assert.match(text, /if krt_source != 201 then reject;/);
  assert.match(text, /define NODE_CIDRS6 = \[ fd00:1::\/64 \];/);
  assert.match(text, /define ANYCAST_HOSTS6 = \[ fd00:ffff::\/112\{128,128\} \];/);
  assert.match(text, /preference 200;/);
  assert.doesNotMatch(text, /password/);
});

Deno.test("bird config: refuses input that could inject config text", () => {
  const bad: [string, Partial<BirdConfigInput>][] = [
    ["router id", { routerId: "fd00::1" }],
    ["prefix", { cidrs: ["fd00:1::/64; protocol static {}"] }],
    ["peer", { peers: [{ address: "10.0.0.1 as 1; }", asn: 65000 }] }],
    ["password", { peers: [{ address: "10.0.0.1", asn: 65000, password: 'a"; }' }] }],
    ["asn", { peers: [{ address: "10.0.0.1", asn: 0 }] }],
    ["no local AS", { asn: undefined }],
    ["IPv4 next hop for IPv6", { nextHop6: "10.0.0.11" }],
    ["next hop text", { nextHop6: "fd00::1; export all" }],
  ];
  for (const [what, change] of bad) {
    assert.throws(() => renderBirdConfig({ ...DUAL, ...change }), BirdConfigError, what);
  }
});

Deno.test({
  name: "bird config: real `bird -p` parses every golden file",
  ignore: !hasTool(birdPath) && Deno.env.get("CI") !== "true",
  async fn() {
    for (const name of Object.keys(CASES)) {
      const r = await run([birdPath(), "-p", "-c", `${TESTDATA}${name}.conf`], {
        timeoutMs: 10_000,
      });
      assert.equal(r.code, 0, `${name}.conf: ${r.stdout}${r.stderr}`);
    }
  },
});
