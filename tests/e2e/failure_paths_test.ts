/**
 * No address twice on the pod lifecycle's failure paths, through the real plugin and agent: a
 * failed ADD whose half-made veth survives its cleanup, a second container given a netns that
 * already has a flock interface, and cooldowns that outlive an agent restart.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY, run, runOk } from "../helpers/exec.ts";
import {
  addLivePod,
  assertNodeHolds,
  podAddresses,
  resultIps,
  storeRecords,
} from "../helpers/node_state.ts";
import {
  FAIL_ADD_AFTER_DATAPATH_ENV,
  FAIL_VETH_DELETE_ENV,
  RELEASE_SWEEP_ENV,
} from "../../agent/test_faults.ts";
import { assertCniError } from "../helpers/cni_output.ts";
import { eventually } from "../helpers/eventually.ts";
import { flockStatusJson, loggedEvents, poolCounts } from "../helpers/status_probe.ts";

/** The network config fields that pass pod annotations as the CRI does. */
function annotated(annotations: Record<string, string>): Record<string, unknown> {
  return { runtimeConfig: { "io.kubernetes.cri.pod-annotations": annotations } };
}

const LOWEST = annotated({ "flock.fritzlab.net/ip-algo": "lowest" });

Deno.test({
  name: "failed ADD whose veth deletion fails: its addresses stay held until the sweep",
  ...ROOT_ONLY,
  async fn() {
    const sweepMs = 4_000;
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:f1::/120", cidr4: "10.231.0.0/29" },
      // Released addresses cool for a minute: "cooling" proves the sweep released them.
      cooldownMs: 60_000,
      startAgent: false,
    });
    await node.startAgent({
      env: {
        [FAIL_ADD_AFTER_DATAPATH_ENV]: "1",
        [FAIL_VETH_DELETE_ENV]: "1",
        [RELEASE_SWEEP_ENV]: String(sweepMs),
      },
    });
    await using half = await TestNamespace.create("flk-fph");
    await using other = await TestNamespace.create("flk-fpo");
    await using peer = await TestNamespace.create("flk-fpp");

    const failed = await node.cni("ADD", {
      containerId: "half",
      netns: half.path,
      extraConfig: LOWEST,
    });
    // The runtime sees the ADD's own error, not its cleanup's.
    assertCniError(failed, 999, /injected ADD failure after the datapath/);
    const held = ["fd00:f1::1", "10.231.0.1"];
    assert.deepEqual(
      (await podAddresses(half)).sort(),
      [...held].sort(),
      "the half-made veth survived with the addresses in the pod",
    );
    const stuck = storeRecords(node).find((r) => r.containerId === "half");
    assert.deepEqual(
      stuck && { state: stuck.state, ips: [stuck.ipv6, stuck.ipv4] },
      { state: "releasing", ips: held },
      "the failed ADD's record is releasing, its addresses held",
    );

    // Another pod asking for the lowest free addresses must not get the surviving veth's.
    const second = await addLivePod(node, "other", other.path, {
      "flock.fritzlab.net/ip-algo": "lowest",
    });
    for (const ip of held) assert.ok(!second.ips.includes(ip), `${ip} handed out twice`);
    assert.deepEqual(second.ips.sort(), ["10.231.0.2", "fd00:f1::2"]);
    const peerPod = await addLivePod(node, "peer", peer.path);
    for (const ip of second.ips) assert.ok(await ping(peer, ip), `peer → ${ip}`);

    // The sweep deletes the veth and releases the addresses into their cooldown.
    await eventually(
      "the sweep to finish the failed ADD's release",
      () => Promise.resolve(storeRecords(node).map((r) => r.containerId)),
      (ids) => !ids.includes("half"),
      sweepMs + 10_000,
      50,
    );
    await loggedEvents(node, (e) => e.msg === "finished a stuck release");
    assert.deepEqual(await podAddresses(half), [], "the half-made veth is gone");
    assert.deepEqual(
      poolCounts(await flockStatusJson(node)),
      [["ipv6", 2, 1], ["ipv4", 2, 1]],
      "two pods' addresses allocated, the failed ADD's cooling",
    );
    await assertNodeHolds(node, [second, peerPod], "after the sweep");
    // The runtime's DEL for the failed ADD finds nothing left to do.
    assert.equal((await node.cni("DEL", { containerId: "half", netns: half.path })).code, 0);
    await assertNodeHolds(node, [second, peerPod], "after the DEL of the failed ADD");
  },
});

