/**
 * Cluster mode's first start when the node's first `configure` fails for a reason that goes away:
 * the agent must stay up, answer CNI with code 11 and the reason (also in `flock status` and the
 * NodeConfig status), retry with backoff, and serve once the cause is gone; it must never serve
 * while the node's summary routes are missing.
 *
 * Real parts: kube-apiserver and etcd (the agent reads its NodeConfig and writes its status as
 * deploy/'s ServiceAccount), the kernel (node and pod namespaces), the store, the CNI socket. The
 * two causes: the state directory's path taken by a file (a real failure, fixed by removing the
 * file), then a kernel too busy to list the node's routes in the routing step (injected as
 * agent_reconfigure_failure_test.ts injects it: a busy kernel cannot be produced on demand).
 */

import assert from "node:assert/strict";
import { ROOT_ONLY } from "../../tests/helpers/exec.ts";
import { freePort, startKubeWithFlock } from "../../tests/helpers/kube.ts";
import { clusterAgent, nodeConfigStatus } from "../../tests/helpers/kube_cluster_agent.ts";
import { TestNamespace } from "../../tests/helpers/netns.ts";
import { FlockNode } from "../../tests/helpers/flock.ts";
import { run } from "../../tests/helpers/exec.ts";
import { eventually } from "../../tests/helpers/eventually.ts";
import { patch } from "../../tests/helpers/patch.ts";
import { rpcRequest } from "../../tests/helpers/rpc_request.ts";
import { callAgent } from "../../cni.ts";
import { NodeRouting } from "../routing.ts";
import { KernelBusyError } from "../kernel_busy.ts";

const NODE = "flk-cfgfail-node";
const NAMESPACE = "kube-system";
const CIDR6 = "fd00:5e::/64";

Deno.test({
  name: "cluster: a first configure that fails (state dir, then summary routes) keeps the agent " +
    "up answering code 11 with the reason, retries, and serves once the cause is gone",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using kube = await startKubeWithFlock();
    await kube.apply({
      apiVersion: "flock.fritzlab.net/v1alpha1",
      kind: "NodeConfig",
      metadata: { name: NODE },
      spec: { cidr6: CIDR6 },
    });
    await using podNs = await TestNamespace.create("flk-cfp");
    // Declared after the pod's namespace: stopped and closed before it is removed.
    await using node = await clusterAgent(kube, NODE, "flk-cff");
    const { agent, cluster, stateDir, socketPath, logs, trail } = node;
    const nodeNs = node.node;
    // The state directory's path is a file: the store cannot be opened (step 1's cause).
    await Deno.writeTextFile(stateDir, "not a directory\n");
    // The routing step's kernel: busy (every list of the node's routes interrupted) until cleared.
    let kernelBusy = true;
    let routingTries = 0;
    using _busyKernel = patch(
      NodeRouting.prototype,
      "applyConfig",
      (real) =>
        async function (this: NodeRouting, ...args) {
          routingTries++;
          if (kernelBusy) {
            throw new KernelBusyError("summary routes: list flock's routes", 6, 3_500, "EINTR");
          }
          return await real.apply(this, args);
        },
    );
    const fatal: unknown[] = [];
    const add = (id: string) =>
      callAgent(socketPath, rpcRequest("ADD", id, podNs.path, "flk-cfgfail"), 10_000);
    const published = () => nodeConfigStatus(kube, NODE);
    const summaryRoutes = () =>
      nodeNs.ip(["-6", "route", "show", "type", "blackhole", "proto", "201"]);
    await agent.listen();
    cluster.start(agent, (e) => fatal.push(e));

    // 1. The store cannot be opened: not ready, the reason everywhere an operator looks.
    await eventually(
      "the store failure as the not-ready reason",
      () => Promise.resolve(agent.notReadyReason() ?? ""),
      (r) => /state directory .* is not a directory/.test(r),
      20_000,
    ).catch((e) => {
      throw new Error(`${e.message}; fatal: ${fatal.map(String)}${trail()}`);
    });
    assert.deepEqual(fatal.map(String), [], "the agent does not give up");
    let r = await add("c-early");
    assert.equal(r.ok, false);
    assert.equal(!r.ok && r.error.code, 11, JSON.stringify(r));
    assert.match(!r.ok ? r.error.msg : "", /state directory .* is not a directory/);
    const early = await eventually(
      "the NodeConfig status naming the failure",
      published,
      (s) => s.ready === false && /state directory .* is not a directory/.test(s.reason),
    );
    assert.equal(early.c?.reason, "ConfigureFailed");

    // 2. The state dir is usable again, but the routing step's kernel is busy: the node is
    // reconciled, its summary routes are not in place, so it must still not serve.
    await Deno.remove(stateDir);
    await eventually(
      "the routing failure as the not-ready reason",
      () => Promise.resolve(agent.notReadyReason() ?? ""),
      (reason) => /summary routes/.test(reason) && routingTries >= 2,
      20_000,
    ).catch((e) => {
      throw new Error(`${e.message}; fatal: ${fatal.map(String)}${trail()}`);
    });
    assert.equal(agent.ready, false);
    const status = await agent.status();
    assert.equal(status.ready, false);
    assert.match(status.reason ?? "", /summary routes/);
    r = await add("c-busy");
    assert.equal(!r.ok && r.error.code, 11, JSON.stringify(r));
    assert.match(!r.ok ? r.error.msg : "", /summary routes/);
    assert.doesNotMatch(await summaryRoutes(), /fd00:5e::\/64/);
    await eventually(
      "the NodeConfig status naming the routing failure",
      published,
      (s) =>
        s.ready === false && /summary routes/.test(s.reason) &&
        s.c?.reason === "ConfigureFailed",
    );

    // 3. The kernel answers again: the next try configures the node, which then serves.
    kernelBusy = false;
    await eventually("ready", () => Promise.resolve(agent.ready), (ready) => ready, 40_000)
      .catch((e) => {
        throw new Error(`${e.message}${trail()}`);
      });
    assert.match(await summaryRoutes(), /fd00:5e::\/64/);
    r = await add("c-late");
    assert.ok(r.ok, JSON.stringify(r));
    const addrs = (r.result?.ips as { address: string }[]).map((i) => i.address);
    assert.match(addrs.join(), /^fd00:5e::[0-9a-f]+\/128$/);
    const served = await eventually(
      "the NodeConfig status Ready",
      published,
      (s) => s.ready === true,
    );
    assert.equal(served.c?.reason, "Serving");
    assert.equal(served.reason, "");
    assert.deepEqual(fatal.map(String), []);
    assert.equal(cluster.source, "NodeConfig");
    // Each failure logged with its backoff: 200 ms doubling (the log is what an operator reads).
    const tries = logs.filter((l) => l.msg === "cannot configure the node; trying again");
    assert.ok(tries.length >= 3, trail());
    tries.forEach((l, i) => {
      assert.equal(l.failures, i + 1);
      assert.equal(l.retryInMs, Math.min(200 * 2 ** i, 30_000));
    });
    assert.ok(
      logs.some((l) =>
        l.msg === "node configured after failed tries" && l.failures === tries.length
      ),
      trail(),
    );
  },
});

