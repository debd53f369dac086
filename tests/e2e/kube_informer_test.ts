/**
 * The informer (agent/kube/reflector.ts) against a real etcd + kube-apiserver, through the outages
 * a control plane really has:
 *
 * - the API server restarts and, while it is down, an object is deleted and etcd compacted past
 *   the informer's resource version: the watch gets "410 Gone", the informer relists once, the
 *   deleted object leaves the cache (one delete change), the others cause no change;
 * - a plain API server restart: the watch resumes; an object created afterwards arrives once,
 *   nothing is lost or repeated;
 * - the outage logs a bounded number of lines, not one per retry.
 *
 * The deletion while the API server is down goes straight to etcd (its JSON gateway), as another
 * API server of an HA control plane would have written it.
 */

import assert from "node:assert/strict";
import { type KubeCluster, startKubeWithFlock } from "../helpers/kube.ts";
import { eventually } from "../helpers/eventually.ts";
import { KubeApi, NODECONFIG_PATH } from "../../agent/kube/api.ts";
import { Reflector } from "../../agent/kube/reflector.ts";
import type { CacheChange } from "../../agent/kube/object_cache.ts";

const ETCD_PREFIX = "/registry/flock.fritzlab.net/nodeconfigs/";

function nodeConfig(name: string, cidr6: string) {
  return {
    apiVersion: "flock.fritzlab.net/v1alpha1",
    kind: "NodeConfig",
    metadata: { name },
    spec: { cidr6 },
  };
}

/** One call of etcd's v3 JSON gateway. */
async function etcdCall(kube: KubeCluster, op: string, body: unknown) {
  const res = await fetch(`http://127.0.0.1:${kube.etcdPort}/v3/${op}`, {
    method: "POST",
    body: JSON.stringify(body),
  });
  const text = await res.text();
  assert.ok(res.ok, `etcd ${op}: ${res.status} ${text}`);
  return JSON.parse(text);
}

/** Deletes one key in etcd and compacts the history up to the current revision. */
async function deleteAndCompact(kube: KubeCluster, key: string): Promise<void> {
  const deleted = await etcdCall(kube, "kv/deleterange", { key: btoa(key) });
  assert.equal(deleted.deleted, "1", `etcd had no ${key}`);
  const revision = deleted.header.revision;
  await etcdCall(kube, "kv/compaction", { revision, physical: true });
}

Deno.test({
  name: "informer: 410 after compaction relists (deletion seen), restarts lose and repeat nothing",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using kube = await startKubeWithFlock();
    await kube.apply([
      nodeConfig("node-a", "fd00:a::/64"),
      nodeConfig("node-b", "fd00:b::/64"),
      nodeConfig("node-c", "fd00:c::/64"),
    ]);
    const api = new KubeApi({ kubeconfig: kube.adminKubeconfig });
    const changes: string[] = [];
    const logs: Record<string, unknown>[] = [];
    const reflector = new Reflector<string>({
      name: "nodeconfigs",
      source: {
        path: NODECONFIG_PATH,
        list: (q) => api.listNodeConfigs(q),
        watch: (...args) => api.watch(...args),
      },
      project: (o) => (o.spec as { cidr6: string }).cidr6,
      onChange: (c: CacheChange<string>) => changes.push(`${c.type} ${c.key}`),
      log: (f) => logs.push(f),
      maxBackoffMs: 1_000,
    });
    reflector.start();
    try {
      await reflector.synced;
      const keys = () => reflector.cache.entries().map(([k]) => k).sort();
      assert.deepEqual(keys(), ["node-a", "node-b", "node-c"]);
      changes.length = 0;

      // Watch events flow.
      await kube.apply(nodeConfig("node-a", "fd00:aa::/64"));
      await eventually(
        "the change of node-a",
        () => Promise.resolve(reflector.cache.get("node-a")),
        (v) => v === "fd00:aa::/64",
        10_000,
      );
      assert.deepEqual(changes, ["upsert node-a"]);
      changes.length = 0;

      // Down; node-b deleted behind the informer's back; the history it would resume from gone.
      await kube.stopApiserver();
      await deleteAndCompact(kube, `${ETCD_PREFIX}node-b`);
      await kube.startApiserver();
      await eventually(
        "node-b gone from the cache",
        () => Promise.resolve(keys().join()),
        (v) => v === "node-a,node-c",
        30_000,
      );
      assert.deepEqual(changes, ["delete node-b"], "the relist changes only what changed");
      assert.equal(reflector.lists, 2, "one relist");
      assert.ok(logs.some((l) => String(l.msg).includes("410 Gone")), JSON.stringify(logs));
      assert.equal(reflector.cache.get("node-a"), "fd00:aa::/64");
      changes.length = 0;

      // The watch after the relist works.
      await kube.apply(nodeConfig("node-d", "fd00:d::/64"));
      await eventually(
        "node-d",
        () => Promise.resolve(keys().join()),
        (v) => v.includes("d"),
        10_000,
      );
      assert.deepEqual(changes, ["upsert node-d"]);
      changes.length = 0;

      // A plain restart: nothing lost, nothing repeated.
      const listsBefore = reflector.lists;
      await kube.restartApiserver();
      await kube.apply(nodeConfig("node-e", "fd00:e::/64"));
      await kube.kubectlOk(["delete", "nodeconfig", "node-c"]);
      await eventually(
        "node-e in, node-c out",
        () => Promise.resolve(keys().join()),
        (v) => v === "node-a,node-d,node-e",
        30_000,
      );
      // Anything late would land now.
      await new Promise((r) => setTimeout(r, 1_500));
      // Sorted: when the restart costs a relist, its diff may name the deletion first.
      assert.deepEqual([...changes].sort(), ["delete node-c", "upsert node-e"]);
      assert.ok(reflector.lists - listsBefore <= 1, `relisted ${reflector.lists - listsBefore}x`);

      // Two outages of several seconds each: a handful of lines, not one per retry.
      const warnings = logs.filter((l) => l.level === "warn");
      assert.ok(warnings.length <= 4, `warnings: ${JSON.stringify(warnings)}`);
      assert.ok(logs.length <= 12, `log lines: ${JSON.stringify(logs)}`);
    } finally {
      await reflector.stop();
    }
  },
});
