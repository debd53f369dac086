import assert from "node:assert/strict";
import { buildStatusSnapshot, type StatusSources } from "./status_snapshot.ts";

const base: StatusSources = {
  nodeName: "node-a",
  version: "0.1.0",
  startedAt: 0,
  ready: true,
  hooks: {},
  now: () => 1_000,
};

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
