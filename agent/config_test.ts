import assert from "node:assert/strict";
import { formatPrefix } from "../netlink/ip.ts";
import {
  ConfigError,
  EMBEDDED_DEFAULT_CONFIG,
  loadNodeConfigFile,
  type NodeConfig,
  parseNodeConfig,
  parseNodeConfigText,
} from "./config.ts";

const API = "flock.fritzlab.net/v1alpha1";

function wrap(spec: unknown, extra: Record<string, unknown> = {}) {
  return { apiVersion: API, kind: "NodeConfig", metadata: { name: "node-1" }, spec, ...extra };
}

function rejects(obj: unknown, message: string): void {
  assert.throws(() => parseNodeConfig(obj, "test"), (e: unknown) => {
    assert.ok(e instanceof ConfigError, `not a ConfigError: ${e}`);
    assert.equal(e.message, message);
    return true;
  });
}

function summary(c: NodeConfig) {
  return {
    name: c.name,
    cidr6: c.cidr6 && formatPrefix(c.cidr6),
    cidr4: c.cidr4 && formatPrefix(c.cidr4),
    mtu: c.mtu,
    anycast6: c.anycast6.map(formatPrefix),
    anycast4: c.anycast4.map(formatPrefix),
  };
}

Deno.test("the embedded default config parses to the demo node", () => {
  const c = parseNodeConfigText(EMBEDDED_DEFAULT_CONFIG, "embedded");
  assert.deepEqual(summary(c), {
    name: "demo",
    cidr6: "fd00:f10c:0:1::/64",
    cidr4: "10.244.1.0/24",
    mtu: 1500,
    anycast6: ["fd00:f10c:ffff::/112"],
    anycast4: ["10.244.255.0/24"],
  });
  assert.deepEqual(c.spec, {
    cidr6: "fd00:f10c:0:1::/64",
    cidr4: "10.244.1.0/24",
    mtu: 1500,
    anycastCIDRs: ["fd00:f10c:ffff::/112", "10.244.255.0/24"],
  });
});

Deno.test("a full spec with BGP, wrapped or bare", () => {
  const spec = {
    cidr6: "fd00:1:2::/64",
    mtu: 9000,
    anycastCIDRs: ["fd00:ffff::/112", "192.0.2.0/28"],
    bgp: {
      asn: 64512,
      routerID: "10.0.0.1",
      nodeMesh: true,
      peers: [
        { address: "fd00::1", asn: 65000, password: "pw", multihop: 2 },
        { address: "10.0.0.254", asn: 4200000000, bfd: true },
      ],
      gracefulRestart: { enabled: true, restartTime: 120 },
    },
  };
  const wrapped = parseNodeConfig(
    wrap(spec, { status: { allocations: 3 }, metadata: { name: "n", uid: "x", labels: {} } }),
    "api",
  );
  const bare = parseNodeConfig(spec, "file");
  assert.deepEqual(wrapped.spec, spec);
  assert.deepEqual(bare.spec, spec);
  assert.equal(wrapped.name, "n");
  assert.equal(bare.name, undefined);
  assert.deepEqual(summary(bare), {
    name: undefined,
    cidr6: "fd00:1:2::/64",
    cidr4: undefined,
    mtu: 9000,
    anycast6: ["fd00:ffff::/112"],
    anycast4: ["192.0.2.0/28"],
  });
});

Deno.test("defaults: mtu 1500, no anycast; IPv4-only allows a small mtu", () => {
  const c = parseNodeConfig({ cidr4: "10.0.0.0/24", mtu: 576 }, "f");
  assert.equal(c.mtu, 576);
  assert.deepEqual(parseNodeConfig({ cidr4: "10.0.0.0/24" }, "f").mtu, 1500);
  assert.deepEqual(parseNodeConfig({ cidr6: "fd00::/64" }, "f").anycast6, []);
});

