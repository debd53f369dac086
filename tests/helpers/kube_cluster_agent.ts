/**
 * An in-process Agent in cluster mode against a real kube-apiserver, for tests that drive the
 * Agent and ClusterMode directly (inject faults into them, read their state) instead of running
 * `flock agent` as a child process: the agent reads its NodeConfig and writes its status as
 * deploy/'s ServiceAccount.
 *
 * @module
 */

import { join } from "node:path";
import type { Agent } from "../../agent/agent.ts";
import { KubeApi } from "../../agent/kube/api.ts";
import { ClusterMode } from "../../agent/kube/cluster.ts";
import { inProcessAgent } from "./in_process_agent.ts";
import type { KubeCluster } from "./kube.ts";
import type { TestNamespace } from "./netns.ts";

/** The namespace deploy/ runs flock in (its ServiceAccount's). */
const NAMESPACE = "kube-system";

/** The agent, its cluster mode and what they logged; disposing stops both and removes all. */
export interface ClusterAgent extends AsyncDisposable {
  agent: Agent;
  cluster: ClusterMode;
  /** The node's namespace. */
  node: TestNamespace;
  /** The agent's state dir (not created yet) and CNI socket. */
  stateDir: string;
  socketPath: string;
  /** What the agent and cluster mode logged, in order. */
  logs: Record<string, unknown>[];
  /** The log as JSON lines after a newline, for a failure's message. */
  trail(): string;
}

/**
 * A new node namespace named after `nsPrefix` and an Agent for NodeConfig `nodeName` (not
 * listening, not started: the test starts `cluster` on `agent`), cluster mode with no Node watch,
 * no status pacing and a first configure retry after 200 ms.
 */
export async function clusterAgent(
  kube: KubeCluster,
  nodeName: string,
  nsPrefix: string,
): Promise<ClusterAgent> {
  const kubeconfig = await kube.kubeconfigFor(await kube.tokenFor(NAMESPACE, "flock"));
  const logs: Record<string, unknown>[] = [];
  const log = (f: Record<string, unknown>) => void logs.push(f);
  const inProcess = await inProcessAgent(nsPrefix, nodeName, log);
  const cluster = new ClusterMode({
    nodeName,
    api: new KubeApi({ kubeconfig }),
    namespace: NAMESPACE,
    watchNodes: false,
    statusIntervalMs: 0,
    configureRetryMs: 200,
    log,
  });
  return {
    agent: inProcess.agent,
    cluster,
    node: inProcess.node,
    stateDir: join(inProcess.dir, "state"),
    socketPath: join(inProcess.dir, "flock.sock"),
    logs,
    trail: () => "\n" + logs.map((l) => JSON.stringify(l)).join("\n"),
    async [Symbol.asyncDispose]() {
      try {
        await cluster.stop();
      } finally {
        await inProcess[Symbol.asyncDispose]();
      }
    },
  };
}

interface Condition {
  type: string;
  status: string;
  reason: string;
  message?: string;
}

/** What the NodeConfig `name`'s status says (kubectl get), and its generation. */
export interface NodeConfigStatus {
  generation: number;
  ready: boolean | undefined;
  reason: string;
  observedGeneration: number | undefined;
  /** The Ready condition. */
  c: Condition | undefined;
}

/** The NodeConfig `name`'s status as kubectl gives it. */
export async function nodeConfigStatus(kube: KubeCluster, name: string): Promise<NodeConfigStatus> {
  const obj = JSON.parse(await kube.kubectlOk(["get", "nodeconfig", name, "-o", "json"]));
  const status = obj.status ?? {};
  return {
    generation: obj.metadata.generation,
    ready: status.ready,
    reason: String(status.reason ?? ""),
    observedGeneration: status.observedGeneration,
    c: (status.conditions ?? []).find((c: Condition) => c.type === "Ready"),
  };
}
