/**
 * The pod lifecycle under retries, odd runtimes and concurrency, through the real plugin and
 * agent: what an operator sees (store records, links, routes, reachability) once the dust settles.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import {
  addLivePod,
  assertNodeHolds,
  podAddresses,
  resultIps,
  storeRecords,
} from "../helpers/node_state.ts";

Deno.test({
  name: "ADD retried into another netns: the pod lives there, a restart's repair keeps it there",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:dc::/64", cidr4: "10.221.0.0/24" },
    });
    await using peer = await TestNamespace.create("flk-lhp");
    await using first = await TestNamespace.create("flk-lha");
    await using second = await TestNamespace.create("flk-lhb");
    const peerPod = await addLivePod(node, "peer", peer.path);

    assert.equal((await node.cni("ADD", { containerId: "moved", netns: first.path })).code, 0);
    // The runtime retries the ADD with a new sandbox netns (same container ID and ifname).
    const retry = await node.cni("ADD", { containerId: "moved", netns: second.path });
    assert.equal(retry.code, 0, retry.stdout);
    const ips = resultIps(retry.json);
    for (const ip of ips) assert.ok(await ping(peer, ip), `peer → ${ip} after the retry`);

    // A host route lost, then an agent restart: the repair must remake the pod where it lives.
    const v6 = ips.find((ip) => ip.includes(":"))!;
    await node.ns.ip(["-6", "route", "del", `${v6}/128`]);
    await node.restartAgent();
    for (const ip of ips) assert.ok(await ping(peer, ip), `peer → ${ip} after the restart`);
    assert.deepEqual((await podAddresses(second)).sort(), [...ips].sort(), "the pod's eth0");
    assert.deepEqual(await podAddresses(first), [], "the abandoned netns has no flock interface");
    await assertNodeHolds(node, [peerPod, { containerId: "moved", ips }]);
    assert.equal(
      storeRecords(node).find((r) => r.containerId === "moved")?.netns,
      second.path,
      "the record names the netns the pod lives in",
    );
  },
});
