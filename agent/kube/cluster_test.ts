/**
 * ClusterMode against a small scripted fake of the API (lists, watches, reads): the order of
 * events around the node's first configuration.
 */

import assert from "node:assert/strict";
import type { ClusterMode } from "./cluster.ts";
import { NODECONFIG_PATH } from "./api.ts";
import type { NodeConfig } from "../config.ts";
import { SchemaVersionError } from "../store.ts";
import { FakeAgent, FakeApi, fakeCluster, until } from "../../tests/helpers/fake_cluster.ts";

Deno.test("cluster: a NodeConfig created while the podCIDRs fallback is being applied wins", async () => {
  const api = new FakeApi();
  const agent = new FakeAgent();
  // statusIntervalMs: the default pacing of status writes, not the fakes' none.
  const cluster = fakeCluster(api, { waitForConfigMs: 0, statusIntervalMs: undefined });
  cluster.start(agent, (e) => {
    throw e;
  });
  try {
    // No NodeConfig after the wait: the agent reads Node.spec.podCIDRs; the NodeConfig
    // appears while that read is under way.
    await api.podCIDRsAsked.promise;
    await until("the NodeConfig watch", () => api.watchers.has(NODECONFIG_PATH));
    api.create("n1", { cidr6: "fd00:bb::/64" });
    api.podCIDRsGate.resolve();
    await cluster.configured;
    await until(
      "the NodeConfig applied",
      () => agent.node?.spec.cidr6 === "fd00:bb::/64",
      2_000,
    ).catch((e) => {
      throw new Error(`${e.message}; applied: ${agent.applied.join(" | ")}`);
    });
    assert.equal(cluster.source, "NodeConfig");
  } finally {
    await cluster.stop();
  }
});

Deno.test("cluster: a configured agent a CNI call cannot get through to is published not Ready (CNIUnavailable), then Ready again", async () => {
  const api = new FakeApi();
  api.objects.push({
    metadata: { name: "n1", resourceVersion: "1", generation: 1 },
    spec: { cidr6: "fd00:cc::/64" },
  });
  const agent = new FakeAgent();
  const cluster = fakeCluster(api);
  cluster.start(agent, (e) => {
    throw e;
  });
  const last = () => api.patches.at(-1) as { ready?: boolean; conditions?: { reason: string }[] };
  try {
    await cluster.configured;
    await until("the first status", () => last()?.ready === true);
    agent.problem = "the agent's socket /run/flock/flock.sock was deleted";
    cluster.attachmentsChanged();
    await until("not ready", () => last()?.ready === false);
    assert.equal(last().conditions?.[0].reason, "CNIUnavailable");
    assert.match(String((last() as { reason?: string }).reason), /socket .* was deleted/);
    agent.problem = "";
    cluster.attachmentsChanged();
    await until("ready again", () => last()?.ready === true);
    assert.equal(last().conditions?.[0].reason, "Serving");
  } finally {
    await cluster.stop();
  }
});

/** An agent whose first `failures` configures throw `error` (a busy kernel, a store that fails). */
class FailingAgent extends FakeAgent {
  reasons: string[] = [];
  tries = 0;
  constructor(public failures: number, readonly error: () => Error) {
    super();
  }
  override configure(node: NodeConfig): void {
    this.tries++;
    if (this.failures > 0) {
      this.failures--;
      throw this.error();
    }
    super.configure(node);
  }
  override waitingFor(reason: string): void {
    this.reasons.push(reason);
  }
  override stats() {
    const s = super.stats();
    return { ...s, notReadyReason: s.ready ? s.notReadyReason : this.reasons.at(-1) ?? "" };
  }
}

function clusterFor(api: FakeApi): ClusterMode {
  api.objects.push({
    metadata: { name: "n1", resourceVersion: "1", generation: 1 },
    spec: { cidr6: "fd00:dd::/64" },
  });
  return fakeCluster(api, { configureRetryMs: 20 });
}

