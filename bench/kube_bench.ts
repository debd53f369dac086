/**
 * Cluster mode's costs against a real kube-apiserver (BRIEF §8: agent memory in cluster mode
 * ≤ 160 MiB at 1,000 pods):
 *
 * - agent RSS with N pods on its node (in the API, in the informer, and attached), and its
 *   start-up time (spawn → ready: Kubernetes client load, NodeConfig list, reconcile);
 * - the agent-side latency of an ADD whose pod the informer already has, and of one that has to
 *   wait for it (ADD sent, then the pod created in the API): the difference is the extra latency
 *   of the ADD-vs-informer race.
 *
 * ```sh
 * deno run -A --no-lock bench/kube_bench.ts [--pods 1000] [--samples 30]
 * ```
 *
 * Needs root (namespaces) and the kube binaries from `make setup`. Everything runs in namespaces
 * it creates (`flk-kb-<pid>-*`) and on 127.0.0.1; all is removed at the end.
 *
 * @module
 */

import { type KubeCluster, startKubeWithFlock } from "../tests/helpers/kube.ts";
import { FlockNode } from "../tests/helpers/flock.ts";
import { callAgent } from "../cni.ts";
import type { RpcRequest } from "../agent/protocol.ts";
import {
  addNamespaces,
  deleteNamespaces,
  formatRss,
  formatTable,
  medianP99,
  ms,
  type ResultRow,
  rssOf,
  summarize,
} from "./report.ts";
import { integerArgs } from "./args.ts";
import { agentDenoDir } from "./agent_deno_dir.ts";

const { pods: PODS, samples: SAMPLES } = integerArgs({
  pods: { default: 1000, min: 1 },
  samples: { default: 30, min: 1 },
});
const NODE = "flk-kb-node";
const NS = "default";
const RSS_TARGET_MIB = 160;

function podObject(name: string, annotations: Record<string, string> = {}) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: NS, annotations },
    spec: { nodeName: NODE, containers: [{ name: "c", image: "example.invalid/none:1" }] },
  };
}

async function createPod(kube: KubeCluster, name: string): Promise<void> {
  const res = await kube.fetch(`/api/v1/namespaces/${NS}/pods`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(podObject(name, { "flock.fritzlab.net/ip-algo": "lowest" })),
  });
  if (res.status !== 201) throw new Error(`create pod ${name}: ${res.status} ${await res.text()}`);
  await res.body?.cancel();
}

/** Creates pods with a few requests in flight at once. */
async function createPods(kube: KubeCluster, names: string[], parallel = 16): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < names.length) await createPod(kube, names[next++]);
  }));
}

