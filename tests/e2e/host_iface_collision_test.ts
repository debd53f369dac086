/**
 * Two containers whose IDs hash to the same host interface name (BRIEF §2's FNV-1a-32, 32 bits:
 * about one pair in 8,600 nodes of 1,000 pods). Before, the second ADD took the first pod's
 * veth for a stale one of its own and deleted it. Now the second pod gets another name, each
 * record keeps its own, and nothing of one pod touches the other: ADD, DEL, a DEL of a
 * container that never got a record, CHECK and an agent restart.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { addLivePod, assertNodeHolds, storeRecords } from "../helpers/node_state.ts";
import { hostIfaceName } from "../../agent/datapath.ts";

// Found by brute force: fnv1a32 of each pair is equal (0x91061e8b, 0x90061cf8).
const FIRST = "collide462789";
const SECOND = "collide679192";
const GHOST = "collide679193";
const GHOST_TWIN = "collide462788";

Deno.test({
  name:
    "host interface names: colliding container IDs get distinct veths and never touch each other",
  ...ROOT_ONLY,
  async fn() {
    assert.equal(hostIfaceName(FIRST), hostIfaceName(SECOND), "the IDs collide");
    assert.equal(hostIfaceName(GHOST), hostIfaceName(GHOST_TWIN), "the IDs collide");
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:c0::/64", cidr4: "10.192.0.0/24" },
    });
    await using nsA = await TestNamespace.create("flk-hca");
    await using nsB = await TestNamespace.create("flk-hcb");
    await using nsC = await TestNamespace.create("flk-hcc");

    const first = await addLivePod(node, FIRST, nsA.path);
    const second = await addLivePod(node, SECOND, nsB.path);
    const ifaces = new Map(storeRecords(node).map((r) => [r.containerId, r.hostIface]));
    assert.equal(ifaces.get(FIRST), hostIfaceName(FIRST), "the first keeps the plain name");
    assert.notEqual(ifaces.get(SECOND), ifaces.get(FIRST), "the second gets another name");
    assert.match(ifaces.get(SECOND)!, /^flock[0-9a-f]{8}$/);
    await assertNodeHolds(node, [first, second], "both pods on the network");
    for (const ip of second.ips) assert.ok(await ping(nsA, ip), `first → second ${ip}`);
    for (const ip of first.ips) assert.ok(await ping(nsB, ip), `second → first ${ip}`);

    const check = await node.cni("CHECK", { containerId: SECOND, netns: nsB.path });
    assert.equal(check.code, 0, check.stdout);

    // A DEL of a container that never got a record, whose name is the first pod's.
    assert.equal(hostIfaceName(GHOST_TWIN), hostIfaceName(GHOST));
    const stranger = await addLivePod(node, GHOST_TWIN, nsC.path);
    const strangerDel = await node.cni("DEL", { containerId: GHOST, netns: nsC.path });
    assert.equal(strangerDel.code, 0, strangerDel.stdout);
    await assertNodeHolds(node, [first, second, stranger], "a DEL without record left them");

    // The agent restarts: every veth has its record, so none is an orphan.
    await node.restartAgent();
    await assertNodeHolds(node, [first, second, stranger], "after a restart");
    for (const ip of second.ips) assert.ok(await ping(nsA, ip), `first → second ${ip}`);

    // The second goes; the first stays on the network.
    assert.equal((await node.cni("DEL", { containerId: SECOND, netns: nsB.path })).code, 0);
    await assertNodeHolds(node, [first, stranger], "after the second's DEL");
    for (const ip of first.ips) assert.ok(await ping(nsC, ip), `stranger → first ${ip}`);
    for (const pod of [FIRST, GHOST_TWIN]) {
      const ns = pod === FIRST ? nsA : nsC;
      assert.equal((await node.cni("DEL", { containerId: pod, netns: ns.path })).code, 0);
    }
    await assertNodeHolds(node, [], "all gone");
  },
});
