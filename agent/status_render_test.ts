import assert from "node:assert/strict";
import { formatDuration, formatUse, renderStatus, renderTable } from "./status_render.ts";
import type { StatusSnapshot } from "./status_snapshot.ts";

function snapshot(over: Partial<StatusSnapshot> = {}): StatusSnapshot {
  return {
    node: "node-a",
    version: "0.1.0",
    ready: true,
    startedAt: "2026-01-02T03:04:05.000Z",
    uptimeSeconds: 312,
    pools: [
      {
        family: "ipv6",
        cidr: "fd00:1::/64",
        allocated: 2,
        capacity: "18446744073709551614",
        cooling: 1,
      },
      { family: "ipv4", cidr: "10.1.0.0/24", allocated: 2, capacity: "254", cooling: 0 },
    ],
    attachments: [{
      namespace: "default",
      pod: "web-1",
      containerId: "0123456789abcdef0123",
      ifname: "eth0",
      state: "committed",
      hostIface: "flock1a2b3c4d",
      ipv6: "fd00:1::2",
      ipv4: "10.1.0.2",
      anycast: ["fd00:ffff::1"],
      createdAt: "2026-01-02T03:05:00.000Z",
    }],
    anycast: [{ address: "fd00:ffff::1", holders: 1 }],
    anycastRoutes: 1,
    bgp: {
      available: true,
      sessions: [{
        name: "tor1",
        peer: "fd00:a::1",
        asn: 65000,
        state: "Established",
        up: true,
        uptimeSeconds: 3725,
      }, {
        name: "tor2",
        peer: "fd00:a::2",
        asn: 65000,
        state: "Active",
        up: false,
        info: "Socket: Connection refused",
      }],
    },
    lastBirdReload: { at: "2026-01-02T03:04:06.000Z", ok: true, message: "Reconfigured" },
    store: { path: "/var/lib/flock/flock.db", integrity: "ok" },
    reconcile: {
      restored: 1,
      repaired: 0,
      released: 2,
      orphanLinks: 1,
      orphanRoutes: 0,
      problems: [],
    },
    ...over,
  };
}

Deno.test("status table: headline, pools with use, pods, anycast, BGP sessions, reload, store", () => {
  const text = renderStatus(snapshot());
  const lines = text.split("\n");
  assert.equal(lines[0], "flock 0.1.0 on node node-a: READY");
  assert.match(text, /agent up 5m12s/);
  assert.match(text, /^ {2}ipv4 +10\.1\.0\.0\/24 +2 +254 +0\.79% +0$/m);
  assert.match(text, /^ {2}ipv6 +fd00:1::\/64 +2 +18446744073709551614 +<0\.01% +1$/m);
  assert.match(
    text,
    /^ {2}default\/web-1 +0123456789ab +eth0 +flock1a2b3c4d +fd00:1::2 +10\.1\.0\.2 +fd00:ffff::1 +committed$/m,
  );
  assert.match(text, /^Anycast \(1 route\)$/m);
  assert.match(text, /^ {2}tor1 +fd00:a::1 +65000 +Established +1h02m/m);
  assert.match(text, /^ {2}tor2 +fd00:a::2 +65000 +Active +- +Socket: Connection refused$/m);
  assert.match(text, /^Last BIRD reload: 2026-01-02T03:04:06.000Z ok \(Reconfigured\)$/m);
  assert.match(text, /^Store: \/var\/lib\/flock\/flock.db \(integrity: ok\)$/m);
  assert.match(text, /1 restored, 0 repaired, 2 released, 1 orphan links and 0 orphan routes/);
  // Columns line up: every row of the pods table starts its IPV6 cell at the same offset.
  const header = lines.find((l) => l.includes("NAMESPACE/POD"))!;
  const row = lines.find((l) => l.includes("default/web-1"))!;
  assert.equal(header.indexOf("IPV6"), row.indexOf("fd00:1::2"));
});

