import assert from "node:assert/strict";
import {
  acceptedDrainingCIDRs,
  canonicalJson,
  describeConfigChange,
  meshAddress,
  meshPeersFor,
  nodeAddressesChanged,
  nodeConfigFromPodCIDRs,
  parseNodeConfigObject,
  peerChangeMatters,
  PeerConfigs,
  projectNodeAddresses,
  projectNodeConfig,
  publishedDrainingCIDRs,
  specApplied,
} from "./node_configs.ts";
import { parsePrefix } from "../../netlink/ip.ts";
import { parseNodeConfig } from "../config.ts";

Deno.test("nodeConfigFromPodCIDRs: the first CIDR of each family; none gives undefined", () => {
  const c = nodeConfigFromPodCIDRs("n1", ["10.244.3.0/24", "fd00:10:244:3::/64", "10.9.0.0/24"]);
  assert.deepEqual(c?.spec, { cidr6: "fd00:10:244:3::/64", cidr4: "10.244.3.0/24" });
  assert.equal(c?.name, "n1");
  assert.equal(c?.mtu, 1500);
  assert.equal(nodeConfigFromPodCIDRs("n1", [])?.spec, undefined);
  assert.equal(nodeConfigFromPodCIDRs("n1", ["garbage"]), undefined);
  assert.deepEqual(nodeConfigFromPodCIDRs("n1", ["10.1.2.0/24"])?.spec, { cidr4: "10.1.2.0/24" });
});

Deno.test("parseNodeConfigObject: the file rules apply, and errors name the object", () => {
  const obj = projectNodeConfig({
    metadata: { name: "n2", generation: 3 },
    spec: { cidr6: "fd00:2::/64", mtu: 9000 },
  });
  assert.equal(obj.generation, 3);
  const c = parseNodeConfigObject(obj);
  assert.equal(c.name, "n2");
  assert.equal(c.mtu, 9000);
  assert.throws(
    () => parseNodeConfigObject({ ...obj, spec: { cidr6: "fd00:2::/64", color: "red" } }),
    /NodeConfig n2: color: unknown field/,
  );
});

Deno.test("describeConfigChange: one sentence per changed field, pods are kept", () => {
  const old = parseNodeConfig({ cidr6: "fd00:1::/64", cidr4: "10.1.0.0/24", mtu: 1500 }, "a");
  assert.deepEqual(describeConfigChange(old, old), []);
  const next = parseNodeConfig({
    cidr6: "fd00:9::/64",
    cidr4: "10.1.0.0/24",
    mtu: 1400,
    anycastCIDRs: ["fd00:ff::/112"],
    bgp: { asn: 65001 },
  }, "b");
  const lines = describeConfigChange(old, next);
  assert.equal(lines.length, 4, lines.join("\n"));
  assert.match(lines[0], /cidr6 changed from fd00:1::\/64 to fd00:9::\/64: running pods keep/);
  assert.match(lines[1], /mtu changed from 1500 to 1400/);
  assert.match(lines[2], /anycastCIDRs changed from \[\] to \[fd00:ff::\/112\]/);
  assert.match(lines[3], /bgp changed/);
});

Deno.test("PeerConfigs: every valid other node, sorted; invalid ones reported", () => {
  const objs = [
    { name: "zeta", generation: 1, spec: { cidr4: "10.3.0.0/24" }, status: undefined },
    { name: "self", generation: 1, spec: { cidr4: "10.1.0.0/24" }, status: undefined },
    { name: "alpha", generation: 1, spec: { cidr4: "10.2.0.0/24" }, status: undefined },
    { name: "bad", generation: 1, spec: { cidr4: "nonsense" }, status: undefined },
  ];
  const invalid: string[] = [];
  const peers = new PeerConfigs().of(objs, "self", (name) => invalid.push(name));
  assert.deepEqual(peers.map((p) => p.name), ["alpha", "zeta"]);
  assert.deepEqual(invalid, ["bad"]);
});

