/**
 * Cluster mode (agent/kube/cluster.ts) against a real etcd + kube-apiserver while the objects it
 * follows are deleted and recreated under a running node; the agent side records what cluster
 * mode hands it (the routing layer's inputs), so each assertion is what BIRD would be given.
 *
 * - the node's own Node object deleted, then recreated (kubelet re-registers it): the router id
 *   input (the node's InternalIPs) and the mesh stay as they were: the node's addresses did not
 *   change, only an API object went away;
 * - its NodeConfig deleted: the node keeps running on its last config; recreated with another
 *   CIDR: applied, and the new object gets a status (Ready, observedGeneration 1);
 * - another node's Node deleted (kubelet registers it again within seconds): its mesh peer stays,
 *   so no BGP session is cut, and nothing changes when the Node comes back; its NodeConfig
 *   deleted for good: the peer is dropped once the grace is over (not at once, not never).
 */

import assert from "node:assert/strict";
import { type KubeCluster, startKubeWithFlock } from "../helpers/kube.ts";
import { eventually } from "../helpers/eventually.ts";
import { KubeApi } from "../../agent/kube/api.ts";
import { type ClusterAgent, ClusterMode } from "../../agent/kube/cluster.ts";
import type { NodeConfig } from "../../agent/config.ts";
import type { MeshPeer } from "../../agent/routing.ts";

const SELF = "churn-1";
const PEER = "churn-2";

function nodeConfig(name: string, cidr6: string) {
  return {
    apiVersion: "flock.fritzlab.net/v1alpha1",
    kind: "NodeConfig",
    metadata: { name },
    spec: { cidr6, bgp: { asn: 65000, nodeMesh: true } },
  };
}

/** A Node with InternalIPs, IPv4 listed first (as kubelet does on most dual-stack nodes). */
function node(name: string, ipv4: string, ipv6: string) {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name },
    status: {
      addresses: [{ type: "InternalIP", address: ipv4 }, { type: "InternalIP", address: ipv6 }],
    },
  };
}

/** The agent as cluster mode drives it: every input, in order. */
class RecordingAgent implements ClusterAgent {
  node: NodeConfig | undefined;
  readonly calls: string[] = [];
  addresses?: readonly string[];
  mesh?: MeshPeer[];
  get ready(): boolean {
    return this.node !== undefined;
  }
  configure(node: NodeConfig): void {
    this.node = node;
    this.calls.push(`configure ${node.spec.cidr6}`);
  }
  reconfigure(node: NodeConfig): Promise<void> {
    this.node = node;
    this.calls.push(`reconfigure ${node.spec.cidr6}`);
    return Promise.resolve();
  }
  waitingFor(): void {}
  stats() {
    return {
      ready: this.ready,
      notReadyReason: "",
      attachments: 0,
      ipv6: 0,
      ipv4: 0,
      outsideCIDR: 0,
    };
  }
  setMeshPeers(peers: MeshPeer[]): Promise<void> {
    this.mesh = peers;
    this.calls.push(`mesh ${peers.map((p) => `${p.name}@${p.address}`).join(",")}`);
    return Promise.resolve();
  }
  setNodeAddresses(addresses: readonly string[]): Promise<void> {
    this.addresses = addresses;
    this.calls.push(`addresses ${addresses.join(",")}`);
    return Promise.resolve();
  }
  log(): void {}
}

async function nodeConfigStatus(kube: KubeCluster, name: string) {
  const out = await kube.kubectlOk(["get", "nodeconfig", name, "-o", "json"]);
  return (JSON.parse(out).status ?? {}) as {
    observedGeneration?: number;
    conditions?: { type: string; status: string }[];
  };
}

/**
 * SELF's and PEER's NodeConfig and Node objects, and cluster mode started for SELF with a
 * recording agent (`graceMs`: how long a deleted peer is kept).
 */
async function startTwoNodes(kube: KubeCluster, graceMs?: number) {
  await kube.apply([
    nodeConfig(SELF, "fd00:1::/64"),
    nodeConfig(PEER, "fd00:2::/64"),
    node(SELF, "192.0.2.1", "2001:db8::1"),
    node(PEER, "192.0.2.2", "2001:db8::2"),
  ]);
  const agent = new RecordingAgent();
  const cluster = new ClusterMode({
    nodeName: SELF,
    api: new KubeApi({ kubeconfig: kube.adminKubeconfig }),
    namespace: "kube-system",
    statusIntervalMs: 0,
    deletedPeerGraceMs: graceMs,
    log: () => {},
  });
  cluster.start(agent, (e) => {
    throw e;
  });
  return { agent, cluster };
}

const settle = () => new Promise((r) => setTimeout(r, 2_000));