Deno.test("status table: not ready says why; no BGP wired, no reload, no pods", () => {
  const text = renderStatus(snapshot({
    ready: false,
    reason: "waiting for the node configuration",
    pools: [],
    attachments: [],
    anycast: [],
    anycastRoutes: 0,
    bgp: { available: false, sessions: [] },
    lastBirdReload: undefined,
    reconcile: undefined,
  }));
  assert.match(
    text,
    /^flock 0.1.0 on node node-a: NOT READY: waiting for the node configuration$/m,
  );
  assert.match(text, /none \(no node configuration yet\)/);
  assert.match(text, /^Pods \(0\)\n {2}none$/m);
  assert.match(text, /not available \(BGP is not wired into this agent\)/);
  assert.match(text, /^Last BIRD reload: none$/m);
  const failed = renderStatus(snapshot({
    bgp: { available: true, sessions: [], error: "birdc: connection refused" },
    lastBirdReload: { at: "t", ok: false, message: "rejected: syntax error" },
  }));
  assert.match(failed, /cannot read them from BIRD: birdc: connection refused/);
  assert.match(failed, /^Last BIRD reload: t FAILED \(rejected: syntax error\)$/m);
});

Deno.test("status table: the router id, and other nodes sharing it", () => {
  const bgp = { available: true, sessions: [], routerId: "10.0.0.11" };
  const unique = renderStatus(snapshot({ bgp: { ...bgp, routerIdSource: "nodeInternalIP" } }));
  assert.match(unique, /^BGP sessions\n {2}router id 10\.0\.0\.11 \(from nodeInternalIP\)$/m);
  assert.doesNotMatch(unique, /CONFLICT/);
  const shared = renderStatus(snapshot({
    bgp: { ...bgp, routerIdSource: "bgp.routerID", routerIdConflicts: ["node-b", "node-c"] },
  }));
  assert.match(
    shared,
    /^ {2}CONFLICT: node node-b, node-c uses the same router id; set a unique spec\.bgp\.routerID$/m,
  );
});

Deno.test("status table: peers left without IPv6 routes are named in the BGP part", () => {
  const bgp = { available: true, sessions: [], routerId: "10.0.0.11" };
  assert.doesNotMatch(renderStatus(snapshot({ bgp })), /NO IPv6 ROUTES/);
  const text = renderStatus(
    snapshot({ bgp: { ...bgp, peersWithoutIpv6: ["10.0.0.1", "10.1.0.2"] } }),
  );
  assert.match(
    text,
    /^BGP sessions\n.*\n {2}NO IPv6 ROUTES to 10\.0\.0\.1, 10\.1\.0\.2: the node has no global IPv6 address/m,
  );
});

Deno.test("status table: single-hop IPv4 peers without an IPv4 link are named", () => {
  const bgp = { available: true, sessions: [], routerId: "10.0.0.11" };
  assert.doesNotMatch(renderStatus(snapshot({ bgp })), /NO IPv4 LINK/);
  const text = renderStatus(snapshot({ bgp: { ...bgp, peersWithoutIpv4Link: ["10.0.0.1"] } }));
  assert.match(
    text,
    /^ {2}NO IPv4 LINK to 10\.0\.0\.1: no interface has an IPv4 address in their subnet; /m,
  );
});

Deno.test("status table: IPv4 multihop peers of a node without an IPv4 address are named", () => {
  const bgp = { available: true, sessions: [], routerId: "10.0.0.11" };
  assert.doesNotMatch(renderStatus(snapshot({ bgp })), /NO IPv4 ADDRESS/);
  const text = renderStatus(
    snapshot({ bgp: { ...bgp, peersWithoutIpv4Address: ["10.1.0.2", "10.2.0.2"] } }),
  );
  assert.match(
    text,
    /^ {2}NO IPv4 ADDRESS for 10\.1\.0\.2, 10\.2\.0\.2: the node has no IPv4 address to reach /m,
  );
});