Deno.test("PeerConfigs: parses an object again only when its generation changes", () => {
  const configs = new PeerConfigs();
  const invalid: string[] = [];
  const report = (name: string) => invalid.push(name);
  const a1 = { name: "a", generation: 1, spec: { cidr4: "10.2.0.0/24" }, status: undefined };
  const bad = { name: "bad", generation: 1, spec: { cidr4: "nonsense" }, status: undefined };
  const first = configs.of([a1, bad], "self", report)[0];
  // A status write: same generation, a new object. Same parse, and the invalid one is not
  // reported again.
  const again = configs.of([{ ...a1, status: { allocated: 3 } }, { ...bad }], "self", report)[0];
  assert.equal(again, first);
  assert.deepEqual(invalid, ["bad"]);
  // A new spec.
  const a2 = { ...a1, generation: 2, spec: { cidr4: "10.9.0.0/24" } };
  const changed = configs.of([a2], "self", report)[0];
  assert.notEqual(changed, first);
  assert.equal(changed.spec.cidr4, "10.9.0.0/24");
  // Gone, then back with generation 1: parsed afresh.
  assert.deepEqual(configs.of([], "self", report), []);
  assert.notEqual(configs.of([a1], "self", report)[0], first);
});

Deno.test("peerChangeMatters: spec, membership and router id; not counter-only status writes", () => {
  const obj = (generation: number, status?: unknown) => ({
    name: "n2",
    generation,
    spec: {},
    status,
  });
  const upsert = (value: ReturnType<typeof obj>, previous?: ReturnType<typeof obj>) => ({
    type: "upsert" as const,
    key: "n2",
    value,
    previous,
  });
  assert.equal(peerChangeMatters(upsert(obj(1))), true, "a new node");
  assert.equal(peerChangeMatters({ type: "delete", key: "n2", previous: obj(1) }), true);
  assert.equal(peerChangeMatters(upsert(obj(2), obj(1))), true, "a new spec");
  assert.equal(
    peerChangeMatters(
      upsert(obj(1, { allocated: { ipv6: 4 } }), obj(1, { allocated: { ipv6: 3 } })),
    ),
    false,
    "counters only",
  );
  assert.equal(
    peerChangeMatters(upsert(obj(1, { bgp: { routerID: "192.0.2.1" } }), obj(1, {}))),
    true,
    "a router id published",
  );
  assert.equal(
    peerChangeMatters(upsert(obj(1, { drainingCIDRs: ["fd00:2::/64"] }), obj(1, {}))),
    true,
    "a draining CIDR published",
  );
  assert.equal(
    peerChangeMatters(upsert(obj(1, {}), obj(1, { drainingCIDRs: ["fd00:2::/64"] }))),
    true,
    "a draining CIDR released",
  );
  assert.equal(
    peerChangeMatters(
      upsert(
        obj(1, { drainingCIDRs: ["fd00:2::/64"], pods: 2 }),
        obj(1, { drainingCIDRs: ["fd00:2::/64"], pods: 3 }),
      ),
    ),
    false,
    "the same draining CIDRs, counters moved",
  );
});

Deno.test("nodeAddressesChanged: only a change of InternalIPs counts", () => {
  const upsert = (value: string[], previous?: string[]) => ({
    type: "upsert" as const,
    key: "n",
    value,
    previous,
  });
  assert.equal(nodeAddressesChanged(upsert(["fd00::1"])), true);
  assert.equal(nodeAddressesChanged(upsert(["fd00::1"], ["fd00::1"])), false);
  assert.equal(nodeAddressesChanged(upsert(["fd00::1", "10.0.0.1"], ["fd00::1"])), true);
  assert.equal(
    nodeAddressesChanged(upsert(["10.0.0.1", "fd00::1"], ["fd00::1", "10.0.0.1"])),
    true,
  );
  assert.equal(nodeAddressesChanged({ type: "delete", key: "n", previous: ["fd00::1"] }), true);
});

Deno.test("canonicalJson: key order does not matter, array order does", () => {
  assert.equal(
    canonicalJson({ b: 1, a: { d: 2, c: 3 } }),
    canonicalJson({ a: { c: 3, d: 2 }, b: 1 }),
  );
  assert.notEqual(canonicalJson([1, 2]), canonicalJson([2, 1]));
});

/** A parsed NodeConfig named `name`. */
function named(name: string, spec: Record<string, unknown>) {
  const config = parseNodeConfig(spec, name);
  config.name = name;
  return config;
}

/** Node "a" of the mesh, dual-stack. */
const MESH_NODE_A = {
  cidr6: "fd00:1::/64",
  cidr4: "10.1.0.0/24",
  bgp: { asn: 65001, nodeMesh: true },
};

