/**
 * IPAM at its edges with a real agent: cooling addresses across restarts and CIDR changes.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { FlockNode, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { DB_FILE } from "../../agent/store.ts";
import { RELEASE_SWEEP_ENV } from "../../agent/test_faults.ts";

/** The network config fields that pass pod annotations as the CRI does. */
function annotated(annotations: Record<string, string>): Record<string, unknown> {
  return { runtimeConfig: { "io.kubernetes.cri.pod-annotations": annotations } };
}

Deno.test({
  name: "CIDR shrink: a cooling address that is the new broadcast address does not stop the agent",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr4: "10.73.0.0/24" },
      cooldownMs: 120_000,
    });
    await using pod = await TestNamespace.create("flk-ipe");
    // 10.73.0.127 is usable in the /24 and is the broadcast address of 10.73.0.0/25.
    const add = await node.cni("ADD", {
      containerId: "edge-127",
      netns: pod.path,
      extraConfig: annotated({ "flock.fritzlab.net/ipv4": "10.73.0.127" }),
    });
    assert.equal(add.code, 0, add.stdout);
    const del = await node.cni("DEL", { containerId: "edge-127", netns: pod.path });
    assert.equal(del.code, 0, del.stdout);
    await node.settled();

    await node.kill("SIGTERM");
    await node.writeConfig({ cidr4: "10.73.0.0/25" });
    await node.startAgent({ waitReady: false });
    await node.waitReady(10_000).catch(async (e) => {
      throw new Error(`${(e as Error).message}\n${await node.agentLog()}`);
    });
    const again = await node.cni("ADD", { containerId: "after-shrink", netns: pod.path });
    assert.equal(again.code, 0, again.stdout);
    assert.equal(again.json.ips[0].address, "10.73.0.1/32");
  },
});

/** Rows of the store's release table (the cooldowns that survive a restart). */
function releaseRows(node: FlockNode): number {
  const db = new DatabaseSync(join(node.stateDir, DB_FILE), { readOnly: true });
  try {
    return Number((db.prepare("SELECT count(*) AS n FROM release").get() as { n: number }).n);
  } finally {
    db.close();
  }
}

Deno.test({
  name: "release table: rows of cooled-down addresses are dropped while the agent runs",
  ...ROOT_ONLY,
  async fn() {
    const cooldownMs = 1_500;
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:73::/64" },
      cooldownMs,
      startAgent: false,
    });
    await node.startAgent({ env: { [RELEASE_SWEEP_ENV]: "100" } });
    await using pod = await TestNamespace.create("flk-ipe");
    // `next` over a /64 gives every pod a new address: one more row per deleted pod.
    for (let i = 0; i < 5; i++) {
      const add = await node.cni("ADD", { containerId: `churn-${i}`, netns: pod.path });
      assert.equal(add.code, 0, add.stdout);
      const del = await node.cni("DEL", { containerId: `churn-${i}`, netns: pod.path });
      assert.equal(del.code, 0, del.stdout);
      await node.settled();
    }
    assert.ok(releaseRows(node) > 0, "the latest release is cooling");
    const deadline = Date.now() + 10_000;
    while (releaseRows(node) > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(releaseRows(node), 0, "cooled-down releases are still stored");
  },
});

Deno.test({
  name: "restart: an address released before it keeps cooling; a pinned one overrides that",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:74::/120", cidr4: "10.74.0.0/29" },
      cooldownMs: 120_000,
    });
    await using pod = await TestNamespace.create("flk-ipe");
    const lowest = annotated({ "flock.fritzlab.net/ip-algo": "lowest" });
    const first = await node.cni("ADD", { containerId: "a", netns: pod.path, extraConfig: lowest });
    assert.equal(first.code, 0, first.stdout);
    assert.deepEqual(first.json.ips.map((i: { address: string }) => i.address), [
      "fd00:74::1/128",
      "10.74.0.1/32",
    ]);
    assert.equal((await node.cni("DEL", { containerId: "a", netns: pod.path })).code, 0);
    await node.settled();
    await node.restartAgent();

    const second = await node.cni("ADD", {
      containerId: "b",
      netns: pod.path,
      extraConfig: lowest,
    });
    assert.equal(second.code, 0, second.stdout);
    assert.deepEqual(second.json.ips.map((i: { address: string }) => i.address), [
      "fd00:74::2/128",
      "10.74.0.2/32",
    ]);
    assert.equal((await node.cni("DEL", { containerId: "b", netns: pod.path })).code, 0);
    await node.settled();
    const pinned = await node.cni("ADD", {
      containerId: "c",
      netns: pod.path,
      extraConfig: annotated({ "flock.fritzlab.net/ipv4": "10.74.0.1" }),
    });
    assert.equal(pinned.code, 0, pinned.stdout);
    assert.equal(pinned.json.ips[1].address, "10.74.0.1/32");
  },
});

Deno.test({
  name: "a failed ADD that pinned a cooling address leaves it cooling",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr4: "10.75.0.0/29" },
      cooldownMs: 120_000,
    });
    await using pod = await TestNamespace.create("flk-ipe");
    const lowest = annotated({ "flock.fritzlab.net/ip-algo": "lowest" });
    const first = await node.cni("ADD", { containerId: "a", netns: pod.path, extraConfig: lowest });
    assert.equal(first.json?.ips?.[0]?.address, "10.75.0.1/32", first.stdout);
    assert.equal((await node.cni("DEL", { containerId: "a", netns: pod.path })).code, 0);
    await node.settled();

    const failed = await node.cni("ADD", {
      containerId: "b",
      netns: `${pod.path}-gone`,
      extraConfig: annotated({ "flock.fritzlab.net/ipv4": "10.75.0.1" }),
    });
    // Fails in the datapath, after IPAM: the pinned address is given back.
    assert.equal(failed.json?.code, 8, failed.stdout);
    assert.equal((await node.cni("DEL", { containerId: "b", netns: `${pod.path}-gone` })).code, 0);

    const next = await node.cni("ADD", { containerId: "c", netns: pod.path, extraConfig: lowest });
    assert.equal(next.json?.ips?.[0]?.address, "10.75.0.2/32", next.stdout);
  },
});