Deno.test("cluster: a failing first configure is retried with backoff, not fatal; its reason is published (ConfigureFailed)", async () => {
  const api = new FakeApi();
  const agent = new FailingAgent(
    3,
    () => new Error("summary routes: the kernel gave no whole answer"),
  );
  const cluster = clusterFor(api);
  const fatal: unknown[] = [];
  cluster.start(agent, (e) => fatal.push(e));
  const last = () => api.patches.at(-1) as { ready?: boolean; conditions?: { reason: string }[] };
  try {
    await until("a failure published", () => last()?.ready === false);
    assert.equal(last().conditions?.[0].reason, "ConfigureFailed");
    assert.match(String((last() as { reason?: string }).reason), /summary routes/);
    assert.match(agent.reasons.at(-1)!, /cannot configure the node.*kernel gave no whole answer/);
    await cluster.configured;
    assert.equal(agent.tries, 4);
    assert.equal(agent.ready, true);
    await until("ready published", () => last()?.ready === true);
    assert.equal(last().conditions?.[0].reason, "Serving");
    assert.deepEqual(fatal, []);
  } finally {
    await cluster.stop();
  }
});

Deno.test("cluster: a store written by a newer flock (a downgrade) still ends the agent: no retry", async () => {
  const api = new FakeApi();
  const agent = new FailingAgent(1, () => new SchemaVersionError(6, 5));
  const cluster = clusterFor(api);
  const fatal: unknown[] = [];
  cluster.start(agent, (e) => fatal.push(e));
  try {
    await cluster.configured;
    assert.equal(fatal.length, 1);
    assert.ok(fatal[0] instanceof SchemaVersionError);
    assert.equal(agent.tries, 1);
  } finally {
    await cluster.stop();
  }
});

/** A configured agent whose next `failures` reconfigures throw `error`; counts the tries. */
class FailingReconfigureAgent extends FakeAgent {
  tries: { at: number; cidr6?: string }[] = [];
  constructor(public failures: number, public error: () => Error = () => busyError()) {
    super();
  }
  override reconfigure(node: NodeConfig): Promise<void> {
    this.tries.push({ at: performance.now(), cidr6: node.spec.cidr6 });
    if (this.failures > 0) {
      this.failures--;
      return Promise.reject(this.error());
    }
    return super.reconfigure(node);
  }
}

function busyError(): Error {
  return new Error("reconcile: the kernel gave no whole answer in 8 tries");
}

interface PatchedStatus {
  ready?: boolean;
  reason?: string;
  observedGeneration?: number;
  conditions?: { type: string; status: string; reason: string }[];
}

/** The NodeConfig n1 changed to fd00:ee::/64 (generation 2), resolved once its failure is published. */
async function failChange(api: FakeApi, last: () => PatchedStatus): Promise<void> {
  api.edit({ cidr6: "fd00:ee::/64" }, 2);
  await until(
    "the failure published",
    () => last().conditions?.[0].reason === "ConfigChangeFailed",
  );
}

Deno.test("cluster: a NodeConfig change that fails is retried with backoff until it applies; the status says so meanwhile (Ready, ConfigChangeFailed), then clears", async () => {
  const agent = new FailingReconfigureAgent(3);
  const logs: Record<string, unknown>[] = [];
  const { api, cluster, last } = await startConfigured(agent, { logs });
  try {
    api.edit({ cidr6: "fd00:ee::/64" }, 2);
    await until("the failure published", () => last().reason?.includes("not applied") ?? false);
    assert.equal(last().ready, true, "the node serves on the config in force");
    assert.equal(last().conditions?.[0].status, "True");
    assert.equal(last().conditions?.[0].reason, "ConfigChangeFailed");
    assert.equal(last().observedGeneration, 1);
    assert.match(last().reason!, /generation 2 .*kernel gave no whole answer/);
    assert.match(cluster.configProblem ?? "", /generation 2 .*retried with backoff/);
    assert.equal(agent.node?.spec.cidr6, "fd00:dd::/64");

    await until("the change applied", () => agent.node?.spec.cidr6 === "fd00:ee::/64", 5_000);
    assert.equal(agent.tries.length, 4, "three failures, then the try that applies");
    // Backoff 20 ms, 40, 80 between the tries (timers fire late, never early).
    const gaps = agent.tries.slice(1).map((t, i) => t.at - agent.tries[i].at);
    gaps.forEach((gap, i) => assert.ok(gap >= 20 * 2 ** i - 2, `gap ${i}: ${gap} ms`));
    await until("the status cleared", () => last().observedGeneration === 2);
    assert.equal(last().reason, "");
    assert.equal(last().conditions?.[0].reason, "Serving");
    assert.equal(cluster.configProblem, undefined);
    // Logged once per streak: its start and its end, not each try.
    const streak = logs.filter((l) => /^NodeConfig change (failed|recovered)/.test(String(l.msg)));
    assert.deepEqual(streak.map((l) => l.msg), [
      "NodeConfig change failed; retrying with backoff, logged again once it recovers",
      "NodeConfig change recovered",
    ]);
    assert.equal(logs.filter((l) => l.msg === "NodeConfig changed").length, 1, "one line a field");
  } finally {
    await cluster.stop();
  }
});

