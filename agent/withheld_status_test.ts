/**
 * What an operator sees of the withheld addresses (withheld.ts) and of the reconcile report's
 * problems: `flock status` (JSON and text) and the `/metrics` gauges, from a real store, without
 * a kernel (tests/e2e/withheld_observability_test.ts runs a real agent).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Store } from "./store.ts";
import { AgentMetrics } from "./agent_metrics.ts";
import { buildStatusSnapshot } from "./status_snapshot.ts";
import { renderStatus } from "./status_render.ts";
import type { ReconcileReport } from "./reconcile.ts";
import { freeUnroutedWithheld } from "./withheld.ts";
import { summarizeWithheld, WITHHELD_LISTED } from "./withheld_status.ts";
import type { Handle } from "../netlink/mod.ts";
import {
  BASE_STATUS_SOURCES as base,
  scrapeSample as sample,
} from "../tests/helpers/status_sources.ts";

/** Never asked: `routed` answers instead. */
const NO_NODE = undefined as unknown as Handle;

async function withStore(fn: (store: Store) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "flock-withheld-status-" });
  const store = Store.open(join(dir, "state"));
  try {
    await fn(store);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("summarizeWithheld: counts per family, lists the oldest WITHHELD_LISTED", () => {
  const withheld = Array.from({ length: 25 }, (_, i) => ({
    ip: i < 22 ? `fd00::${(i + 1).toString(16)}` : `10.0.0.${i}`,
    hostIface: "flockb",
    owner: "b/eth0",
    at: Date.UTC(2026, 0, 2) + i * 1_000,
  }));
  const s = summarizeWithheld(withheld);
  assert.equal(s.ipv6, 22);
  assert.equal(s.ipv4, 3);
  assert.equal(s.addresses.length, WITHHELD_LISTED);
  assert.deepEqual(s.addresses[0], {
    address: "fd00::1",
    hostIface: "flockb",
    owner: "b/eth0",
    since: "2026-01-02T00:00:00.000Z",
  });
  assert.deepEqual(summarizeWithheld([]), { ipv6: 0, ipv4: 0, addresses: [] });

  const text = renderStatus({
    ...{ node: "n", version: "v", ready: true, startedAt: "", uptimeSeconds: 0 },
    ...{ pools: [], attachments: [], anycast: [], anycastRoutes: 0 },
    bgp: { available: false, sessions: [] },
    store: { integrity: "ok" },
    withheld: s,
  });
  assert.match(text, /^Withheld addresses \(25\): still routed through another pod's host veth/m);
  assert.match(text, /^ {2}ADDRESS +HOST IFACE +OWNER +SINCE$/m);
  assert.match(text, /^ {2}fd00::1 +flockb +b\/eth0 +2026-01-02T00:00:00\.000Z$/m);
  assert.match(text, /^ {2}… and 5 more \(the oldest 20 are listed\)$/m);
});

Deno.test("withheld addresses: status and the gauge follow the store (withhold, give back)", () =>
  withStore(async (store) => {
    const status = () => buildStatusSnapshot({ ...base, store });
    const metrics = new AgentMetrics(status, 0, "0.1.0");
    const gauges = async () => {
      const scrape = await metrics.encode();
      return [
        sample(scrape, 'flock_withheld_addresses{family="ipv6"}'),
        sample(scrape, 'flock_withheld_addresses{family="ipv4"}'),
      ];
    };
    assert.deepEqual(await gauges(), [0, 0], "none withheld: both families say 0");
    assert.deepEqual((await status()).withheld, { ipv6: 0, ipv4: 0, addresses: [] });
    assert.doesNotMatch(renderStatus(await status()), /Withheld/, "no section when none");

    store.finishRelease("a", "eth0", [], Date.UTC(2026, 0, 2, 3, 4, 5), [
      { ip: "fd00::1", hostIface: "flockb", owner: "b/eth0" },
      { ip: "10.0.0.1", hostIface: "flockb", owner: "b/eth0" },
    ]);
    assert.deepEqual(await gauges(), [1, 1], "withheld: counted at the next scrape");
    const snap = await status();
    assert.deepEqual(snap.withheld?.addresses.map((a) => [a.address, a.hostIface, a.since]), [
      ["10.0.0.1", "flockb", "2026-01-02T03:04:05.000Z"],
      ["fd00::1", "flockb", "2026-01-02T03:04:05.000Z"],
    ]);
    const text = renderStatus(snap);
    assert.match(text, /^Withheld addresses \(2\)/m);
    assert.match(text, /^ {2}fd00::1 +flockb +b\/eth0 +2026-01-02T03:04:05\.000Z$/m);
    assert.doesNotMatch(text, /more \(the oldest/);

    // Given back (its route went): the gauge drops at once, nothing tracked by hand.
    freeUnroutedWithheld({ store, node: NO_NODE, now: 5_000, routed: () => false });
    assert.deepEqual(await gauges(), [0, 0], "given back");
    assert.doesNotMatch(renderStatus(await status()), /Withheld/);
  }));

Deno.test("flock_reconcile_problems and status follow the report a background retry edits", async () => {
  const report: ReconcileReport = {
    restored: 0,
    repaired: 0,
    released: 0,
    orphanLinks: 0,
    orphanRoutes: 0,
    anycastChanged: 0,
    problems: ["summary routes not installed: busy; retried in the background"],
    notes: ["removed orphan route fd00:7::/64: a summary route of a CIDR no longer configured"],
  };
  const status = () => buildStatusSnapshot({ ...base, reconcile: report });
  const metrics = new AgentMetrics(status, 0, "0.1.0");
  assert.equal(sample(await metrics.encode(), "flock_reconcile_problems"), 1, "notes not counted");
  assert.match(renderStatus(await status()), /^ {2}problem: summary routes not installed/m);
  assert.match(renderStatus(await status()), /^ {2}note: removed orphan route fd00:7::\/64/m);
  // What Agent's routing retry does once the routes go in.
  report.problems = report.problems.filter((p) => !p.startsWith("summary routes"));
  assert.equal(sample(await metrics.encode(), "flock_reconcile_problems"), 0);
  assert.doesNotMatch(renderStatus(await status()), /problem:/);
  const none = new AgentMetrics(() => buildStatusSnapshot(base), 0, "0.1.0");
  assert.equal(sample(await none.encode(), "flock_reconcile_problems"), 0, "before a reconcile");
});