Deno.test("meshPeersFor: other nodes in the mesh, at their first InternalIP", () => {
  const addresses: Record<string, string[]> = {
    a: projectNodeAddresses({
      status: {
        addresses: [
          { type: "Hostname", address: "a" },
          { type: "InternalIP", address: "fd00:99::a" },
          { type: "InternalIP", address: "10.99.0.10" },
        ],
      },
    }),
    b: ["fd00:99::b"],
    d: ["fd00:99::d"],
  };
  assert.deepEqual(addresses.a, ["fd00:99::a", "10.99.0.10"]);
  const peers = [
    named("a", MESH_NODE_A),
    named("b", { cidr6: "fd00:2::/64" }), // no bgp: not in the mesh
    named("c", { cidr6: "fd00:3::/64", bgp: { asn: 65003, nodeMesh: true } }), // no Node address yet
    named("d", { cidr6: "fd00:4::/64", bgp: { asn: 65004 } }), // mesh off: never answers
  ];
  assert.deepEqual(meshPeersFor(peers, (n) => addresses[n]), [
    { name: "a", address: "fd00:99::a", asn: 65001, cidrs: ["fd00:1::/64", "10.1.0.0/24"] },
  ]);
});

Deno.test("meshAddress: both ends of a pair pick the same family, whatever the listing order", () => {
  const v4first = ["10.0.0.11", "fd00:a::11"];
  const v6first = ["fd00:a::12", "10.0.0.12"];
  const v6only = ["fd00:a::13"];
  const v4only = ["10.0.0.14"];
  // IPv6 whenever both have it: both ends agree even though their Nodes list families apart.
  assert.equal(meshAddress(v4first, v6first), "fd00:a::12");
  assert.equal(meshAddress(v6first, v4first), "fd00:a::11");
  assert.equal(meshAddress(v4first, v6only), "fd00:a::13");
  assert.equal(meshAddress(v6only, v4first), "fd00:a::11");
  // IPv4 when that is all they share.
  assert.equal(meshAddress(v4first, v4only), "10.0.0.14");
  assert.equal(meshAddress(v4only, v6first), "10.0.0.12");
  // No common family: no session is possible.
  assert.equal(meshAddress(v6only, v4only), undefined);
  // This node's own Node is not known: the peer's first InternalIP.
  assert.equal(meshAddress(undefined, v4first), "10.0.0.11");
  assert.equal(meshAddress([], []), undefined);
});

Deno.test("meshPeersFor: with this node's own addresses, the peer's address of the shared family", () => {
  const peers = [named("a", MESH_NODE_A)];
  const nodes: Record<string, string[]> = { a: ["10.0.0.1", "fd00:a::1"] };
  assert.deepEqual(
    meshPeersFor(peers, (n) => nodes[n], ["fd00:a::2", "10.0.0.2"]).map((p) => p.address),
    ["fd00:a::1"],
  );
  assert.deepEqual(
    meshPeersFor(peers, (n) => nodes[n], ["10.0.0.2"]).map((p) => p.address),
    ["10.0.0.1"],
  );
});

Deno.test("publishedDrainingCIDRs: well-formed CIDRs only, canonical and sorted", () => {
  assert.deepEqual(
    publishedDrainingCIDRs({
      drainingCIDRs: ["FD00:2:0::/64", "10.2.0.0/24", "10.3.0.1/24", "garbage", 7, "10.2.0.0/24"],
    }),
    ["10.2.0.0/24", "fd00:2::/64"],
  );
  assert.deepEqual(publishedDrainingCIDRs(undefined), []);
  assert.deepEqual(publishedDrainingCIDRs({ drainingCIDRs: "fd00:2::/64" }), []);
  const many = Array.from({ length: 40 }, (_, i) => `10.9.${i}.0/24`);
  assert.equal(publishedDrainingCIDRs({ drainingCIDRs: many }).length, 16);
});