Deno.test({
  name: "cluster: `flock agent` whose store cannot be opened at its first start stays up, says " +
    "why (CNI code 11, flock status, /readyz) and serves once the state dir is usable",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using kube = await startKubeWithFlock();
    const name = "flk-cfgfail-proc";
    await kube.apply({
      apiVersion: "flock.fritzlab.net/v1alpha1",
      kind: "NodeConfig",
      metadata: { name },
      spec: { cidr6: CIDR6 },
    });
    const kubeconfig = await kube.kubeconfigFor(await kube.tokenFor(NAMESPACE, "flock"));
    const port = freePort();
    await using node = await FlockNode.start({
      name,
      config: { cidr6: "fd00:dead::/64" }, // unused in cluster mode
      kubeconfig,
      startAgent: false,
      // Last wins over the helper's `--http off`: the probe an operator (or the kubelet) reads.
      agentArgs: ["--http", `127.0.0.1:${port}`],
    });
    await Deno.writeTextFile(node.stateDir, "not a directory\n");
    await node.startAgent({ waitReady: false });
    await using pod = await TestNamespace.create("flk-cfq");
    const cause = /state directory .* is not a directory/;
    const add = await eventually(
      "an ADD refused with the reason",
      () => node.cni("ADD", { containerId: "c1", netns: pod.path }),
      (r) => r.json?.code === 11 && cause.test(r.json?.msg ?? ""),
      30_000,
    ).catch(async (e) => {
      throw new Error(`${e.message}\n${await node.agentLog()}`);
    });
    assert.match(add.json.msg, /cannot configure the node/);
    const status = await run([node.executable, "status", "--socket", node.socketPath]);
    assert.notEqual(status.code, 0, "flock status: not ready");
    assert.match(status.stdout + status.stderr, cause);
    const readyz = await fetch(`http://127.0.0.1:${port}/readyz`);
    assert.equal(readyz.status, 503);
    assert.match(await readyz.text(), cause);

    // The operator frees the path: the next try (backoff 1 s, 2 s, ...) configures the node.
    await Deno.remove(node.stateDir);
    await node.waitReady(40_000);
    const r = await node.cni("ADD", { containerId: "c1", netns: pod.path });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(JSON.stringify(r.json.ips), /fd00:5e::/);
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
    assert.equal(ready.status, 200);
    await ready.body?.cancel();
    const log = await node.agentLog();
    assert.match(log, /"msg":"cannot configure the node; trying again"/);
    assert.match(log, /"msg":"node configured after failed tries"/);
    assert.doesNotMatch(log, /"msg":"stopping"/, "the agent never stopped");
    const del = await node.cni("DEL", { containerId: "c1", netns: pod.path });
    assert.equal(del.code, 0, del.stdout + del.stderr);
  },
});
