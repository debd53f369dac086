import assert from "node:assert/strict";
import { buildAddResult, chainResult, parsePrevResult, readChainedResult } from "./cni_result.ts";
import { CniError } from "./protocol.ts";

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

/** What a plugin before flock (loopback, a first "main" plugin on net1) printed. */
const EARLIER = {
  cniVersion: "1.0.0",
  interfaces: [
    { name: "lo", mac: "00:00:00:00:00:00", sandbox: "/var/run/netns/cni-1" },
    { name: "net1", mac: "02:00:00:00:00:09", sandbox: "/var/run/netns/cni-1" },
  ],
  ips: [
    { address: "127.0.0.1/8", interface: 0 },
    { address: "192.168.77.5/24", gateway: "192.168.77.1", interface: 1 },
    { address: "198.51.100.7/32" },
  ],
  routes: [{ dst: "192.168.0.0/16", gw: "192.168.77.1" }],
  dns: { nameservers: ["192.0.2.53"] },
};

Deno.test("chainResult: prevResult's entries first, flock's after, its indexes moved past them", () => {
  const own = buildAddResult({ ...BASE, cniVersion: "1.0.0", ipv6: "fd00::5", ipv4: "10.0.0.5" });
  const prev = readChainedResult({ prevResult: structuredClone(EARLIER) });
  const merged = chainResult(prev, own);
  assert.deepEqual(merged, {
    cniVersion: "1.0.0",
    interfaces: [
      ...EARLIER.interfaces,
      { name: "flock1a2b3c4d", mac: "02:00:00:00:00:01" },
      { name: "eth0", mac: "02:00:00:00:00:02", sandbox: "/var/run/netns/cni-1" },
    ],
    ips: [
      ...EARLIER.ips,
      { address: "fd00::5/128", gateway: "fe80::1", interface: 3 },
      { address: "10.0.0.5/32", gateway: "169.254.1.1", interface: 3 },
    ],
    routes: [
      ...EARLIER.routes,
      { dst: "::/0", gw: "fe80::1" },
      { dst: "0.0.0.0/0", gw: "169.254.1.1" },
    ],
    dns: EARLIER.dns,
  });
  // What CHECK later reads back: flock's addresses on flock's pod interface.
  const back = parsePrevResult({ prevResult: merged })!;
  const onEth0 = back.ips.filter((ip) => back.interfaces[ip.interface ?? -1]?.name === "eth0");
  assert.deepEqual(onEth0.map((ip) => ip.address), ["fd00::5/128", "10.0.0.5/32"]);
});

Deno.test("chainResult: flock first (no prevResult) gives its own result unchanged", () => {
  const own = buildAddResult({ ...BASE, cniVersion: "1.1.0", ipv6: "fd00::5" });
  assert.equal(readChainedResult({}), undefined);
  assert.equal(readChainedResult({ prevResult: null }), undefined);
  assert.equal(chainResult(undefined, own), own);
  // An empty one (a plugin that produced nothing) adds nothing.
  assert.deepEqual(chainResult(readChainedResult({ prevResult: {} }), own), own);
});

Deno.test("chainResult: ips[].version fits the answer's version; only the Result's keys stay", () => {
  const legacy = buildAddResult({ ...BASE, cniVersion: "0.4.0", ipv4: "10.0.0.5" });
  const merged = chainResult({
    cniVersion: "0.4.0",
    interfaces: [{ name: "lo" }],
    ips: [{ address: "127.0.0.1/8", interface: 0 }, { address: "::1/128", version: "6" }],
    extra: { dropped: true },
  }, legacy);
  assert.deepEqual(merged.ips, [
    { address: "127.0.0.1/8", interface: 0, version: "4" },
    { address: "::1/128", version: "6" },
    { address: "10.0.0.5/32", gateway: "169.254.1.1", interface: 2, version: "4" },
  ]);
  assert.equal("extra" in merged, false);
  assert.equal("dns" in merged, false);
  // A 0.4.0-shaped prevResult answered as 1.0.0 loses the field 1.0.0 removed.
  const modern = buildAddResult({ ...BASE, cniVersion: "1.0.0", ipv4: "10.0.0.5" });
  const converted = chainResult({ ips: [{ address: "127.0.0.1/8", version: "4" }] }, modern);
  assert.deepEqual((converted.ips as unknown[])[0], { address: "127.0.0.1/8" });
  assert.equal(converted.cniVersion, "1.0.0");
});

Deno.test("readChainedResult: a prevResult flock could not print again is code 7, named", () => {
  const cases: [unknown, RegExp][] = [
    ["x", /expected an object/],
    [[], /expected an object/],
    [{ ips: {} }, /ips is not a list/],
    [{ ips: ["10.0.0.1/8"] }, /ips\[0\] is not an object/],
    [{ ips: [{ address: "x" }] }, /ips\[0\]\.address "x"/],
    [{ ips: [{ address: "10.0.0.1" }] }, /ips\[0\]\.address "10\.0\.0\.1"/],
    [{ ips: [{ address: "1/1" }] }, /ips\[0\]\.address/],
    [{ ips: [{ address: "10.0.0.1/8", interface: 0 }] }, /ips\[0\]\.interface 0 names no/],
    [{ interfaces: [{ name: "lo" }], ips: [{ address: "::1/128", interface: 1.5 }] }, /1\.5/],
    [{ interfaces: [{ mac: "00:00:00:00:00:00" }] }, /interfaces\[0\] has no name/],
    [{ routes: [{ dst: "default" }] }, /routes\[0\]\.dst "default"/],
    [{ dns: [] }, /dns is not an object/],
  ];
  for (const [prevResult, message] of cases) {
    assert.throws(
      () => readChainedResult({ prevResult }),
      (e) => e instanceof CniError && e.code === 7 && message.test(e.message),
      JSON.stringify(prevResult),
    );
  }
  assert.deepEqual(readChainedResult({ prevResult: EARLIER }), EARLIER);
});
