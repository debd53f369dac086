/**
 * Anycast holders whose host veth is down, through the real agent: the kernel refuses a path
 * through a device that is not up, so the node's anycast routes go over the holders that are up
 * (an address with none has no route, which BIRD withdraws), the other addresses keep being
 * synced, and a veth that comes up again is a path again within the host side repair's poll.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { eventually } from "../helpers/eventually.ts";
import { addLivePod, hostIfaceOf } from "../helpers/node_state.ts";
import { anycastNodeConfig, goingVia, routeDevsTo, sameList } from "../helpers/flock_route_devs.ts";

/** One resync round (10 s) and some slack. */
const ROUND_MS = 13_000;
/** The host side repair polls link notifications every 500 ms. */
const REPAIR_MS = 3_000;
/** A1: one holder (X). A2: two holders (Y, Z). */
const A1 = ["fd00:fff2::1", "10.255.72.1"];
const A2 = ["fd00:fff2::2", "10.255.72.2"];

Deno.test({
  name: "anycast e2e: down holders are left out (none up: no route), the other addresses stay " +
    "synced, and a holder coming up is a path again",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({ config: anycastNodeConfig(2) });
    await using nsX = await TestNamespace.create("flk-adx");
    await using nsY = await TestNamespace.create("flk-ady");
    await using nsZ = await TestNamespace.create("flk-adz");
    await using nsW = await TestNamespace.create("flk-adw");
    const holds = (a: string[]) => ({ "flock.fritzlab.net/anycast": a.join(",") });
    await addLivePod(node, "ad-x", nsX.path, holds(A1));
    await addLivePod(node, "ad-y", nsY.path, holds(A2));
    await addLivePod(node, "ad-z", nsZ.path, holds(A2));
    await addLivePod(node, "ad-w", nsW.path);
    const [x, y, z] = ["ad-x", "ad-y", "ad-z"].map((id) => hostIfaceOf(node, id));
    assert.deepEqual(await routeDevsTo(node, [...A1, ...A2]), [
      ...goingVia(A1, [x]),
      ...goingVia(A2, [y, z]),
    ]);

    // X (A1's only holder) and Y go down. Within a round A2 goes via Z alone and A1 has no route.
    await node.ns.ip(["link", "set", x, "down"]);
    await node.ns.ip(["link", "set", y, "down"]);
    await eventually(
      "A2 via Z only",
      () => routeDevsTo(node, [...A1, ...A2]),
      (have) => sameList(have, [...goingVia(A1, []), ...goingVia(A2, [z])]),
      ROUND_MS,
      100,
    );
    for (const a of A2) assert.ok(await ping(nsW, a), `W reaches ${a} (served by Z)`);
    for (const a of A1) assert.ok(!await ping(nsW, a), `nobody serves ${a}`);

    // Y up: the host side repair puts its path back without waiting for a round.
    await node.ns.ip(["link", "set", y, "up"]);
    await eventually(
      "A2 via Y and Z",
      () => routeDevsTo(node, A2),
      (have) => sameList(have, goingVia(A2, [y, z])),
      REPAIR_MS,
      50,
    );
    await node.ns.ip(["link", "set", x, "up"]);
    await eventually(
      "A1 via X",
      () => routeDevsTo(node, A1),
      (have) => sameList(have, goingVia(A1, [x])),
      REPAIR_MS,
      50,
    );
    for (const a of [...A1, ...A2]) assert.ok(await ping(nsW, a), `W reaches ${a}`);

    const log = await node.agentLog();
    assert.doesNotMatch(log, /anycast resync failed|anycast route sync failed/);
    assert.doesNotMatch(log, /"level":"error"/);
    for (const [id, ns] of [["ad-x", nsX], ["ad-y", nsY], ["ad-z", nsZ], ["ad-w", nsW]] as const) {
      const check = await node.cni("CHECK", { containerId: id, netns: ns.path });
      assert.equal(check.code, 0, `${id}: ${check.stdout}`);
      assert.equal((await node.cni("DEL", { containerId: id, netns: ns.path })).code, 0, id);
    }
    assert.deepEqual(await routeDevsTo(node, [...A1, ...A2]), [
      ...goingVia(A1, []),
      ...goingVia(A2, []),
    ]);
  },
});
