/**
 * deploy/node-policy.yaml on a real kube-apiserver 1.34: flock's ServiceAccount, with a token
 * bound to a Pod on node A (as the kubelet mounts it), can write NodeConfig A's status and is
 * refused with the policy's message for NodeConfig B; a token that names no node is refused too;
 * other users are left alone. Then the real agent (agent/kube/*, its TokenRequest token bound
 * to a pod on its node) keeps its own NodeConfig status current with the policy installed.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type KubeCluster, startKubeWithFlock } from "../helpers/kube.ts";
import { NODE_NAME_EXTRA, nodeBoundToken } from "../helpers/kube_node_token.ts";
import { FlockNode } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { REPO_ROOT } from "../helpers/tools.ts";
import { eventually } from "../helpers/eventually.ts";

const NAMESPACE = "kube-system";
const SERVICE_ACCOUNT = "flock";
const NODE_A = "flk-np-a";
const NODE_B = "flk-np-b";

function nodeConfig(name: string, cidr6: string): Record<string, unknown> {
  return {
    apiVersion: "flock.fritzlab.net/v1alpha1",
    kind: "NodeConfig",
    metadata: { name },
    spec: { cidr6 },
  };
}

/**
 * Merge-patches NodeConfig `name`'s status as the agent does (one PATCH, no GET first), with
 * bearer `token` (the admin's if none). Returns the HTTP status and the server's message.
 */
async function patchStatus(kube: KubeCluster, name: string, status: object, token?: string) {
  const res = await kube.fetch(`/apis/flock.fritzlab.net/v1alpha1/nodeconfigs/${name}/status`, {
    method: "PATCH",
    headers: {
      "content-type": "application/merge-patch+json",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify({ status }),
  });
  const body = await res.json();
  return { code: res.status, message: String(body.message ?? "") };
}

async function statusOf(kube: KubeCluster, name: string) {
  return JSON.parse(await kube.kubectlOk(["get", "nodeconfig", name, "-o", "json"])).status;
}

Deno.test({
  name: "node policy: flock's ServiceAccount writes only its own node's NodeConfig status",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using kube = await startKubeWithFlock();
    await kube.apply(await Deno.readTextFile(join(REPO_ROOT, "deploy/node-policy.yaml")));
    await kube.apply([nodeConfig(NODE_A, "fd00:6a::/64"), nodeConfig(NODE_B, "fd00:6b::/64")]);
    const asA = await nodeBoundToken(kube, NAMESPACE, SERVICE_ACCOUNT, NODE_A);
    const unbound = await kube.tokenFor(NAMESPACE, SERVICE_ACCOUNT);

    await t.step("a pod-bound token carries its pod's node in the user info", async () => {
      const whoami = JSON.parse(
        await kube.kubectlOk(["auth", "whoami", "-o", "json"], {
          kubeconfig: await kube.kubeconfigFor(asA),
        }),
      );
      const user = whoami.status.userInfo;
      assert.equal(user.username, `system:serviceaccount:${NAMESPACE}:${SERVICE_ACCOUNT}`);
      assert.deepEqual(user.extra[NODE_NAME_EXTRA], [NODE_A]);
      const plain = JSON.parse(
        await kube.kubectlOk(["auth", "whoami", "-o", "json"], {
          kubeconfig: await kube.kubeconfigFor(unbound),
        }),
      );
      assert.equal(plain.status.userInfo.extra?.[NODE_NAME_EXTRA], undefined);
    });

    await t.step("another node's status is refused with the policy's message", async () => {
      // The API server loads a new policy within a second or so: wait until it refuses.
      const r = await eventually(
        "the policy to refuse node A's write of node B's status",
        () => patchStatus(kube, NODE_B, { ready: true, drainingCIDRs: ["fd00:6a::/64"] }, asA),
        (r) => r.code !== 200,
      );
      assert.equal(r.code, 403);
      assert.match(
        r.message,
        /ValidatingAdmissionPolicy 'flock-own-node-status'.*denied request: flock's ServiceAccount on node flk-np-a may write only the status of NodeConfig flk-np-a, not flk-np-b/,
      );
      assert.equal((await statusOf(kube, NODE_B))?.drainingCIDRs, undefined);
    });

    await t.step("its own node's status goes through", async () => {
      const r = await patchStatus(kube, NODE_A, { ready: true, reason: "" }, asA);
      assert.equal(r.code, 200, r.message);
      assert.equal((await statusOf(kube, NODE_A)).ready, true);
    });

    await t.step(
      "a token that names no node is refused, even for a node's own status",
      async () => {
        for (const name of [NODE_A, NODE_B]) {
          const r = await patchStatus(kube, name, { ready: false }, unbound);
          assert.equal(r.code, 403, `unbound token: ${r.message}`);
          assert.match(
            r.message,
            /denied request: flock's ServiceAccount may write NodeConfig status only with a token bound to a pod on a node; this token names no node/,
          );
        }
        assert.equal((await statusOf(kube, NODE_A)).ready, true);
      },
    );

    await t.step("other users are left alone", async () => {
      const r = await patchStatus(kube, NODE_B, { ready: false, reason: "set by an admin" });
      assert.equal(r.code, 200, r.message);
      assert.equal((await statusOf(kube, NODE_B)).reason, "set by an admin");
    });

    await t.step({
      name: "the real agent keeps its own status current with the policy installed",
      ...ROOT_ONLY,
      fn: async () => {
        const token = await nodeBoundToken(kube, NAMESPACE, SERVICE_ACCOUNT, NODE_B);
        // The admin left B `ready: false` with a reason above: only the agent's write clears it.
        await using _node = await FlockNode.start({
          name: NODE_B,
          config: { cidr6: "fd00:dead::/64" }, // unused in cluster mode: the API's NodeConfig wins
          kubeconfig: await kube.kubeconfigFor(token),
        });
        const status = await eventually(
          "the agent's status in NodeConfig B",
          () => statusOf(kube, NODE_B),
          (s) => s?.ready === true && s?.observedGeneration === 1,
          30_000,
        );
        assert.equal(status.reason, "");
        assert.ok(
          status.conditions.some((c: { type: string }) => c.type === "Ready"),
          JSON.stringify(status),
        );
      },
    });
  },
});
