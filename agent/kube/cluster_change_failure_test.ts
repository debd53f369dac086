/**
 * Cluster mode when a NodeConfig change fails to apply for a reason that goes away: the node
 * keeps serving on the spec in force, the NodeConfig status says the change is not applied and
 * why (Ready True, reason `ConfigChangeFailed`, `observedGeneration` behind), and the change is
 * retried with backoff until it applies, with no further edit of the NodeConfig.
 *
 * Real parts: kube-apiserver and etcd (the agent reads its NodeConfig and writes its status as
 * deploy/'s ServiceAccount), the kernel (node and pod namespaces), the store, the CNI socket. The
 * cause, a store whose reads fail during the reconcile (a full or failing disk), is injected as
 * agent_reconfigure_failure_test.ts injects store faults: such a disk cannot be had on demand.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY } from "../../tests/helpers/exec.ts";
import { startKubeWithFlock } from "../../tests/helpers/kube.ts";
import { clusterAgent, nodeConfigStatus } from "../../tests/helpers/kube_cluster_agent.ts";
import { TestNamespace } from "../../tests/helpers/netns.ts";
import { eventually } from "../../tests/helpers/eventually.ts";
import { patch } from "../../tests/helpers/patch.ts";
import { rpcRequest } from "../../tests/helpers/rpc_request.ts";
import { callAgent } from "../../cni.ts";
import { Store } from "../store.ts";

const NODE = "flk-chgfail-node";
const OLD_CIDR6 = "fd00:5f::/64";
const NEW_CIDR6 = "fd00:60::/64";

Deno.test({
  name: "cluster: a NodeConfig change whose reconcile fails keeps the node serving on the spec " +
    "in force, says why in the status, and applies on a later retry",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using kube = await startKubeWithFlock();
    const nodeConfig = (cidr6: string) => ({
      apiVersion: "flock.fritzlab.net/v1alpha1",
      kind: "NodeConfig",
      metadata: { name: NODE },
      spec: { cidr6 },
    });
    await kube.apply(nodeConfig(OLD_CIDR6));
    await using podNs = await TestNamespace.create("flk-chp");
    await using podNs2 = await TestNamespace.create("flk-chq");
    // Declared after the pods' namespaces: stopped and closed before they are removed.
    await using node = await clusterAgent(kube, NODE, "flk-chf");
    const { agent, cluster, socketPath, logs, trail } = node;
    // As agent_main.ts wires it for `flock status`.
    agent.statusHooks.configProblem = () => cluster.configProblem;
    // The store's reads during a reconcile fail while `diskFailing` (recentReleases is read only
    // there, so the agent's periodic sweeps are not touched).
    let diskFailing = false;
    let failedReads = 0;
    using _fault = patch(
      Store.prototype,
      "recentReleases",
      (real) =>
        function (this: Store, ...args) {
          if (diskFailing) {
            failedReads++;
            throw new Error("injected: disk I/O error");
          }
          return real.apply(this, args);
        },
    );
    const published = () => nodeConfigStatus(kube, NODE);
    const add = (id: string, netns: string) =>
      callAgent(socketPath, rpcRequest("ADD", id, netns, "flk-chgfail"), 10_000);
    const addressOf = (r: Awaited<ReturnType<typeof add>>) =>
      r.ok ? (r.result?.ips as { address: string }[]).map((i) => i.address).join() : "";
    const fatal: unknown[] = [];
    await agent.listen();
    cluster.start(agent, (e) => fatal.push(e));
    await cluster.configured;
    await eventually(
      "Ready at generation 1",
      published,
      (s) => s.ready === true && s.observedGeneration === 1,
    );

    // 1. The change to NEW_CIDR6 fails: the node serves on OLD_CIDR6 and the status says why.
    diskFailing = true;
    await kube.apply(nodeConfig(NEW_CIDR6));
    const failing = await eventually(
      "the failed change in the status",
      published,
      (s) => s.c?.reason === "ConfigChangeFailed",
      20_000,
    ).catch((e) => {
      throw new Error(`${e.message}${trail()}`);
    });
    assert.equal(failing.generation, 2);
    assert.equal(failing.ready, true, "the node serves");
    assert.equal(failing.c?.status, "True");
    assert.equal(failing.observedGeneration, 1, "the change is not applied");
    assert.match(failing.reason, /generation 2 is not applied .*injected: disk I\/O error/);
    const r1 = await add("c-during", podNs.path);
    assert.ok(r1.ok, JSON.stringify(r1));
    assert.match(addressOf(r1), /^fd00:5f::[0-9a-f]+\/128$/, "new pods: the spec in force");
    const snapshot = await agent.status();
    assert.equal(snapshot.ready, true);
    assert.match(snapshot.configProblem ?? "", /generation 2 is not applied/);
    // Retried with backoff: more than one try while the disk fails, yet far fewer than one
    // per status event.
    await eventually("a retry", () => Promise.resolve(failedReads), (n) => n >= 2, 10_000);

    // 2. The disk works again: a retry applies the change, with no edit of the NodeConfig.
    diskFailing = false;
    const applied = await eventually(
      "the change applied",
      published,
      (s) => s.observedGeneration === 2,
      40_000,
    ).catch((e) => {
      throw new Error(`${e.message}${trail()}`);
    });
    assert.equal(applied.ready, true);
    // No failure left to report; the pod added meanwhile keeps its address of the old range.
    assert.equal(applied.c?.reason, "PodsOutsideCIDR");
    assert.match(applied.reason, /^1 running pods hold addresses outside/);
    assert.equal(agent.node?.spec.cidr6, NEW_CIDR6);
    const r2 = await add("c-after", podNs2.path);
    assert.ok(r2.ok, JSON.stringify(r2));
    assert.match(addressOf(r2), /^fd00:60::[0-9a-f]+\/128$/);
    assert.equal((await agent.status()).configProblem, undefined);
    // One line when the streak starts and one when it ends.
    const started = logs.filter((l) => /^NodeConfig change failed; retrying/.test(String(l.msg)));
    const recovered = logs.filter((l) => l.msg === "NodeConfig change recovered");
    assert.equal(started.length, 1, trail());
    assert.equal(recovered.length, 1, trail());
    assert.ok((recovered[0].failures as number) >= 2, trail());
    assert.deepEqual(fatal.map(String), []);
  },
});
