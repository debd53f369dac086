/**
 * Races around DEL's background veth deletion, through the real plugin and agent: what runs
 * while a DEL that already answered is still deleting its veth (an ADD of the same container, an
 * ADD of a container whose host interface name collides, GC, CHECK, STATUS), a kill -9 right
 * after the answer, and a stuck release meeting a colliding ADD. After each, the node holds
 * exactly the live pods: one committed record each, its link, its routes, the pod's own
 * interface carrying exactly the record's addresses, and no address twice.
 */

import assert from "node:assert/strict";
import { type CniOutcome, FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import {
  addLivePod,
  assertNodeHolds,
  type LivePod,
  podAddresses,
  resultIps,
  storeRecords,
} from "../helpers/node_state.ts";
import { hostIfaceName } from "../../agent/datapath.ts";
import { FAIL_VETH_DELETE_ENV, RELEASE_SWEEP_ENV } from "../../agent/test_faults.ts";
import { eventually } from "../helpers/eventually.ts";
import { SLOW_VETH_DELETE_ENV } from "../../agent/test_slow_delete.ts";

// fnv1a32 of both is equal (see host_iface_collision_test.ts).
const FIRST = "collide462789";
const SECOND = "collide679192";

function ok(r: CniOutcome, what: string): CniOutcome {
  assert.equal(r.code, 0, `${what}: ${r.stdout}`);
  return r;
}

/** Each pod's own interface carries exactly the addresses its record holds. */
async function assertPodsCarry(
  node: FlockNode,
  pods: { pod: LivePod; ns: TestNamespace }[],
): Promise<void> {
  const records = new Map(
    storeRecords(node).map((r) => [
      r.containerId,
      [r.ipv6, r.ipv4].filter(Boolean).sort(),
    ]),
  );
  for (const { pod, ns } of pods) {
    assert.deepEqual(
      (await podAddresses(ns)).sort(),
      records.get(pod.containerId),
      `${pod.containerId}: addresses in its netns vs its record`,
    );
  }
}

Deno.test({
  name: "release races: ADDs, GC, CHECK and STATUS while an answered DEL's veth is still going",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:e7::/64", cidr4: "10.231.0.0/24" },
    });
    await using peerNs = await TestNamespace.create("flk-rrp");
    await using nsA = await TestNamespace.create("flk-rra");
    await using nsB = await TestNamespace.create("flk-rrb");
    const peer = await addLivePod(node, "peer", peerNs.path);
    let first = await addLivePod(node, FIRST, nsA.path);

    // DEL answered; its veth deletion runs. At once: the same container back into the same
    // netns, the colliding container, a CHECK of another pod and STATUS.
    ok(await node.cni("DEL", { containerId: FIRST, netns: nsA.path }), "DEL first");
    const [again, second, check, status] = await Promise.all([
      node.cni("ADD", { containerId: FIRST, netns: nsA.path }),
      node.cni("ADD", { containerId: SECOND, netns: nsB.path }),
      node.cni("CHECK", { containerId: "peer", netns: peerNs.path }),
      node.cni("STATUS"),
    ]);
    ok(again, "ADD first again");
    ok(second, "ADD second");
    ok(check, "CHECK peer");
    ok(status, "STATUS");
    first = { containerId: FIRST, ips: resultIps(again.json) };
    const secondPod = { containerId: SECOND, ips: resultIps(second.json) };
    await assertNodeHolds(node, [peer, first, secondPod], "after the racing ADDs");
    await assertPodsCarry(node, [{ pod: first, ns: nsA }, { pod: secondPod, ns: nsB }]);
    for (const ip of [...first.ips, ...secondPod.ips]) {
      assert.ok(await ping(peerNs, ip), `peer → ${ip}`);
    }

    // DEL answered, GC at once (the runtime lists the others), and a DEL of the other pod.
    ok(await node.cni("DEL", { containerId: FIRST, netns: nsA.path }), "DEL first again");
    const valid = [peer, secondPod].map((p) => ({ containerID: p.containerId, ifname: "eth0" }));
    const [gc, delSecond] = await Promise.all([
      node.cni("GC", { ifname: "", extraConfig: { "cni.dev/valid-attachments": valid } }),
      node.cni("DEL", { containerId: SECOND, netns: nsB.path }),
    ]);
    ok(gc, "GC");
    ok(delSecond, "DEL second");
    await assertNodeHolds(node, [peer], "after GC among DELs");
    // The runtime repeats both DELs: nothing of the peer is touched.
    ok(await node.cni("DEL", { containerId: FIRST, netns: nsA.path }), "DEL first, repeated");
    ok(await node.cni("DEL", { containerId: SECOND, netns: nsB.path }), "DEL second, repeated");
    await assertNodeHolds(node, [peer], "after repeated DELs");

    // kill -9 right after a DEL answered (its veth deletion in flight), restart, and another
    // container into the same netns.
    first = await addLivePod(node, FIRST, nsA.path);
    ok(await node.cni("DEL", { containerId: FIRST, netns: nsA.path }), "DEL before the kill");
    await node.kill("SIGKILL");
    await node.startAgent();
    const successor = await addLivePod(node, "successor", nsA.path);
    await assertNodeHolds(node, [peer, successor], "after kill -9 and a successor");
    await assertPodsCarry(node, [{ pod: successor, ns: nsA }]);
    for (const ip of successor.ips) assert.ok(await ping(peerNs, ip), `peer → successor ${ip}`);
    ok(await node.cni("DEL", { containerId: "successor", netns: nsA.path }), "DEL successor");
    ok(await node.cni("DEL", { containerId: "peer", netns: peerNs.path }), "DEL peer");
    await assertNodeHolds(node, [], "at the end");
  },
});

