/**
 * The pod lifecycle under retries, odd runtimes and concurrency, through the real plugin and
 * agent: what an operator sees (store records, links, routes, reachability) once the dust settles.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { flockStatusJson, poolCounts } from "../helpers/status_probe.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import {
  addLivePod,
  assertNodeHolds,
  podAddresses,
  resultIps,
  storeRecords,
} from "../helpers/node_state.ts";

Deno.test({
  name: "ADD retried into another netns: the pod lives there, a restart's repair keeps it there",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:dc::/64", cidr4: "10.221.0.0/24" },
    });
    await using peer = await TestNamespace.create("flk-lhp");
    await using first = await TestNamespace.create("flk-lha");
    await using second = await TestNamespace.create("flk-lhb");
    const peerPod = await addLivePod(node, "peer", peer.path);

    assert.equal((await node.cni("ADD", { containerId: "moved", netns: first.path })).code, 0);
    // The runtime retries the ADD with a new sandbox netns (same container ID and ifname).
    const retry = await node.cni("ADD", { containerId: "moved", netns: second.path });
    assert.equal(retry.code, 0, retry.stdout);
    const ips = resultIps(retry.json);
    for (const ip of ips) assert.ok(await ping(peer, ip), `peer → ${ip} after the retry`);

    // A host route lost, then an agent restart: the repair must remake the pod where it lives.
    const v6 = ips.find((ip) => ip.includes(":"))!;
    await node.ns.ip(["-6", "route", "del", `${v6}/128`]);
    await node.restartAgent();
    for (const ip of ips) assert.ok(await ping(peer, ip), `peer → ${ip} after the restart`);
    assert.deepEqual((await podAddresses(second)).sort(), [...ips].sort(), "the pod's eth0");
    assert.deepEqual(await podAddresses(first), [], "the abandoned netns has no flock interface");
    await assertNodeHolds(node, [peerPod, { containerId: "moved", ips }]);
    assert.equal(
      storeRecords(node).find((r) => r.containerId === "moved")?.netns,
      second.path,
      "the record names the netns the pod lives in",
    );

    // DEL answers before the veth is gone; a successor ADD into the netns the pod lived in
    // waits for it (eth0 is taken until then).
    assert.equal((await node.cni("DEL", { containerId: "moved", netns: second.path })).code, 0);
    const successor = await addLivePod(node, "successor", second.path);
    await assertNodeHolds(node, [peerPod, successor], "after the successor's ADD");
  },
});

Deno.test({
  name: "200 ADD+DEL pairs at once, 4 containers after each other per netns: the node ends empty",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:dd::/64", cidr4: "10.222.0.0/24" },
    });
    const sandboxes: TestNamespace[] = [];
    try {
      for (let i = 0; i < 50; i++) sandboxes.push(await TestNamespace.create(`flk-lhs${i}`));
      const seen = new Map<string, string>();
      const failures: string[] = [];
      await Promise.all(sandboxes.map(async (sandbox, i) => {
        for (let j = 0; j < 4; j++) {
          const containerId = `storm-${i}-${j}`;
          const add = await node.cni("ADD", { containerId, netns: sandbox.path });
          if (add.code !== 0) failures.push(`ADD ${containerId}: ${add.stdout}`);
          for (const ip of resultIps(add.json)) {
            // Addresses are handed out again only after their cooldown: never twice here.
            if (seen.has(ip)) failures.push(`${ip} given to ${seen.get(ip)} and ${containerId}`);
            seen.set(ip, containerId);
          }
          const del = await node.cni("DEL", { containerId, netns: sandbox.path });
          if (del.code !== 0) failures.push(`DEL ${containerId}: ${del.stdout}`);
        }
      }));
      assert.deepEqual(failures, []);
      await node.settled();
      await assertNodeHolds(node, [], "after the storm");
      const status = await flockStatusJson(node);
      for (const [family, allocated] of poolCounts(status)) {
        assert.equal(allocated, 0, `${family} addresses still allocated`);
      }
    } finally {
      for (const sandbox of sandboxes) await sandbox[Symbol.asyncDispose]();
    }
  },
});

Deno.test({
  name: "ADD, DEL, ADD, DEL of one container from 4 processes at once, and GCs among new ADDs",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:de::/64", cidr4: "10.223.0.0/24" },
    });
    const sandboxes: TestNamespace[] = [];
    try {
      for (let i = 0; i < 30; i++) sandboxes.push(await TestNamespace.create(`flk-lhq${i}`));
      const racing = sandboxes.slice(0, 15);
      const listed = sandboxes.slice(15);
      const valid = {
        "cni.dev/valid-attachments": listed.map((_, i) => ({
          containerID: `listed-${i}`,
          ifname: "eth0",
        })),
      };
      const outcomes = await Promise.all([
        ...racing.flatMap((sandbox, i) =>
          ["ADD", "DEL", "ADD", "DEL"].map((command) =>
            node.cni(command, { containerId: `race-${i}`, netns: sandbox.path })
          )
        ),
        ...listed.map((sandbox, i) =>
          node.cni("ADD", { containerId: `listed-${i}`, netns: sandbox.path })
        ),
        node.cni("GC", { ifname: "", extraConfig: valid }),
        node.cni("GC", { ifname: "", extraConfig: valid }),
      ]);
      assert.deepEqual(outcomes.filter((o) => o.code !== 0).map((o) => o.stdout), []);
      await node.settled();
      // Whatever order the racing requests ran in, every record is whole and alone.
      const records = storeRecords(node);
      const pods = records.map((r) => ({
        containerId: r.containerId,
        ips: [r.ipv6, r.ipv4].filter((ip) => ip !== undefined),
      }));
      await assertNodeHolds(node, pods, "after the race");
      for (let i = 0; i < listed.length; i++) {
        assert.ok(pods.some((p) => p.containerId === `listed-${i}`), `listed-${i} was released`);
      }
      for (const pod of pods) {
        const i = sandboxes.findIndex((_, k) =>
          pod.containerId === (k < 15 ? `race-${k}` : `listed-${k - 15}`)
        );
        assert.deepEqual((await podAddresses(sandboxes[i])).sort(), [...pod.ips].sort());
      }
      for (const pod of pods) {
        const i = sandboxes.findIndex((_, k) =>
          pod.containerId === (k < 15 ? `race-${k}` : `listed-${k - 15}`)
        );
        const del = await node.cni("DEL", {
          containerId: pod.containerId,
          netns: sandboxes[i].path,
        });
        assert.equal(del.code, 0, del.stdout);
      }
      await node.settled();
      await assertNodeHolds(node, [], "after deleting every pod");
    } finally {
      for (const sandbox of sandboxes) await sandbox[Symbol.asyncDispose]();
    }
  },
});

Deno.test({
  name: "two containers in one netns: refused ADDs and their DELs spare the other pod",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:df::/64", cidr4: "10.224.0.0/24" },
    });
    await using peer = await TestNamespace.create("flk-lhp");
    await using shared = await TestNamespace.create("flk-lhn");
    const peerPod = await addLivePod(node, "peer", peer.path);
    const first = await addLivePod(node, "first", shared.path);

    const clash = await node.cni("ADD", { containerId: "clash", netns: shared.path });
    for (const ip of first.ips) assert.ok(await ping(peer, ip), `${ip} after the refused ADD`);
    assert.notEqual(clash.code, 0, "eth0 is the first pod's");
    assert.equal((await node.cni("DEL", { containerId: "clash", netns: shared.path })).code, 0);
    // Another ifname does not help: the netns has the first pod's default routes.
    const second = await node.cni("ADD", {
      containerId: "second",
      netns: shared.path,
      ifname: "eth1",
    });
    assert.equal(second.json?.code, 7, second.stdout);
    await assertNodeHolds(node, [peerPod, first], "after the refused ADDs");

    // DELs interleaved with a successor taking eth0 at once.
    assert.equal((await node.cni("DEL", { containerId: "first", netns: shared.path })).code, 0);
    const third = await addLivePod(node, "third", shared.path);
    const delSecond = await node.cni("DEL", {
      containerId: "second",
      netns: shared.path,
      ifname: "eth1",
    });
    assert.equal(delSecond.code, 0, delSecond.stdout);
    await node.settled();
    await assertNodeHolds(node, [peerPod, third], "after the interleaved DELs");
    for (const ip of third.ips) assert.ok(await ping(peer, ip), ip);
    const check = await node.cni("CHECK", {
      containerId: "second",
      netns: shared.path,
      ifname: "eth1",
    });
    assert.notEqual(check.code, 0, "CHECK of a refused attachment fails");
  },
});