Deno.test("status table: each pod's CNI network, last column; '-' for a record without one", () => {
  const [web] = snapshot().attachments;
  const text = renderStatus(snapshot({
    attachments: [
      { ...web, network: "flock" },
      { ...web, containerId: "fedcba9876543210", pod: "old-0", network: undefined },
    ],
  }));
  const lines = text.split("\n");
  assert.match(
    text,
    /^ {2}default\/web-1 +0123456789ab +eth0 +flock1a2b3c4d +fd00:1::2 +10\.1\.0\.2 +fd00:ffff::1 +committed +flock$/m,
  );
  assert.match(text, /^ {2}default\/old-0 +fedcba987654 .* committed +-$/m);
  const header = lines.find((l) => l.includes("NAMESPACE/POD"))!;
  assert.match(header, /STATE +NETWORK$/);
  assert.equal(
    header.indexOf("NETWORK"),
    lines.find((l) => l.includes("web-1"))!.lastIndexOf("flock"),
  );
  // A snapshot from an agent before networks were kept has no such column at all.
  assert.doesNotMatch(renderStatus(snapshot()), /NETWORK/);
});

Deno.test("status table: the reconcile heading says what ran and when; problems before notes", () => {
  const base = snapshot().reconcile!;
  const reconfigure = renderStatus(snapshot({
    reconcile: {
      ...base,
      orphanRoutes: 1,
      trigger: "reconfigure",
      at: "2026-01-02T04:00:00.000Z",
      problems: ["c1: datapath repaired (host veth flock0001 down)"],
      notes: ["removed orphan route fd00:7::/64: a summary route of a CIDR no longer configured"],
    },
  }));
  const lines = reconfigure.split("\n");
  const heading = lines.findIndex((l) => l.startsWith("Reconfigure reconcile"));
  assert.match(lines[heading], /^Reconfigure reconcile \(2026-01-02T04:00:00\.000Z\): 1 restored/);
  assert.deepEqual(lines.slice(heading + 1, heading + 3), [
    "  problem: c1: datapath repaired (host veth flock0001 down)",
    "  note: removed orphan route fd00:7::/64: a summary route of a CIDR no longer configured",
  ]);
  assert.doesNotMatch(reconfigure, /Start-up reconcile/);

  const start = renderStatus(snapshot({
    reconcile: { ...base, trigger: "start-up", at: "2026-01-02T03:04:05.000Z" },
  }));
  assert.match(start, /^Start-up reconcile \(2026-01-02T03:04:05\.000Z\): 1 restored/m);
  assert.doesNotMatch(start, /problem:|note:/);
  // An agent older than these fields: the heading it always had, no notes.
  assert.match(renderStatus(snapshot()), /^Start-up reconcile: 1 restored/m);
});

Deno.test("status helpers: durations, use and tables", () => {
  assert.equal(formatDuration(0), "0s");
  assert.equal(formatDuration(59.9), "59s");
  assert.equal(formatDuration(61), "1m01s");
  assert.equal(formatDuration(3600 * 5 + 60 * 7), "5h07m");
  assert.equal(formatDuration(86400 * 2 + 3600 * 3), "2d03h");
  assert.equal(formatUse(0, "254"), "0%");
  assert.equal(formatUse(127, "254"), "50.0%");
  assert.equal(formatUse(1, "0"), "-");
  assert.deepEqual(renderTable(["A", "BB"], [["xyz", "1"]], ""), ["A    BB", "xyz  1"]);
});

Deno.test("status table: a NodeConfig change not in force is named under the headline", () => {
  const problem = "the spec of generation 2 is not applied (retried with backoff); the previous " +
    "spec stays in force: reconcile: the kernel gave no whole answer";
  const text = renderStatus(snapshot({ configProblem: problem }));
  assert.match(text, /: READY\n {2}NodeConfig: the spec of generation 2 is not applied/);
  assert.doesNotMatch(renderStatus(snapshot()), /NodeConfig:/);
});
