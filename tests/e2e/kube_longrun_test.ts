/**
 * Cluster mode over time, against a real kube-apiserver 1.34: what an operator does to a
 * NodeConfig after the node runs (a bad edit and its revert), and what the status says then.
 */

import assert from "node:assert/strict";
import { type KubeCluster, startKubeWithFlock } from "../helpers/kube.ts";
import { FlockNode } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { eventually } from "../helpers/eventually.ts";

const NODE = "flk-kube-long";

async function nodeConfigObject(kube: KubeCluster, name: string) {
  return JSON.parse(await kube.kubectlOk(["get", "nodeconfig", name, "-o", "json"]));
}

async function patchSpec(kube: KubeCluster, spec: Record<string, unknown>): Promise<void> {
  await kube.kubectlOk([
    "patch",
    "nodeconfig",
    NODE,
    "--type=merge",
    "-p",
    JSON.stringify({ spec }),
  ]);
}

function readyCondition(status: { conditions?: { type: string; reason: string }[] }) {
  return status.conditions?.find((c) => c.type === "Ready");
}

Deno.test({
  name: "kube longrun: a rejected spec change reverted by the operator clears the rejection",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using kube = await startKubeWithFlock();
    await kube.apply({
      apiVersion: "flock.fritzlab.net/v1alpha1",
      kind: "NodeConfig",
      metadata: { name: NODE },
      spec: { cidr6: "fd00:4e::/64" },
    });
    const kubeconfig = await kube.kubeconfigFor(await kube.tokenFor("kube-system", "flock"));
    await using node = await FlockNode.start({
      name: NODE,
      config: { cidr6: "fd00:dead::/64" },
      kubeconfig,
    });
    try {
      await eventually(
        "the NodeConfig applied",
        async () => (await nodeConfigObject(kube, NODE)).status,
        (s) => s?.ready === true && s?.observedGeneration === 1,
      );
      // A bad edit the CRD schema lets through: an anycast range inside the node's own CIDR.
      await patchSpec(kube, { anycastCIDRs: ["fd00:4e::/120"] });
      const rejected = await eventually(
        "the rejection in status",
        async () => (await nodeConfigObject(kube, NODE)).status,
        (s) => readyCondition(s)?.reason === "SpecChangeRejected",
      );
      assert.match(rejected.reason, /anycastCIDRs\[0\].*overlaps cidr6/);
      // The operator reverts the edit: the spec in force is the spec asked for again.
      await patchSpec(kube, { anycastCIDRs: null });
      const reverted = await eventually(
        "the revert in status",
        async () => (await nodeConfigObject(kube, NODE)).status,
        (s) => s?.observedGeneration === 3 && readyCondition(s)?.reason !== "SpecChangeRejected",
        10_000,
      );
      assert.equal(reverted.reason, "");
      assert.equal(readyCondition(reverted)?.reason, "Serving");
      assert.equal((await node.cni("STATUS")).code, 0);
    } catch (e) {
      console.error(await node.agentLog());
      throw e;
    }
  },
});