Deno.test({
  name: "release races: a stuck release meets a colliding ADD, its own re-ADD, GC and a restart",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:e8::/64", cidr4: "10.232.0.0/24" },
      startAgent: false,
    });
    // The first veth deletion fails; the sweep is far enough away not to finish it meanwhile.
    await node.startAgent({
      env: { [FAIL_VETH_DELETE_ENV]: "1", [RELEASE_SWEEP_ENV]: String(600_000) },
    });
    await using peerNs = await TestNamespace.create("flk-rsp");
    await using nsA = await TestNamespace.create("flk-rsa");
    await using nsB = await TestNamespace.create("flk-rsb");
    const peer = await addLivePod(node, "peer", peerNs.path);
    await addLivePod(node, FIRST, nsA.path);
    ok(await node.cni("DEL", { containerId: FIRST, netns: nsA.path }), "DEL first (fails late)");
    await eventually(
      "the first pod's release to be stuck",
      async () => (await node.agentLog()).includes("the attachment stays releasing"),
      (v) => v,
      5_000,
      50,
    );
    // The colliding container may not take the stuck veth's name.
    const second = await addLivePod(node, SECOND, nsB.path);
    const records = new Map(storeRecords(node).map((r) => [r.containerId, r]));
    assert.equal(records.get(FIRST)?.state, "releasing");
    assert.equal(records.get(FIRST)?.hostIface, hostIfaceName(FIRST));
    assert.notEqual(records.get(SECOND)?.hostIface, hostIfaceName(FIRST), "second's own name");
    for (const ip of second.ips) assert.ok(await ping(peerNs, ip), `peer → second ${ip}`);

    // CHECK of the stuck one says it has no attachment; GC keeping everyone changes nothing.
    const check = await node.cni("CHECK", { containerId: FIRST, netns: nsA.path });
    assert.equal(check.json?.code, 3, check.stdout);
    const valid = [peer.containerId, FIRST, SECOND].map((id) => ({
      containerID: id,
      ifname: "eth0",
    }));
    ok(
      await node.cni("GC", { ifname: "", extraConfig: { "cni.dev/valid-attachments": valid } }),
      "GC",
    );

    // The first container comes back into its netns: its stuck release is finished first.
    const first = await addLivePod(node, FIRST, nsA.path);
    await assertNodeHolds(node, [peer, first, second], "after the re-ADD");
    await assertPodsCarry(node, [{ pod: first, ns: nsA }, { pod: second, ns: nsB }]);
    for (const ip of [...first.ips, ...second.ips]) {
      assert.ok(await ping(peerNs, ip), `peer → ${ip}`);
    }
    // A plain restart: the first veth deletion of the restarted agent must not fail again.
    await node.restartAgent({ without: [FAIL_VETH_DELETE_ENV] });
    await assertNodeHolds(node, [peer, first, second], "after a restart");

    // The second goes, and a repeated DEL of it leaves the first (holder of its plain name).
    ok(await node.cni("DEL", { containerId: SECOND, netns: nsB.path }), "DEL second");
    ok(await node.cni("DEL", { containerId: SECOND, netns: nsB.path }), "DEL second, repeated");
    await assertNodeHolds(node, [peer, first], "after the second's DELs");
    for (const ip of first.ips) assert.ok(await ping(peerNs, ip), `peer → first ${ip}`);
    for (const [id, ns] of [[FIRST, nsA], ["peer", peerNs]] as const) {
      ok(await node.cni("DEL", { containerId: id, netns: ns.path }), `DEL ${id}`);
    }
    await assertNodeHolds(node, [], "at the end");
  },
});