Deno.test("cluster: a newer NodeConfig spec during a failed change's backoff is tried at once and wins", async () => {
  const agent = new FailingReconfigureAgent(1);
  const { api, cluster, last } = await startConfigured(agent, { retryMs: 60_000 });
  try {
    await failChange(api, last);
    // The failed try's own status write comes back as an event: it must not cut the pause.
    api.edit({ cidr6: "fd00:ee::/64" }, 2);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(agent.tries.length, 1);
    // The operator edits again during the (60 s) pause: applied at once.
    api.edit({ cidr6: "fd00:ff::/64" }, 3);
    await until("the newer spec applied", () => agent.node?.spec.cidr6 === "fd00:ff::/64", 2_000);
    assert.deepEqual(agent.tries.map((t) => t.cidr6), ["fd00:ee::/64", "fd00:ff::/64"]);
    await until("the status cleared", () => last().observedGeneration === 3);
    assert.equal(last().conditions?.[0].reason, "Serving");
  } finally {
    await cluster.stop();
  }
  // The abandoned spec's retry never ran.
  assert.deepEqual(agent.tries.map((t) => t.cidr6), ["fd00:ee::/64", "fd00:ff::/64"]);
});

Deno.test("cluster: a failed NodeConfig change reverted to the spec in force cancels its retry and clears the status", async () => {
  const agent = new FailingReconfigureAgent(1);
  const { api, cluster, last } = await startConfigured(agent, { retryMs: 60_000 });
  try {
    await failChange(api, last);
    api.edit({ cidr6: "fd00:dd::/64" }, 3);
    await until("the status cleared", () => last().observedGeneration === 3);
    assert.equal(last().conditions?.[0].reason, "Serving");
    assert.equal(cluster.configProblem, undefined);
    assert.equal(agent.tries.length, 1);
  } finally {
    await cluster.stop();
  }
});

Deno.test("cluster: a NodeConfig change failing in a way no retry fixes is not retried; a newer spec is tried", async () => {
  const agent = new FailingReconfigureAgent(1, () => new SchemaVersionError(6, 5));
  const { api, cluster, last } = await startConfigured(agent, { retryMs: 10 });
  try {
    await failChange(api, last);
    assert.match(last().reason!, /not retried/);
    assert.equal(last().ready, true);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(agent.tries.length, 1, "no retry");
    api.edit({ cidr6: "fd00:ff::/64" }, 3);
    await until("the newer spec applied", () => agent.node?.spec.cidr6 === "fd00:ff::/64", 2_000);
    await until("the status cleared", () => last().observedGeneration === 3);
  } finally {
    await cluster.stop();
  }
});

/**
 * The NodeConfig n1 (generation 1, fd00:dd::/64) applied by `agent` and published Ready; a failed
 * change is first retried after `retryMs`.
 */
async function startConfigured(
  agent: FakeAgent,
  o: { api?: FakeApi; retryMs?: number; logs?: Record<string, unknown>[] } = {},
): Promise<{ api: FakeApi; cluster: ClusterMode; last: () => PatchedStatus }> {
  const api = o.api ?? new FakeApi();
  api.objects.push({
    metadata: { name: "n1", resourceVersion: "1", generation: 1 },
    spec: { cidr6: "fd00:dd::/64" },
  });
  const cluster = fakeCluster(api, {
    configureRetryMs: o.retryMs ?? 20,
    log: (f) => void o.logs?.push(f),
  });
  cluster.start(agent, (e) => {
    throw e;
  });
  await cluster.configured;
  const last = () => (api.patches.at(-1) ?? {}) as PatchedStatus;
  await until("the first status", () => last().ready === true);
  return { api, cluster, last };
}
