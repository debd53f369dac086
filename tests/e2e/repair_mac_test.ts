/**
 * A pod's veth rebuilt by a repair keeps its MAC addresses (derived from the attachment,
 * agent/veth_mac.ts): the runtime's cached ADD result still matches, so CHECK with it passes
 * (CHECK compares MACs since d635358), and the pod and the node keep talking. Before, a rebuilt
 * pair got new random MACs and CHECK with the cached result answered 101.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { resultIps } from "../helpers/node_state.ts";

interface ResultInterface {
  name: string;
  mac: string;
}

/** The MACs `ip link` shows for the host end on the node and the pod's eth0. */
async function kernelMacs(
  node: FlockNode,
  podNs: TestNamespace,
  hostIface: string,
): Promise<{ host: string; pod: string }> {
  const [host] = await node.ns.ipJson<{ address: string }[]>(["link", "show", "dev", hostIface]);
  const [pod] = await podNs.ipJson<{ address: string }[]>(["link", "show", "dev", "eth0"]);
  return { host: host.address, pod: pod.address };
}

Deno.test({
  name: "repair: a veth deleted by hand comes back with its MACs; CHECK with the old result passes",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:6e::/64", cidr4: "10.110.0.0/24" },
    });
    await using nsA = await TestNamespace.create("flk-rma");
    await using nsB = await TestNamespace.create("flk-rmb");
    const addA = await node.cni("ADD", { containerId: "rm-a", netns: nsA.path });
    assert.equal(addA.code, 0, addA.stdout);
    const addB = await node.cni("ADD", { containerId: "rm-b", netns: nsB.path });
    assert.equal(addB.code, 0, addB.stdout);
    const [hostA, podA] = addA.json.interfaces as ResultInterface[];
    const [hostB, podB] = addB.json.interfaces as ResultInterface[];
    const original = { host: hostA.mac, pod: podA.mac };
    assert.deepEqual(
      await kernelMacs(node, nsA, hostA.name),
      original,
      "the result is the kernel's",
    );
    assert.equal(new Set([hostA.mac, podA.mac, hostB.mac, podB.mac]).size, 4, "no MAC twice");
    const checkA = () =>
      node.cni("CHECK", {
        containerId: "rm-a",
        netns: nsA.path,
        extraConfig: { prevResult: addA.json },
      });

    // The start-up repair: the veth (both ends) deleted while the agent is down.
    await node.kill("SIGKILL");
    await node.ns.ip(["link", "del", hostA.name]);
    await node.startAgent();
    assert.deepEqual(await kernelMacs(node, nsA, hostA.name), original, "after the repair");
    const afterRepair = await checkA();
    assert.equal(
      afterRepair.code,
      0,
      `CHECK with the original ADD's result: ${afterRepair.stdout}`,
    );
    for (const ip of resultIps(addA.json)) assert.ok(await ping(nsB, ip), `B → repaired A ${ip}`);

    // A runtime's retried ADD rebuilds a veth deleted under a running agent the same way.
    await node.ns.ip(["link", "del", hostA.name]);
    const again = await node.cni("ADD", { containerId: "rm-a", netns: nsA.path });
    assert.equal(again.code, 0, again.stdout);
    const [hostAgain, podAgain] = again.json.interfaces as ResultInterface[];
    assert.deepEqual({ host: hostAgain.mac, pod: podAgain.mac }, original, "the retried ADD's");
    assert.deepEqual(await kernelMacs(node, nsA, hostA.name), original, "after the retried ADD");
    assert.equal((await checkA()).code, 0, "CHECK with the first ADD's result");
    for (const ip of resultIps(addA.json)) assert.ok(await ping(nsB, ip), `B → rebuilt A ${ip}`);

    for (const [id, ns] of [["rm-a", nsA], ["rm-b", nsB]] as const) {
      assert.equal((await node.cni("DEL", { containerId: id, netns: ns.path })).code, 0);
    }
    assert.deepEqual(await node.flockLinks(), []);
  },
});
