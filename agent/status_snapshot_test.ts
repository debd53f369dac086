import assert from "node:assert/strict";
import { buildStatusSnapshot } from "./status_snapshot.ts";
import { Store } from "./store.ts";
import { BASE_STATUS_SOURCES as base } from "../tests/helpers/status_sources.ts";

Deno.test("snapshot: bgp.routerIdConflicts names the nodes sharing the router id", async () => {
  const routerId = { id: "192.0.2.1", source: "bgp.routerID" } as const;
  const conflicts = () => ["node-b"];
  const shared = await buildStatusSnapshot({
    ...base,
    routerId,
    hooks: { routerIdConflicts: conflicts },
  });
  assert.deepEqual(shared.bgp, {
    routerId: "192.0.2.1",
    routerIdSource: "bgp.routerID",
    routerIdConflicts: ["node-b"],
    available: false,
    sessions: [],
  });
  const unique = await buildStatusSnapshot({
    ...base,
    routerId,
    hooks: { routerIdConflicts: () => [] },
  });
  assert.equal("routerIdConflicts" in unique.bgp, false);
  // Without BIRD there is no router id, so nothing to conflict with.
  const noBird = await buildStatusSnapshot({ ...base, hooks: { routerIdConflicts: conflicts } });
  assert.equal("routerIdConflicts" in noBird.bgp, false);
});

Deno.test("snapshot: each attachment carries its CNI network (absent on pre-schema-4 records)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-status-" });
  try {
    const store = Store.open(dir);
    const record = (containerId: string, network?: string) => ({
      containerId,
      ifname: "eth0",
      netns: "/run/netns/x",
      hostIface: `flock${containerId}`,
      anycast: [],
      ...(network ? { network } : {}),
    });
    store.insertPending(record("a", "pods-a"));
    store.insertPending(record("b"));
    const snap = await buildStatusSnapshot({ ...base, store });
    const byId = new Map(snap.attachments.map((a) => [a.containerId, a]));
    assert.equal(byId.get("a")?.network, "pods-a");
    assert.equal("network" in byId.get("b")!, false);
    store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("snapshot: configProblem comes from its hook, absent when the config asked for is in force", async () => {
  const failing = await buildStatusSnapshot({
    ...base,
    hooks: { configProblem: () => "the spec of generation 2 is not applied" },
  });
  assert.equal(failing.configProblem, "the spec of generation 2 is not applied");
  const fine = await buildStatusSnapshot({ ...base, hooks: { configProblem: () => undefined } });
  assert.equal("configProblem" in fine, false);
});