async function main(): Promise<void> {
  const tag = `flk-kb-${Deno.pid}`;
  const podNs = Array.from({ length: PODS + 2 * SAMPLES }, (_, i) => `${tag}-${i}`);
  const rows: ResultRow[] = [];
  const progress = (msg: string) => console.error(`[kube_bench] ${msg}`);
  await using kube = await startKubeWithFlock();
  await using denoDir = await agentDenoDir();
  let node: FlockNode | undefined;
  try {
    await kube.apply({
      apiVersion: "flock.fritzlab.net/v1alpha1",
      kind: "NodeConfig",
      metadata: { name: NODE },
      spec: { cidr6: "fd00:4e::/64", cidr4: "10.78.0.0/20" },
    });
    const kubeconfig = await kube.kubeconfigFor(await kube.tokenFor("kube-system", "flock"));
    progress(`creating ${PODS} pods in the API`);
    const names = Array.from({ length: PODS }, (_, i) => `bench-${i}`);
    await createPods(kube, names);
    await addNamespaces(podNs);

    let t = performance.now();
    node = await FlockNode.start({
      name: NODE,
      config: { cidr6: "fd00::/64" },
      kubeconfig,
      // The agent's memory as on a node: with a Deno cache of its own (agent_deno_dir.ts).
      agentEnv: { DENO_DIR: denoDir.path },
    });
    rows.push({
      what: `start-up to ready, ${PODS} pods in the API, none attached`,
      figure: ms(performance.now() - t),
    });
    rows.push({
      what: "agent RSS, informer synced, nothing attached",
      figure: formatRss(await rssOf(node.agent!.pid)),
    });

    const config = JSON.parse(await node.netconf());
    const request = (command: "ADD" | "DEL", i: number, pod: string): RpcRequest => ({
      command,
      containerId: `kb-${i}`,
      netns: `/var/run/netns/${podNs[i]}`,
      ifname: "eth0",
      args: `K8S_POD_NAMESPACE=${NS};K8S_POD_NAME=${pod}`,
      config,
    });
    const add = async (i: number, pod: string) => {
      const started = performance.now();
      const r = await callAgent(node!.socketPath, request("ADD", i, pod), 30_000);
      if (!r.ok) throw new Error(`ADD ${pod}: ${JSON.stringify(r.error)}`);
      return performance.now() - started;
    };
    progress(`attaching ${PODS} pods (annotations from the informer)`);
    t = performance.now();
    for (let i = 0; i < PODS; i++) await add(i, names[i]);
    rows.push({
      what: `${PODS} ADDs through the agent socket, one at a time`,
      figure: `${((performance.now() - t) / 1000).toFixed(1)} s`,
    });

    // Let the status writer and the GC settle before reading memory.
    await new Promise((r) => setTimeout(r, 2_000));
    const rssAttached = await rssOf(node.agent!.pid);
    rows.push({
      what: `agent RSS, ${PODS} pods in the API and attached`,
      figure: formatRss(rssAttached),
      target: `≤ ${RSS_TARGET_MIB} MiB`,
      pass: rssAttached.total <= RSS_TARGET_MIB,
    });

    progress("restarting the agent (kill -9) with all pods attached");
    await node.kill("SIGKILL");
    t = performance.now();
    await node.startAgent();
    rows.push({
      what: `start-up to ready after kill -9, ${PODS} pods attached`,
      figure: ms(performance.now() - t),
    });
    await new Promise((r) => setTimeout(r, 2_000));
    const rssRestarted = await rssOf(node.agent!.pid);
    rows.push({
      what: `agent RSS after the restart, ${PODS} pods`,
      figure: formatRss(rssRestarted),
      target: `≤ ${RSS_TARGET_MIB} MiB`,
      pass: rssRestarted.total <= RSS_TARGET_MIB,
    });

    progress(`ADD latency: ${SAMPLES} known pods, ${SAMPLES} pods created after the ADD`);
    const knownNames = Array.from({ length: SAMPLES }, (_, i) => `known-${i}`);
    await createPods(kube, knownNames);
    await new Promise((r) => setTimeout(r, 1_000));
    const known: number[] = [];
    const racing: number[] = [];
    const creates: number[] = [];
    for (let s = 0; s < SAMPLES; s++) {
      known.push(await add(PODS + s, knownNames[s]));
      const pod = `race-${s}`;
      const pending = add(PODS + SAMPLES + s, pod);
      const c = performance.now();
      await createPod(kube, pod);
      creates.push(performance.now() - c);
      racing.push(await pending);
    }
    const k = summarize(known);
    const r = summarize(racing);
    rows.push({ what: "agent-side ADD, pod already in the informer", figure: medianP99(k) });
    rows.push({
      what: "pod create in the API (POST, context)",
      figure: medianP99(summarize(creates)),
    });
    rows.push({ what: "agent-side ADD sent before the pod existed", figure: medianP99(r) });
    rows.push({
      what: "extra latency of an ADD that waits for the informer (median)",
      figure: ms(r.median - k.median),
    });
    console.log(formatTable(`cluster mode, ${PODS} pods`, rows));
  } finally {
    await node?.remove();
    await deleteNamespaces(podNs);
  }
}

if (import.meta.main) await main();