Deno.test("meshPeersFor: a peer's draining CIDRs are accepted unless they overlap a current CIDR", () => {
  const peers = [
    named("a", MESH_NODE_A),
    named("b", { cidr6: "fd00:5::/64", bgp: { asn: 65001, nodeMesh: true } }),
  ];
  const statuses: Record<string, unknown> = {
    a: {
      drainingCIDRs: [
        "fd00:11::/64", // a's old range: accepted
        "10.11.0.0/24", // accepted
        "fd00:5::/48", // covers b's current range: refused
        "fd00:9::/80", // inside this node's own range: refused
        "10.1.0.0/24", // a's own current range (already accepted as such)
      ],
    },
    b: { drainingCIDRs: ["fd00:1::/64"] }, // a's current range: refused
  };
  const draining = {
    statusOf: (name: string) => statuses[name],
    ownCIDRs: [parsePrefix("fd00:9::/64")],
  };
  const ips = (n: string) => [`fd00:99::${n}`];
  const mesh = meshPeersFor(peers, ips, undefined, draining);
  assert.deepEqual(mesh.map((p) => [p.name, p.cidrs]), [
    ["a", ["fd00:1::/64", "10.1.0.0/24", "10.11.0.0/24", "fd00:11::/64"]],
    ["b", ["fd00:5::/64"]],
  ]);
  assert.deepEqual(
    [...acceptedDrainingCIDRs(peers, draining)],
    [["a", ["10.11.0.0/24", "fd00:11::/64"]]],
  );
  // Without a draining source (or once released) only the current CIDRs.
  assert.deepEqual(meshPeersFor(peers, ips).map((p) => p.cidrs), [
    ["fd00:1::/64", "10.1.0.0/24"],
    ["fd00:5::/64"],
  ]);
});

Deno.test("PeerConfigs: the CIDRs before a change until the node applies it; an invalid spec keeps the last valid one", () => {
  const configs = new PeerConfigs();
  const invalid: string[] = [];
  const report = (name: string) => invalid.push(name);
  const b = (generation: number, spec: unknown, observedGeneration?: number) => ({
    name: "b",
    generation,
    spec,
    status: observedGeneration === undefined ? undefined : { observedGeneration },
  });
  const old = { cidr6: "fd00:1::/64", cidr4: "10.1.0.0/24" };
  const moved = { cidr6: "fd00:2::/64", cidr4: "10.2.0.0/24" };
  configs.of([b(1, old, 1)], "self", report);
  assert.deepEqual(configs.previousCIDRs("b"), [], "no change seen");
  // The operator moves b: until b's agent says it applied generation 2, its old CIDRs count.
  assert.equal(specApplied(b(2, moved, 1)), false);
  assert.deepEqual(configs.of([b(2, moved, 1)], "self", report)[0].spec, moved);
  assert.deepEqual(configs.previousCIDRs("b"), ["fd00:1::/64", "10.1.0.0/24"]);
  // An MTU change before it applied the move: the CIDRs before the move still count.
  configs.of([b(3, { ...moved, mtu: 1400 }, 1)], "self", report);
  assert.deepEqual(configs.previousCIDRs("b"), ["fd00:1::/64", "10.1.0.0/24"]);
  // Applied: from now on b's status says what it still drains.
  assert.equal(specApplied(b(3, { ...moved, mtu: 1400 }, 3)), true);
  configs.of([b(3, { ...moved, mtu: 1400 }, 3)], "self", report);
  assert.deepEqual(configs.previousCIDRs("b"), []);
  // An invalid spec: b's agent rejects it and keeps running the last valid one; so does the mesh.
  const kept = configs.of([b(4, { cidr6: "nonsense" }, 3)], "self", report);
  assert.deepEqual(invalid, ["b"]);
  assert.deepEqual(kept.map((c) => c.spec), [{ ...moved, mtu: 1400 }]);
  assert.deepEqual(configs.previousCIDRs("b"), []);
});

Deno.test("meshPeersFor: a peer's CIDRs before a change it has not applied yet are accepted", () => {
  const peers = [named("b", { cidr6: "fd00:2::/64", bgp: { asn: 65001, nodeMesh: true } })];
  const mesh = meshPeersFor(peers, () => ["fd00:99::b"], undefined, {
    statusOf: () => ({ observedGeneration: 1 }),
    unappliedCIDRs: () => ["fd00:1::/64", "fd00:9::/64"],
    ownCIDRs: [parsePrefix("fd00:9::/64")],
  });
  assert.deepEqual(mesh.map((p) => p.cidrs), [["fd00:2::/64", "fd00:1::/64"]]);
});
