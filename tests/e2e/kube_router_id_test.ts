/**
 * BGP router-id collisions in cluster mode, against a real kube-apiserver (etcd, TLS, RBAC): two
 * node namespaces, each with BIRD and an agent authenticated as deploy/'s ServiceAccount, whose
 * NodeConfigs set the same `spec.bgp.routerID`.
 *
 * - each agent publishes its router id in `status.bgp`; each sees the other's and sets
 *   `RouterIDUnique` False (reason `RouterIDConflict`) naming the other node and the id, logs one
 *   error line, and `flock status --json` names the other node;
 * - one NodeConfig gets another routerID: both conditions turn True, the log says it ended;
 * - a node whose Node object is gone (removed from the cluster) no longer counts: its NodeConfig
 *   may still publish the id, but the remaining node says RouterIDUnique.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { eventually } from "../helpers/eventually.ts";
import { flockStatusJson } from "../helpers/status_probe.ts";
import { type BgpLabNode, type BgpNodePlan, startBgpNode } from "../helpers/bgp_lab.ts";
import { Fabric } from "../helpers/fabric.ts";
import { type KubeCluster, startKubeWithFlock } from "../helpers/kube.ts";
import type { NodeConfigStatus } from "../../agent/kube/status_reporter.ts";

/** Bound of every wait for the agents to see each other's status. */
const WAIT_MS = 30_000;
const SHARED_ID = "192.0.2.77";

function plan(i: number, routerID: string): BgpNodePlan {
  return {
    name: `flk-rid-${i}`,
    ipv4: `10.0.0.${10 + i}`,
    ipv6: `fd00:a::${10 + i}`,
    spec: { cidr6: `fd00:51:${i}::/64`, bgp: { asn: 64512, routerID } },
  };
}

function nodeConfig(p: BgpNodePlan) {
  return {
    apiVersion: "flock.fritzlab.net/v1alpha1",
    kind: "NodeConfig",
    metadata: { name: p.name },
    spec: p.spec,
  };
}

/** The node's Node object, as kubelet registers it. */
function nodeObject(p: BgpNodePlan) {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: p.name },
    status: {
      addresses: [p.ipv4!, p.ipv6].map((address) => ({ type: "InternalIP", address })),
    },
  };
}

/** What an operator reads of the router id: `status.bgp` and the `RouterIDUnique` condition. */
async function routerIdStatus(kube: KubeCluster, name: string) {
  const obj = JSON.parse(await kube.kubectlOk(["get", "nodeconfig", name, "-o", "json"]));
  const status = (obj.status ?? {}) as Partial<NodeConfigStatus>;
  return {
    bgp: status.bgp,
    unique: status.conditions?.find((c) => c.type === "RouterIDUnique"),
  };
}

Deno.test({
  name: "kube router id: nodes sharing a BGP router id are told so, and it clears",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using cleanup = new AsyncDisposableStack();
    const kube = cleanup.use(await startKubeWithFlock());
    const fabric = cleanup.use(await Fabric.start());
    const plans = [plan(1, SHARED_ID), plan(2, SHARED_ID)];
    await kube.apply([...plans.map(nodeConfig), ...plans.map(nodeObject)]);
    const kubeconfig = await kube.kubeconfigFor(await kube.tokenFor("kube-system", "flock"));
    const nodes: BgpLabNode[] = [];
    for (const p of plans) nodes.push(await startBgpNode(fabric, p, cleanup, { kubeconfig }));
    const step = async (name: string, fn: () => Promise<void>) => {
      if (!await t.step(name, fn)) throw new Error(`step failed: ${name}`);
    };
    try {
      await step("both NodeConfigs say RouterIDConflict, naming each other", async () => {
        for (const [i, n] of nodes.entries()) {
          const other = nodes[1 - i].plan.name;
          const s = await eventually(
            `${n.plan.name}: RouterIDUnique False`,
            () => routerIdStatus(kube, n.plan.name),
            (s) => s.unique?.status === "False",
            WAIT_MS,
          );
          assert.deepEqual(s.bgp, { routerID: SHARED_ID, routerIDSource: "bgp.routerID" });
          assert.equal(s.unique!.reason, "RouterIDConflict");
          assert.match(s.unique!.message, new RegExp(`${SHARED_ID}.*used by node ${other}\\b`));
          assert.match(s.unique!.message, /spec\.bgp\.routerID/);
          const bgp = (await flockStatusJson(n.flock)).bgp;
          assert.deepEqual([bgp.routerId, bgp.routerIdConflicts], [SHARED_ID, [other]]);
          const log = await n.flock.agentLog();
          assert.equal(log.match(/BGP router id used by other nodes too/g)?.length, 1, log);
        }
      });

      await step("a new routerID on one node clears both conditions", async () => {
        const moved = {
          ...plans[1],
          spec: { ...plans[1].spec, bgp: { asn: 64512, routerID: "192.0.2.78" } },
        };
        await kube.apply(nodeConfig(moved));
        for (const n of nodes) {
          const s = await eventually(
            `${n.plan.name}: RouterIDUnique True`,
            () => routerIdStatus(kube, n.plan.name),
            (s) => s.unique?.status === "True",
            WAIT_MS,
          );
          assert.equal(s.unique!.reason, "RouterIDUnique");
          assert.equal((await flockStatusJson(n.flock)).bgp.routerIdConflicts, undefined);
          assert.match(await n.flock.agentLog(), /BGP router id conflict resolved/);
        }
        assert.deepEqual((await routerIdStatus(kube, nodes[1].plan.name)).bgp, {
          routerID: "192.0.2.78",
          routerIDSource: "bgp.routerID",
        });
      });

      await step("a removed node's NodeConfig no longer counts", async () => {
        const [kept, removed] = nodes;
        await kube.kubectlOk(["delete", "node", removed.plan.name]);
        // The removed node's agent still runs here and publishes the shared id again.
        await kube.apply(nodeConfig(plans[1]));
        await eventually(
          `${removed.plan.name} publishes ${SHARED_ID} again`,
          () => routerIdStatus(kube, removed.plan.name),
          (s) => s.bgp?.routerID === SHARED_ID && s.unique?.status === "False",
          WAIT_MS,
        );
        // The kept node has seen that status (both agents watch every NodeConfig); give its
        // check a moment, then it must still be unique.
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        const s = await routerIdStatus(kube, kept.plan.name);
        assert.equal(s.unique?.status, "True", JSON.stringify(s.unique));
        assert.equal((await flockStatusJson(kept.flock)).bgp.routerIdConflicts, undefined);
      });
    } catch (err) {
      for (const n of nodes) {
        console.error(`--- ${n.plan.name} agent log\n${(await n.flock.agentLog()).slice(-3000)}`);
      }
      throw err;
    }
  },
});