Deno.test("field errors name the source and the field path", () => {
  rejects(wrap({ cidr6: "x" }), 'test: spec.cidr6: not a prefix (no /length): "x"');
  rejects(wrap({ cidr6: "fd00::/64x" }), 'test: spec.cidr6: not a prefix: "fd00::/64x"');
  rejects({ cidr6: "x/64" }, 'test: cidr6: not a prefix: "x/64"');
  rejects(wrap({ cidr6: "10.0.0.0/24" }), "test: spec.cidr6: 10.0.0.0/24 is not an IPv6 prefix");
  rejects(wrap({ cidr4: "fd00::/64" }), "test: spec.cidr4: fd00::/64 is not an IPv4 prefix");
  rejects(
    wrap({ cidr6: "fd00::1/64" }),
    "test: spec.cidr6: fd00::1/64 has host bits set; the network is fd00::/64",
  );
  rejects(wrap({ cidr4: 10 }), "test: spec.cidr4: must be a string, not number 10");
  rejects(wrap({}), "test: spec: at least one of cidr6 and cidr4 is required");
  rejects({ mtu: 1500 }, "test: at least one of cidr6 and cidr4 is required");
  rejects(
    wrap({ cidr6: "fd00::/64", mtu: 1000 }),
    "test: spec.mtu: 1000 is below 1280, the minimum for IPv6",
  );
  rejects(
    wrap({ cidr4: "10.0.0.0/8", mtu: 70000 }),
    "test: spec.mtu: 70000 is out of range (576..65535)",
  );
  rejects(
    wrap({ cidr4: "10.0.0.0/8", mtu: 1500.5 }),
    "test: spec.mtu: must be an integer, not number 1500.5",
  );
  rejects(
    wrap({ cidr4: "10.0.0.0/8", mtu: "1500" }),
    'test: spec.mtu: must be an integer, not string "1500"',
  );
  rejects(wrap({ cidr4: "10.0.0.0/8", cidr: "x" }), "test: spec.cidr: unknown field");
  rejects(wrap({ cidr4: "10.0.0.0/8" }, { extra: 1 }), "test: extra: unknown field");
});

Deno.test("envelope errors", () => {
  rejects(null, "test: expected a NodeConfig object, not null");
  rejects([1], "test: expected a NodeConfig object, not a list");
  rejects(
    { ...wrap({ cidr4: "10.0.0.0/8" }), apiVersion: "v1" },
    'test: apiVersion: must be "flock.fritzlab.net/v1alpha1"',
  );
  rejects({ ...wrap({ cidr4: "10.0.0.0/8" }), kind: "Node" }, 'test: kind: must be "NodeConfig"');
  rejects({ apiVersion: API, kind: "NodeConfig" }, "test: spec: is required");
  rejects(
    { ...wrap({ cidr4: "10.0.0.0/8" }), metadata: { name: 3 } },
    "test: metadata.name: must be a string, not number 3",
  );
});

Deno.test("anycastCIDRs: each a clean prefix, not overlapping the node CIDRs or each other", () => {
  const base = { cidr6: "fd00:1::/64", cidr4: "10.1.0.0/24" };
  rejects(
    wrap({ ...base, anycastCIDRs: "fd00:ffff::/112" }),
    'test: spec.anycastCIDRs: must be a list, not string "fd00:ffff::/112"',
  );
  rejects(
    wrap({ ...base, anycastCIDRs: [7] }),
    "test: spec.anycastCIDRs[0]: must be a string, not number 7",
  );
  rejects(
    wrap({ ...base, anycastCIDRs: ["fd00:ffff::/112", "fd00:ffff::1/112"] }),
    "test: spec.anycastCIDRs[1]: fd00:ffff::1/112 has host bits set; the network is fd00:ffff::/112",
  );
  rejects(
    wrap({ ...base, anycastCIDRs: ["fd00:1::/112"] }),
    "test: spec.anycastCIDRs[0]: fd00:1::/112 overlaps cidr6 fd00:1::/64",
  );
  rejects(
    wrap({ ...base, anycastCIDRs: ["10.0.0.0/8"] }),
    "test: spec.anycastCIDRs[0]: 10.0.0.0/8 overlaps cidr4 10.1.0.0/24",
  );
  rejects(
    wrap({ ...base, anycastCIDRs: ["fd00:ffff::/112", "fd00:ffff::/120"] }),
    "test: spec.anycastCIDRs[1]: fd00:ffff::/120 overlaps fd00:ffff::/112 listed before it",
  );
});