Deno.test({
  name: "two containers in one netns: the second ADD is refused whatever path names the netns",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:f2::/64", cidr4: "10.232.0.0/24" },
    });
    await using peer = await TestNamespace.create("flk-fpp");
    const shared = await TestNamespace.create("flk-fps");
    try {
      const peerPod = await addLivePod(node, "peer", peer.path);
      const first = await addLivePod(node, "first", shared.path);
      const refusal = new RegExp(`CNI_NETNS .*already has container first's flock interface eth0`);

      const second = await node.cni("ADD", {
        containerId: "second",
        netns: shared.path,
        ifname: "eth1",
      });
      assertCniError(second, 7, refusal);
      await assertNodeHolds(node, [peerPod, first], "after the refused ADD: nothing allocated");
      for (const ip of first.ips) assert.ok(await ping(peer, ip), `${ip} after the refused ADD`);
      // The runtime's DEL of the refused ADD spares the first pod.
      const delSecond = await node.cni("DEL", {
        containerId: "second",
        netns: shared.path,
        ifname: "eth1",
      });
      assert.equal(delSecond.code, 0, delSecond.stdout);

      // Another path naming the same netns: /proc/PID/ns/net of a process inside it.
      const sleeper = new Deno.Command("ip", {
        args: ["netns", "exec", shared.name, "sleep", "60"],
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        const procPath = `/proc/${sleeper.pid}/ns/net`;
        await eventually(
          "the sleeper to enter the netns",
          () => Promise.resolve(Deno.statSync(procPath).ino),
          (ino) => ino === Deno.statSync(shared.path).ino,
          5_000,
          20,
        );
        const third = await node.cni("ADD", {
          containerId: "third",
          netns: procPath,
          ifname: "eth2",
        });
        assertCniError(third, 7, refusal);
        await assertNodeHolds(node, [peerPod, first], "after the ADD through another path");
      } finally {
        sleeper.kill("SIGKILL");
        await sleeper.status;
      }
      await assertNodeHolds(node, [peerPod, first], "with the second path gone");
      for (const ip of first.ips) assert.ok(await ping(peer, ip), `${ip} after the refused ADDs`);

      // Once the first pod's DEL has answered, its netns takes a successor at once.
      assert.equal((await node.cni("DEL", { containerId: "first", netns: shared.path })).code, 0);
      const successor = await addLivePod(node, "successor", shared.path);
      await assertNodeHolds(node, [peerPod, successor], "after the successor's ADD");

      // The netns goes without a DEL (a runtime crashed) and a new one is made at the same path:
      // the stale record does not block it.
      await shared.remove();
      await runOk(["ip", "netns", "add", shared.name]);
      const reused = await node.cni("ADD", { containerId: "reuser", netns: shared.path });
      assert.equal(reused.code, 0, reused.stdout);
      for (const ip of resultIps(reused.json)) assert.ok(await ping(peer, ip), `peer → ${ip}`);
      assert.equal((await node.cni("DEL", { containerId: "successor" })).code, 0);
      assert.equal((await node.cni("DEL", { containerId: "reuser", netns: shared.path })).code, 0);
      await node.settled();
      await assertNodeHolds(node, [peerPod], "at the end");
    } finally {
      await shared.remove();
      await run(["ip", "netns", "del", shared.name]);
    }
  },
});

Deno.test({
  name: "restart: a cooling address cools from its release, not from the restart",
  ...ROOT_ONLY,
  async fn() {
    const cooldownMs = 5_000;
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:f3::/120", cidr4: "10.233.0.0/29" },
      cooldownMs,
    });
    await using pod = await TestNamespace.create("flk-fpc");
    const first = await node.cni("ADD", { containerId: "a", netns: pod.path, extraConfig: LOWEST });
    assert.deepEqual(resultIps(first.json), ["fd00:f3::1", "10.233.0.1"], first.stdout);
    assert.equal((await node.cni("DEL", { containerId: "a", netns: pod.path })).code, 0);
    await node.settled();
    const releasedBy = Date.now();

    await new Promise((r) => setTimeout(r, 1_500));
    await node.restartAgent();
    // Not shortened: right after the restart the address still cools.
    const during = await node.cni("ADD", {
      containerId: "b",
      netns: pod.path,
      extraConfig: LOWEST,
    });
    assert.ok(Date.now() - releasedBy < cooldownMs, "the restart took longer than the cooldown");
    assert.deepEqual(resultIps(during.json), ["fd00:f3::2", "10.233.0.2"], during.stdout);
    assert.equal((await node.cni("DEL", { containerId: "b", netns: pod.path })).code, 0);
    await node.settled();

    // Not extended: once the cooldown since the release is over, the address is free, although
    // a cooldown counted from the restart would still run.
    await new Promise((r) => setTimeout(r, releasedBy + cooldownMs + 300 - Date.now()));
    const after = await node.cni("ADD", { containerId: "c", netns: pod.path, extraConfig: LOWEST });
    assert.deepEqual(resultIps(after.json), ["fd00:f3::1", "10.233.0.1"], after.stdout);
  },
});