Deno.test({
  name: "cluster mode: own Node and NodeConfig deleted and recreated under a running node",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using kube = await startKubeWithFlock();
    const { agent, cluster } = await startTwoNodes(kube);
    try {
      await cluster.configured;
      await eventually(
        "the mesh",
        () => Promise.resolve(agent.calls),
        (c) => c.includes(`mesh ${PEER}@2001:db8::2`),
      );
      assert.deepEqual(agent.addresses, ["192.0.2.1", "2001:db8::1"]);
      const before = agent.calls.length;

      await step("own Node deleted: addresses and mesh unchanged", async () => {
        await kube.kubectlOk(["delete", "node", SELF]);
        await eventually(
          "the Node gone from the informer",
          () => Promise.resolve(cluster.nodes!.cache.get(SELF)),
          (v) => v === undefined,
        );
        await settle();
        assert.deepEqual(agent.calls.slice(before), []);
      });

      await step("own Node recreated: nothing to do", async () => {
        await kube.apply(node(SELF, "192.0.2.1", "2001:db8::1"));
        await eventually(
          "the Node back",
          () => Promise.resolve(cluster.nodes!.cache.get(SELF)),
          (v) => v !== undefined,
        );
        await settle();
        assert.deepEqual(agent.calls.slice(before), []);
      });

      await step("own Node recreated with a new address: followed", async () => {
        // Status is a subresource: kubelet writes addresses through it.
        await kube.kubectlOk([
          "patch",
          "node",
          SELF,
          "--subresource=status",
          "--type=merge",
          "-p",
          JSON.stringify({ status: node(SELF, "192.0.2.11", "2001:db8::1").status }),
        ]);
        await eventually(
          "the new addresses",
          () => Promise.resolve(agent.addresses?.join()),
          (v) => v === "192.0.2.11,2001:db8::1",
        );
      });

      await step("own NodeConfig deleted: the last config stays", async () => {
        const calls = agent.calls.length;
        await kube.kubectlOk(["delete", "nodeconfig", SELF]);
        await eventually(
          "the NodeConfig gone from the informer",
          () => Promise.resolve(cluster.configs.cache.get(SELF)),
          (v) => v === undefined,
        );
        await settle();
        assert.deepEqual(agent.calls.slice(calls), []);
        assert.equal(agent.node?.spec.cidr6, "fd00:1::/64");
      });

      await step(
        "own NodeConfig recreated with another CIDR: applied, status written",
        async () => {
          await kube.apply(nodeConfig(SELF, "fd00:11::/64"));
          await eventually(
            "the new CIDR",
            () => Promise.resolve(agent.node?.spec.cidr6),
            (v) => v === "fd00:11::/64",
          );
          const status = await eventually(
            "a status on the new object",
            () => nodeConfigStatus(kube, SELF),
            (s) => s.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true,
          );
          assert.equal(status.observedGeneration, 1);
        },
      );

      await step("recreated with the same spec: a status again", async () => {
        await kube.kubectlOk(["delete", "nodeconfig", SELF]);
        await eventually(
          "gone",
          () => Promise.resolve(cluster.configs.cache.get(SELF)),
          (v) => v === undefined,
        );
        await kube.apply(nodeConfig(SELF, "fd00:11::/64"));
        await eventually(
          "a status on the new object",
          () => nodeConfigStatus(kube, SELF),
          (s) => s.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true,
        );
      });
    } finally {
      await cluster.stop();
    }
  },
});

/** The grace the next test gives a deleted peer (the default is 60 s). */
const GRACE_MS = 3_000;

Deno.test({
  name: "cluster mode: another node's Node or NodeConfig deleted: its mesh peer kept for the grace",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using kube = await startKubeWithFlock();
    const { agent, cluster } = await startTwoNodes(kube, GRACE_MS);
    const meshCalls = () => agent.calls.filter((c) => c.startsWith("mesh"));
    try {
      await cluster.configured;
      await eventually(
        "the mesh",
        () => Promise.resolve(meshCalls()),
        (c) => c.includes(`mesh ${PEER}@2001:db8::2`),
      );
      const before = meshCalls().length;

      await step("the peer's Node deleted: still in the mesh", async () => {
        await kube.kubectlOk(["delete", "node", PEER]);
        await eventually(
          "the Node gone from the informer",
          () => Promise.resolve(cluster.nodes!.cache.get(PEER)),
          (v) => v === undefined,
        );
        await new Promise((r) => setTimeout(r, GRACE_MS / 2));
        assert.deepEqual(meshCalls().slice(before), []);
      });

      await step("the Node registered again: nothing changed, also after the grace", async () => {
        await kube.apply(node(PEER, "192.0.2.2", "2001:db8::2"));
        await eventually(
          "the Node back",
          () => Promise.resolve(cluster.nodes!.cache.get(PEER)),
          (v) => v !== undefined,
        );
        await new Promise((r) => setTimeout(r, GRACE_MS + 500));
        assert.deepEqual(meshCalls().slice(before), []);
      });

      await step(
        "the NodeConfig deleted for good: dropped after the grace, not before",
        async () => {
          const deletedAt = Date.now();
          await kube.kubectlOk(["delete", "nodeconfig", PEER]);
          await eventually(
            "the peer dropped",
            () => Promise.resolve(meshCalls().slice(before)),
            (c) => c.includes("mesh "),
            GRACE_MS + 10_000,
            50,
          );
          const keptMs = Date.now() - deletedAt;
          console.log(`deleted NodeConfig's peer kept for ${keptMs} ms (grace ${GRACE_MS} ms)`);
          assert.ok(keptMs >= GRACE_MS, `dropped after ${keptMs} ms`);
          assert.deepEqual(meshCalls().slice(before), ["mesh "]);
        },
      );

      await step("the NodeConfig created again: back in the mesh", async () => {
        await kube.apply(nodeConfig(PEER, "fd00:2::/64"));
        await eventually(
          "the peer back",
          () => Promise.resolve(meshCalls().slice(before)),
          (c) => c.at(-1) === `mesh ${PEER}@2001:db8::2`,
        );
      });
    } finally {
      await cluster.stop();
    }
  },
});

/** A named part of the test: its failure says which. */
async function step(name: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    throw new Error(`${name}: ${(e as Error).message}`, { cause: e });
  }
}