Deno.test("node and anycast CIDRs: never the gateways' link-local ranges, loopback or multicast", () => {
  rejects(
    wrap({ cidr4: "169.254.1.0/24" }),
    "test: spec.cidr4: 169.254.1.0/24 overlaps 169.254.0.0/16: " +
      "link-local addresses (the pods' gateway 169.254.1.1)",
  );
  rejects(
    wrap({ cidr6: "fe80::/64" }),
    "test: spec.cidr6: fe80::/64 overlaps fe80::/10: link-local addresses (the pods' gateway fe80::1)",
  );
  // A node CIDR that contains a reserved range is refused as well.
  rejects(
    wrap({ cidr4: "0.0.0.0/0" }),
    "test: spec.cidr4: 0.0.0.0/0 overlaps 0.0.0.0/8: 'this network' (0.0.0.0/8)",
  );
  rejects(
    wrap({ cidr4: "127.0.0.0/24" }),
    "test: spec.cidr4: 127.0.0.0/24 overlaps 127.0.0.0/8: loopback",
  );
  rejects(wrap({ cidr6: "ff02::/16" }), "test: spec.cidr6: ff02::/16 overlaps ff00::/8: multicast");
  rejects(
    wrap({ cidr6: "::1/128" }),
    "test: spec.cidr6: ::1/128 overlaps ::1/128: the loopback address",
  );
  rejects(
    wrap({ cidr6: "fd00:1::/64", anycastCIDRs: ["224.0.0.0/24"] }),
    "test: spec.anycastCIDRs[0]: 224.0.0.0/24 overlaps 224.0.0.0/4: multicast",
  );
  // Ordinary private and global ranges are fine.
  for (const cidr4 of ["10.0.0.0/8", "100.64.0.0/10", "192.168.0.0/16", "203.0.113.0/24"]) {
    parseNodeConfig(wrap({ cidr4 }), "test");
  }
  for (const cidr6 of ["fd00::/8", "2001:db8::/32", "fc00::/7"]) {
    parseNodeConfig(wrap({ cidr6 }), "test");
  }
});

Deno.test("bgp: every field checked", () => {
  const base = { cidr6: "fd00:1::/64" };
  const bgp = (b: unknown) => wrap({ ...base, bgp: b });
  rejects(bgp({ asn: 0 }), "test: spec.bgp.asn: 0 is out of range (1..4294967295)");
  rejects(
    bgp({ asn: 4294967296 }),
    "test: spec.bgp.asn: 4294967296 is out of range (1..4294967295)",
  );
  rejects(
    bgp({ routerID: "fd00::1" }),
    'test: spec.bgp.routerID: must be a dotted-quad (IPv4-style) id, not "fd00::1"',
  );
  rejects(
    bgp({ nodeMesh: "yes" }),
    'test: spec.bgp.nodeMesh: must be true or false, not string "yes"',
  );
  rejects(
    bgp({ nodeMesh: true }),
    "test: spec.bgp.asn: is required when peers or nodeMesh are set",
  );
  rejects(bgp({ asn: 1, peers: {} }), "test: spec.bgp.peers: must be a list, not an object");
  rejects(
    bgp({ asn: 1, peers: ["fd00::1"] }),
    'test: spec.bgp.peers[0]: must be an object, not string "fd00::1"',
  );
  rejects(bgp({ asn: 1, peers: [{ asn: 2 }] }), "test: spec.bgp.peers[0].address: is required");
  rejects(
    bgp({ asn: 1, peers: [{ address: "x", asn: 2 }] }),
    'test: spec.bgp.peers[0].address: not an IP address: "x"',
  );
  rejects(
    bgp({ asn: 1, peers: [{ address: "fd00::1" }] }),
    "test: spec.bgp.peers[0].asn: is required",
  );
  rejects(
    bgp({ asn: 1, peers: [{ address: "fd00::1", asn: 2 }, { address: "fd00:0::1", asn: 3 }] }),
    "test: spec.bgp.peers[1].address: fd00:0::1 is listed twice",
  );
  rejects(
    bgp({ asn: 1, peers: [{ address: "fd00::1", asn: 2, multihop: 0 }] }),
    "test: spec.bgp.peers[0].multihop: 0 is out of range (1..255)",
  );
  rejects(
    bgp({ asn: 1, peers: [{ address: "fd00::1", asn: 2, password: "" }] }),
    "test: spec.bgp.peers[0].password: must not be empty (leave it out instead)",
  );
  rejects(
    bgp({ asn: 1, peers: [{ address: "fd00::1", asn: 2, password: 'a"b' }] }),
    "test: spec.bgp.peers[0].password: must not contain quotes, backslashes or newlines",
  );
  rejects(
    bgp({ asn: 1, peers: [{ address: "fd00::1", asn: 2, bfd: 1 }] }),
    "test: spec.bgp.peers[0].bfd: must be true or false, not number 1",
  );
  rejects(
    bgp({ asn: 1, peers: [{ address: "fd00::1", asn: 2, ttl: 1 }] }),
    "test: spec.bgp.peers[0].ttl: unknown field",
  );
  rejects(
    bgp({ gracefulRestart: { restartTime: 5000 } }),
    "test: spec.bgp.gracefulRestart.restartTime: 5000 is out of range (1..4095)",
  );
  rejects(
    bgp({ gracefulRestart: { enable: true } }),
    "test: spec.bgp.gracefulRestart.enable: unknown field",
  );
  rejects(bgp({ as: 1 }), "test: spec.bgp.as: unknown field");
  rejects(bgp([]), "test: spec.bgp: must be an object, not a list");
});

