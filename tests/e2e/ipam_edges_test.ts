/**
 * IPAM at its edges with a real agent: cooling addresses across restarts and CIDR changes.
 */

import assert from "node:assert/strict";
import { FlockNode, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";

/** The network config fields that pass pod annotations as the CRI does. */
function annotated(annotations: Record<string, string>): Record<string, unknown> {
  return { runtimeConfig: { "io.kubernetes.cri.pod-annotations": annotations } };
}

Deno.test({
  name: "CIDR shrink: a cooling address that is the new broadcast address does not stop the agent",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr4: "10.73.0.0/24" },
      cooldownMs: 120_000,
    });
    await using pod = await TestNamespace.create("flk-ipe");
    // 10.73.0.127 is usable in the /24 and is the broadcast address of 10.73.0.0/25.
    const add = await node.cni("ADD", {
      containerId: "edge-127",
      netns: pod.path,
      extraConfig: annotated({ "flock.fritzlab.net/ipv4": "10.73.0.127" }),
    });
    assert.equal(add.code, 0, add.stdout);
    const del = await node.cni("DEL", { containerId: "edge-127", netns: pod.path });
    assert.equal(del.code, 0, del.stdout);
    await node.settled();

    await node.kill("SIGTERM");
    await node.writeConfig({ cidr4: "10.73.0.0/25" });
    await node.startAgent({ waitReady: false });
    await node.waitReady(10_000).catch(async (e) => {
      throw new Error(`${(e as Error).message}\n${await node.agentLog()}`);
    });
    const again = await node.cni("ADD", { containerId: "after-shrink", netns: pod.path });
    assert.equal(again.code, 0, again.stdout);
    assert.equal(again.json.ips[0].address, "10.73.0.1/32");
  },
});
