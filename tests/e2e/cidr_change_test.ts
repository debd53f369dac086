/**
 * A node moved to other CIDRs keeps announcing the old summaries while pods still hold addresses
 * in them (other nodes keep reaching those pods), and drops each one with its last pod.
 */

import assert from "node:assert/strict";
import { FlockNode, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";

async function blackholes(node: FlockNode): Promise<string[]> {
  return (await node.flockRoutes(true)).filter((r) => r.type === "blackhole").map((r) => r.dst)
    .sort();
}

Deno.test({
  name: "CIDR change: the old summaries stay while pods hold addresses in them",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:c1::/64", cidr4: "10.71.0.0/24" },
    });
    await using pod = await TestNamespace.create("flk-cidr");
    const add = await node.cni("ADD", { containerId: "old-range", netns: pod.path });
    assert.equal(add.code, 0, add.stdout);
    assert.deepEqual(await blackholes(node), ["10.71.0.0/24", "fd00:c1::/64"]);

    await node.kill("SIGTERM");
    await node.writeConfig({ cidr6: "fd00:c2::/64", cidr4: "10.72.0.0/24" });
    await node.startAgent();
    assert.deepEqual(await blackholes(node), [
      "10.71.0.0/24",
      "10.72.0.0/24",
      "fd00:c1::/64",
      "fd00:c2::/64",
    ]);
    // The pod keeps its addresses and host routes.
    assert.equal((await node.flockLinks()).length, 1);
    assert.equal((await node.flockRoutes()).filter((r) => !r.dst.startsWith("169.254")).length, 2);

    const del = await node.cni("DEL", { containerId: "old-range", netns: pod.path });
    assert.equal(del.code, 0, del.stdout);
    assert.deepEqual(await blackholes(node), ["10.72.0.0/24", "fd00:c2::/64"]);
  },
});