Deno.test("loadNodeConfigFile reads YAML and JSON and names the file in errors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-config-test-" });
  try {
    const yaml = `${dir}/node.yaml`;
    await Deno.writeTextFile(yaml, EMBEDDED_DEFAULT_CONFIG);
    assert.equal(formatPrefix((await loadNodeConfigFile(yaml)).cidr6!), "fd00:f10c:0:1::/64");

    const json = `${dir}/node.json`;
    await Deno.writeTextFile(json, JSON.stringify(wrap({ cidr4: "10.9.0.0/16" })));
    assert.equal(formatPrefix((await loadNodeConfigFile(json)).cidr4!), "10.9.0.0/16");

    const bad = `${dir}/bad.yaml`;
    await Deno.writeTextFile(bad, "spec:\n  cidr6: &a fd00::/64\n");
    await assert.rejects(loadNodeConfigFile(bad), {
      name: "ConfigError",
      message: `${bad}: line 2: anchors are not supported`,
    });
    await Deno.writeTextFile(bad, "cidr6: fd00::/64\nmtu: 1000\n");
    await assert.rejects(loadNodeConfigFile(bad), {
      message: `${bad}: mtu: 1000 is below 1280, the minimum for IPv6`,
    });
    await Deno.writeTextFile(bad, "{ nope");
    await assert.rejects(loadNodeConfigFile(bad), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /bad\.yaml: invalid JSON: /);
      return true;
    });
    await assert.rejects(loadNodeConfigFile(`${dir}/missing.yaml`), /missing\.yaml: cannot read: /);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config: passwordSecretRef in cluster mode only, never together with password", () => {
  const base = { cidr6: "fd00::/64" };
  const peer = (p: Record<string, unknown>) =>
    wrap({ ...base, bgp: { asn: 1, peers: [{ address: "fd00::1", asn: 2, ...p }] } });
  const ref = { passwordSecretRef: { name: "bgp-passwords", key: "tor-1" } };
  const cluster = parseNodeConfig(peer(ref), "test", { secretRefs: true });
  assert.deepEqual(cluster.spec.bgp?.peers, [
    { address: "fd00::1", asn: 2, passwordSecretRef: { name: "bgp-passwords", key: "tor-1" } },
  ]);
  const rejectsInCluster = (obj: unknown, message: string) =>
    assert.throws(() => parseNodeConfig(obj, "test", { secretRefs: true }), { message });
  // A config file (standalone mode) has nobody to read the Secret.
  rejects(
    peer(ref),
    "test: spec.bgp.peers[0].passwordSecretRef: is read only in cluster mode (a NodeConfig " +
      "from the API server); a config file gives password itself",
  );
  rejectsInCluster(
    peer({ password: "pw", ...ref }),
    "test: spec.bgp.peers[0].passwordSecretRef: cannot be set together with password: give " +
      "one of them",
  );
  rejectsInCluster(
    peer({ passwordSecretRef: { key: "k" } }),
    "test: spec.bgp.peers[0].passwordSecretRef.name: is required",
  );
  rejectsInCluster(
    peer({ passwordSecretRef: { name: "s", key: "" } }),
    "test: spec.bgp.peers[0].passwordSecretRef.key: is required",
  );
  rejectsInCluster(
    peer({ passwordSecretRef: { name: "Not_A_Name", key: "k" } }),
    'test: spec.bgp.peers[0].passwordSecretRef.name: "Not_A_Name" is not a valid Secret name',
  );
  rejectsInCluster(
    peer({ passwordSecretRef: { name: "s", key: "a/b" } }),
    'test: spec.bgp.peers[0].passwordSecretRef.key: "a/b" is not a valid Secret key',
  );
  rejectsInCluster(
    peer({ passwordSecretRef: { name: "s", key: "k", namespace: "other" } }),
    "test: spec.bgp.peers[0].passwordSecretRef.namespace: unknown field",
  );
  rejectsInCluster(
    peer({ passwordSecretRef: "s/k" }),
    'test: spec.bgp.peers[0].passwordSecretRef: must be an object, not string "s/k"',
  );
});

Deno.test("config: a password that YAML reads as a number is refused without echoing it", () => {
  const text = "cidr6: fd00:1::/64\nbgp:\n  asn: 65001\n  peers:\n" +
    "    - address: fd00::1\n      asn: 65000\n      password: 83917265\n";
  assert.throws(() => parseNodeConfigText(text, "test"), (e: Error) => {
    assert.match(e.message, /bgp\.peers\[0\]\.password: must be a string/);
    assert.doesNotMatch(e.message, /83917265/, "the error goes to the log and the status");
    return true;
  });
});