Deno.test({
  name: "release races: a slow veth deletion holds up its own container only, not the node",
  ...ROOT_ONLY,
  async fn() {
    const slowMs = 12_000;
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:e9::/64", cidr4: "10.233.0.0/24" },
      startAgent: false,
    });
    // The stuck-release sweep runs every 100 ms, so it meets the slow deletion many times.
    await node.startAgent({
      env: { [SLOW_VETH_DELETE_ENV]: String(slowMs), [RELEASE_SWEEP_ENV]: "100" },
    });
    await using peerNs = await TestNamespace.create("flk-rwp");
    await using nsA = await TestNamespace.create("flk-rwa");
    await using nsB = await TestNamespace.create("flk-rwb");
    const peer = await addLivePod(node, "peer", peerNs.path);
    await addLivePod(node, "slow", nsA.path);
    ok(await node.cni("DEL", { containerId: "slow", netns: nsA.path }), "DEL slow");
    const deletedAt = performance.now();
    // Let several sweeps see the releasing record whose deletion is still running.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const started = performance.now();
    const [add, status] = await Promise.all([
      node.cni("ADD", { containerId: "other", netns: nsB.path }),
      node.cni("STATUS"),
    ]);
    const addMs = Math.round(performance.now() - started);
    ok(add, "ADD other");
    ok(status, "STATUS");
    const other = { containerId: "other", ips: resultIps(add.json) };
    console.log(`ADD of another pod during a ${slowMs} ms veth deletion took ${addMs} ms`);
    assert.ok(
      addMs < slowMs / 3,
      `an ADD of another pod waited ${addMs} ms for the slow deletion of ${slowMs} ms`,
    );
    ok(await node.cni("DEL", { containerId: "other", netns: nsB.path }), "DEL other");
    // The slow release ends by itself, once, with nothing left over.
    await node.settled(slowMs + 10_000);
    console.log(
      `the slow release settled ${Math.round(performance.now() - deletedAt)} ms after DEL`,
    );
    await assertNodeHolds(node, [peer], "after the slow release");
    assert.ok(other.ips.length === 2);
    ok(await node.cni("DEL", { containerId: "peer", netns: peerNs.path }), "DEL peer");
    await assertNodeHolds(node, [], "at the end");
  },
});

Deno.test({
  name: "release races: a GC during a slow veth deletion neither waits for it nor holds up ADDs",
  ...ROOT_ONLY,
  async fn() {
    const slowMs = 12_000;
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:ea::/64", cidr4: "10.234.0.0/24" },
      startAgent: false,
    });
    await node.startAgent({ env: { [SLOW_VETH_DELETE_ENV]: String(slowMs) } });
    await using peerNs = await TestNamespace.create("flk-rgp");
    await using nsA = await TestNamespace.create("flk-rga");
    await using nsB = await TestNamespace.create("flk-rgb");
    await using nsC = await TestNamespace.create("flk-rgc");
    const peer = await addLivePod(node, "peer", peerNs.path);
    await addLivePod(node, "slow", nsA.path);
    await addLivePod(node, "stale", nsC.path);
    ok(await node.cni("DEL", { containerId: "slow", netns: nsA.path }), "DEL slow");
    // The runtime's GC lists the peer only: "stale" goes, "slow" is already going.
    const valid = [{ containerID: "peer", ifname: "eth0" }];
    const started = performance.now();
    const gcDone = node.cni("GC", {
      ifname: "",
      extraConfig: { "cni.dev/valid-attachments": valid },
    })
      .then((r) => ({ r, ms: Math.round(performance.now() - started) }));
    await new Promise((resolve) => setTimeout(resolve, 100));
    const add = await node.cni("ADD", { containerId: "other", netns: nsB.path });
    const addMs = Math.round(performance.now() - started);
    const gc = await gcDone;
    console.log(`during a ${slowMs} ms veth deletion: GC took ${gc.ms} ms, an ADD ${addMs} ms`);
    ok(gc.r, "GC");
    ok(add, "ADD other");
    assert.ok(gc.ms < slowMs / 3, `GC waited ${gc.ms} ms for the slow deletion`);
    assert.ok(addMs < slowMs / 3, `an ADD waited ${addMs} ms behind the GC`);
    const other = { containerId: "other", ips: resultIps(add.json) };
    await node.settled(slowMs + 10_000);
    await assertNodeHolds(node, [peer, other], "after the slow release and the GC");
    for (const [id, ns] of [["other", nsB], ["peer", peerNs]] as const) {
      ok(await node.cni("DEL", { containerId: id, netns: ns.path }), `DEL ${id}`);
    }
    await assertNodeHolds(node, [], "at the end");
  },
});
