import assert from "node:assert/strict";
import { buildAddResult, parsePrevResult } from "./cni_result.ts";

const BASE = {
  hostIface: "flock1a2b3c4d",
  hostMac: "02:00:00:00:00:01",
  ifname: "eth0",
  podMac: "02:00:00:00:00:02",
  netns: "/var/run/netns/cni-1",
  mtu: 1450,
};

Deno.test("buildAddResult: dual-stack 1.1.0 result with mtu on the pod interface", () => {
  const result = buildAddResult({
    ...BASE,
    cniVersion: "1.1.0",
    ipv6: "fd00::5",
    ipv4: "10.0.0.5",
  });
  assert.deepEqual(result, {
    cniVersion: "1.1.0",
    interfaces: [
      { name: "flock1a2b3c4d", mac: "02:00:00:00:00:01" },
      { name: "eth0", mac: "02:00:00:00:00:02", sandbox: "/var/run/netns/cni-1", mtu: 1450 },
    ],
    ips: [
      { address: "fd00::5/128", gateway: "fe80::1", interface: 1 },
      { address: "10.0.0.5/32", gateway: "169.254.1.1", interface: 1 },
    ],
    routes: [{ dst: "::/0", gw: "fe80::1" }, { dst: "0.0.0.0/0", gw: "169.254.1.1" }],
  });
});

Deno.test("buildAddResult: 1.0.0 has no mtu and no ip version", () => {
  const result = buildAddResult({ ...BASE, cniVersion: "1.0.0", ipv6: "fd00::5" });
  const interfaces = result.interfaces as Record<string, unknown>[];
  assert.equal("mtu" in interfaces[1], false);
  assert.deepEqual(result.ips, [{ address: "fd00::5/128", gateway: "fe80::1", interface: 1 }]);
  assert.deepEqual(result.routes, [{ dst: "::/0", gw: "fe80::1" }]);
});

Deno.test("buildAddResult: 0.3.x/0.4.0 results carry ips[].version", () => {
  for (const cniVersion of ["0.3.0", "0.3.1", "0.4.0"]) {
    const result = buildAddResult({ ...BASE, cniVersion, ipv6: "fd00::5", ipv4: "10.0.0.5" });
    assert.equal(result.cniVersion, cniVersion);
    assert.deepEqual((result.ips as { version: string }[]).map((ip) => ip.version), ["6", "4"]);
    assert.equal("mtu" in (result.interfaces as Record<string, unknown>[])[1], false);
  }
});

Deno.test("buildAddResult: IPv4-only, null families and prefixed input", () => {
  const result = buildAddResult({
    ...BASE,
    cniVersion: "1.0.0",
    ipv6: null,
    ipv4: "10.0.0.5/24",
  });
  assert.deepEqual(result.ips, [{ address: "10.0.0.5/32", gateway: "169.254.1.1", interface: 1 }]);
  assert.deepEqual(result.routes, [{ dst: "0.0.0.0/0", gw: "169.254.1.1" }]);
  const none = buildAddResult({ ...BASE, cniVersion: "1.0.0" });
  assert.deepEqual(none.ips, []);
  assert.deepEqual(none.routes, []);
});

Deno.test("parsePrevResult: reads a full result back", () => {
  const prevResult = buildAddResult({ ...BASE, cniVersion: "1.0.0", ipv6: "fd00::5" });
  assert.deepEqual(parsePrevResult({ prevResult }), {
    ips: [{ address: "fd00::5/128", gateway: "fe80::1", interface: 1 }],
    interfaces: [
      { name: "flock1a2b3c4d", mac: "02:00:00:00:00:01" },
      { name: "eth0", mac: "02:00:00:00:00:02", sandbox: "/var/run/netns/cni-1" },
    ],
  });
});

Deno.test("parsePrevResult: tolerant of missing and partial prevResults", () => {
  assert.equal(parsePrevResult({}), undefined);
  assert.equal(parsePrevResult({ prevResult: null }), undefined);
  assert.equal(parsePrevResult({ prevResult: "x" }), undefined);
  assert.equal(parsePrevResult({ prevResult: [] }), undefined);
  assert.deepEqual(parsePrevResult({ prevResult: {} }), { ips: [], interfaces: [] });
  assert.deepEqual(
    parsePrevResult({
      prevResult: {
        ips: [null, 3, { address: 5 }, { address: "10.0.0.1/32", interface: "1", gateway: 7 }],
        interfaces: { name: "eth0" },
      },
    }),
    { ips: [{ address: "10.0.0.1/32" }], interfaces: [] },
  );
});
