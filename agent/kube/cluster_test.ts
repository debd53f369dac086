/**
 * ClusterMode against a small scripted fake of the API (lists, watches, reads): the order of
 * events around the node's first configuration.
 */

import assert from "node:assert/strict";
import { ClusterMode } from "./cluster.ts";
import type { KubeApi, KubeObject, ListPage, WatchEvent, WatchHandle } from "./api.ts";
import { NODECONFIG_PATH } from "./api.ts";
import type { NodeConfig } from "../config.ts";
import { SchemaVersionError } from "../store.ts";

/** Lists NodeConfigs from `objects`; watches stay open until stopped; events pushed by tests. */
class FakeApi {
  readonly objects: KubeObject[] = [];
  readonly watchers = new Map<string, (event: WatchEvent) => void>();
  rv = 1;
  /** `nodePodCIDRs` resolves when this does. */
  podCIDRsGate = Promise.withResolvers<void>();
  podCIDRsAsked = Promise.withResolvers<void>();

  #page(items: KubeObject[]): Promise<ListPage> {
    return Promise.resolve({ items, resourceVersion: String(this.rv), continueToken: "" });
  }
  listPods(): Promise<ListPage> {
    return this.#page([]);
  }
  listNodeConfigs(): Promise<ListPage> {
    return this.#page([...this.objects]);
  }
  listNodes(): Promise<ListPage> {
    return this.#page([]);
  }
  watch(
    path: string,
    _rv: string,
    _q: unknown,
    onEvent: (e: WatchEvent) => void,
    onDone: (err: unknown) => void,
  ): Promise<WatchHandle> {
    this.watchers.set(path, onEvent);
    return Promise.resolve({
      stop: () => {
        this.watchers.delete(path);
        onDone(undefined);
      },
    });
  }
  async nodePodCIDRs(): Promise<string[]> {
    this.podCIDRsAsked.resolve();
    await this.podCIDRsGate.promise;
    return ["fd00:aa::/64"];
  }
  readSecretData(): Promise<Record<string, string>> {
    return Promise.resolve({});
  }
  /** The status patches sent, in order. */
  readonly patches: Record<string, unknown>[] = [];
  patchNodeConfigStatus(_name: string, status: Record<string, unknown>): Promise<void> {
    this.patches.push(status);
    return Promise.resolve();
  }
  /** A NodeConfig created in the API: its watch event. */
  create(name: string, spec: Record<string, unknown>): void {
    const obj = {
      metadata: { name, resourceVersion: String(++this.rv), generation: 1 },
      spec,
    };
    this.objects.push(obj);
    this.watchers.get(NODECONFIG_PATH)?.({ type: "ADDED", object: obj });
  }
}

/** The agent as cluster mode sees it: what it was configured with, in order. */
class FakeAgent {
  node: NodeConfig | undefined;
  applied: string[] = [];
  get ready(): boolean {
    return this.node !== undefined;
  }
  configure(node: NodeConfig): void {
    this.node = node;
    this.applied.push(`configure ${node.spec.cidr6}`);
  }
  reconfigure(node: NodeConfig): Promise<void> {
    this.node = node;
    this.applied.push(`reconfigure ${node.spec.cidr6}`);
    return Promise.resolve();
  }
  /** Why a CNI call would fail although configured (the agent's runtime health). */
  problem = "";
  waitingFor(_reason: string): void {}
  stats() {
    return {
      ready: this.ready,
      notReadyReason: this.problem,
      attachments: 0,
      ipv6: 0,
      ipv4: 0,
      outsideCIDR: 0,
    };
  }
  log(): void {}
}

async function until(what: string, check: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test("cluster: a NodeConfig created while the podCIDRs fallback is being applied wins", async () => {
  const api = new FakeApi();
  const agent = new FakeAgent();
  const cluster = new ClusterMode({
    nodeName: "n1",
    api: api as unknown as KubeApi,
    waitForConfigMs: 0,
    watchNodes: false,
    namespace: "kube-system",
    log: () => {},
  });
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
  const cluster = new ClusterMode({
    nodeName: "n1",
    api: api as unknown as KubeApi,
    watchNodes: false,
    namespace: "kube-system",
    statusIntervalMs: 0,
    log: () => {},
  });
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
  return new ClusterMode({
    nodeName: "n1",
    api: api as unknown as KubeApi,
    watchNodes: false,
    namespace: "kube-system",
    statusIntervalMs: 0,
    configureRetryMs: 20,
    log: () => {},
  });
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
