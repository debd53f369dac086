/**
 * Scripted fakes for unit tests of ClusterMode (agent/kube/cluster.ts): an API whose lists and
 * watches the test drives, and an agent that records how cluster mode configured it. No
 * kube-apiserver: these tests are about the order of events, which a real server cannot script.
 */

import { ClusterMode, type ClusterModeOptions } from "../../agent/kube/cluster.ts";
import type {
  KubeApi,
  KubeObject,
  ListPage,
  WatchEvent,
  WatchHandle,
} from "../../agent/kube/api.ts";
import { NODECONFIG_PATH } from "../../agent/kube/api.ts";
import type { NodeConfig } from "../../agent/config.ts";
import { eventually } from "./eventually.ts";

/** Lists NodeConfigs from `objects`; watches stay open until stopped; events pushed by tests. */
export class FakeApi {
  readonly objects: KubeObject[] = [];
  readonly watchers = new Map<string, (event: WatchEvent) => void>();
  rv = 1;
  /** `nodePodCIDRs` resolves when this does. */
  podCIDRsGate = Promise.withResolvers<void>();
  podCIDRsAsked = Promise.withResolvers<void>();
  /** The data of the Secret `name` (base64 values, as the API gives them); none by default. */
  secretData: (name: string) => Record<string, string> = () => ({});

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
  readSecretData(_namespace: string, name: string): Promise<Record<string, string>> {
    return Promise.resolve(this.secretData(name));
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
  /** The NodeConfig n1 edited: its MODIFIED event with the next generation. */
  edit(spec: Record<string, unknown>, generation: number): void {
    const obj = {
      metadata: { name: "n1", resourceVersion: String(++this.rv), generation },
      spec,
    };
    this.objects.splice(0, this.objects.length, obj);
    this.watchers.get(NODECONFIG_PATH)?.({ type: "MODIFIED", object: obj });
  }
}

/** The agent as cluster mode sees it: what it was configured with, in order. */
export class FakeAgent {
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

/** ClusterMode for node n1 on `api` (no Node watch, no periodic status), `options` on top. */
export function fakeCluster(api: FakeApi, options: Partial<ClusterModeOptions> = {}): ClusterMode {
  return new ClusterMode({
    nodeName: "n1",
    api: api as unknown as KubeApi,
    watchNodes: false,
    namespace: "kube-system",
    statusIntervalMs: 0,
    log: () => {},
    ...options,
  });
}

/** Polls `check` every 10 ms until it holds; throws naming `what` after `ms`. */
export async function until(what: string, check: () => boolean, ms = 5_000): Promise<void> {
  await eventually(what, () => Promise.resolve(check()), (holds) => holds, ms, 10);
}
