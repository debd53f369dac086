/**
 * DEL answers before the pod's veth is gone (the kernel needs ~40 ms of RCU grace periods to
 * delete one): what a runtime and a user can rely on once DEL has returned, and how the veth's
 * deletion that is still running meets the next requests.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { addLivePod, assertNodeHolds, resultIps } from "../helpers/node_state.ts";
import { hostIfaceName } from "../../agent/datapath.ts";
import type { IpLink, IpRoute } from "../helpers/iproute.ts";

Deno.test({
  name: "DEL in the background: the pod is off the network at the answer, the veth goes after",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:db::/64", cidr4: "10.219.0.0/24" },
    });
    await using peer = await TestNamespace.create("flk-dbp");
    await using pod = await TestNamespace.create("flk-dba");
    const peerPod = await addLivePod(node, "peer", peer.path);

    const add = await node.cni("ADD", { containerId: "victim", netns: pod.path });
    assert.equal(add.code, 0, add.stdout);
    const ips = resultIps(add.json);
    for (const ip of ips) assert.ok(await ping(peer, ip), `peer → ${ip} before DEL`);

    const del = await node.cni("DEL", { containerId: "victim", netns: pod.path });
    assert.equal(del.code, 0, del.stdout);
    // Read the node at once, without settling: the veth may still be there, but down, and the
    // node no longer routes to the pod.
    const host = hostIfaceName("victim");
    const links = await node.ns.ipJson<IpLink[]>(["link", "show"]);
    const left = links.find((l) => l.ifname === host);
    if (left) assert.ok(!left.flags.includes("UP"), `${host} is still up: ${left.flags}`);
    for (const family of ["-4", "-6"]) {
      const routes = await node.ns.ipJson<IpRoute[]>([family, "route", "show", "proto", "201"]);
      for (const ip of ips) {
        assert.ok(!routes.some((r) => r.dst === ip), `the node still routes to ${ip}`);
      }
    }

    await node.settled();
    await assertNodeHolds(node, [peerPod], "after the DEL settled");

    // Re-ADD right after DEL, same container and netns: it waits for the veth to go (the
    // interface name eth0 is reused), then the pod is back on the network.
    assert.equal((await node.cni("ADD", { containerId: "victim", netns: pod.path })).code, 0);
    assert.equal((await node.cni("DEL", { containerId: "victim", netns: pod.path })).code, 0);
    const again = await node.cni("ADD", { containerId: "victim", netns: pod.path });
    assert.equal(again.code, 0, again.stdout);
    for (const ip of resultIps(again.json)) assert.ok(await ping(peer, ip), `peer → ${ip}`);

    // Another container into the same netns right after the DEL (a runtime reusing it).
    assert.equal((await node.cni("DEL", { containerId: "victim", netns: pod.path })).code, 0);
    const successor = await addLivePod(node, "successor", pod.path);
    await assertNodeHolds(node, [peerPod, successor]);
    assert.equal((await node.cni("DEL", { containerId: "successor", netns: pod.path })).code, 0);

    // CHECK of a container whose DEL was answered: it has no attachment.
    const check = await node.cni("CHECK", { containerId: "successor", netns: pod.path });
    assert.equal(check.code, 1, check.stdout);
    assert.equal(check.json?.code, 3, check.stdout);
    await assertNodeHolds(node, [peerPod]);
  },
});

Deno.test({
  name: "DEL in the background: 12 concurrent DELs settle to an empty node, then GC and restart",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:dc::/64", cidr4: "10.220.0.0/24" },
    });
    const namespaces = await Promise.all(
      Array.from({ length: 12 }, () => TestNamespace.create("flk-dbc")),
    );
    try {
      const adds = await Promise.all(
        namespaces.map((ns, i) => node.cni("ADD", { containerId: `c${i}`, netns: ns.path })),
      );
      for (const r of adds) assert.equal(r.code, 0, r.stdout);
      const dels = await Promise.all(
        namespaces.map((ns, i) => node.cni("DEL", { containerId: `c${i}`, netns: ns.path })),
      );
      for (const r of dels) assert.equal(r.code, 0, r.stdout);
      // A GC right behind the DELs waits for their veth deletions and finds nothing to do.
      const gc = await node.cni("GC", {
        ifname: "",
        extraConfig: { cniVersion: "1.1.0", "cni.dev/valid-attachments": [] },
      });
      assert.equal(gc.code, 0, gc.stdout);
      await assertNodeHolds(node, [], "after 12 concurrent DELs");
      // Every address came back (cooldown 0): a pod asking for the lowest gets the first ones.
      const fresh = await node.cni("ADD", {
        containerId: "fresh",
        netns: namespaces[0].path,
        extraConfig: {
          runtimeConfig: {
            "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/ip-algo": "lowest" },
          },
        },
      });
      assert.equal(fresh.code, 0, fresh.stdout);
      assert.deepEqual(resultIps(fresh.json).sort(), ["10.220.0.1", "fd00:dc::1"]);
      await node.restartAgent();
      await assertNodeHolds(node, [{ containerId: "fresh", ips: resultIps(fresh.json) }]);
      assert.equal((await node.cni("DEL", { containerId: "fresh" })).code, 0);
      await assertNodeHolds(node, []);
    } finally {
      for (const ns of namespaces) await ns.remove().catch(() => {});
    }
  },
});
