/**
 * A crash inside an ADD retried with another CNI_NETNS (the runtime made a new sandbox for the
 * same container): the retry moves the pod's veth to the new netns and records the new path, two
 * steps a SIGKILL can split (crash point `add-retry-new-netns`). After the restart the record must
 * name where the pod is going, not the abandoned sandbox: the start-up repair, DEL's wait for the
 * veth and CHECK all act on the record's netns. Whatever the runtime does next (retry the ADD or
 * DEL it), the node converges: no leak, no duplicate, no orphan link or route, the pod reachable
 * in its new netns or cleanly removed.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { agentExit, TRY_AGAIN } from "../helpers/agent_crash.ts";
import {
  addLivePod,
  assertNodeHolds,
  hostIfaceOf,
  podAddresses,
  resultIps,
  storeRecords,
} from "../helpers/node_state.ts";
import { CRASH_ENV } from "../../agent/crash_points.ts";
import { SLOW_VETH_DELETE_ENV } from "../../agent/test_slow_delete.ts";

Deno.test({
  name: "crash inside an ADD retried with a new netns: the restart converges",
  ...ROOT_ONLY,
  async fn(t) {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:c9::/64", cidr4: "10.201.0.0/24" },
    });
    await using peerNs = await TestNamespace.create("flk-rn");
    const peer = await addLivePod(node, "peer", peerNs.path);

    /**
     * The victim added in `oldNs`, then its ADD retried in `newNs` by an agent that dies inside
     * it; the agent restarted (with `env`). Returns the victim's addresses.
     */
    const crashInRetry = async (
      oldNs: TestNamespace,
      newNs: TestNamespace,
      env: Record<string, string> = {},
    ) => {
      const first = await node.cni("ADD", { containerId: "victim", netns: oldNs.path });
      assert.equal(first.code, 0, first.stdout);
      await node.kill();
      await node.startAgent({ env: { [CRASH_ENV]: "add-retry-new-netns" } });
      const retry = await node.cni("ADD", { containerId: "victim", netns: newNs.path });
      assert.equal(retry.code, 1, `the ADD must fail while the agent dies: ${retry.stdout}`);
      assert.equal(retry.json?.code, TRY_AGAIN, retry.stdout);
      assert.equal((await agentExit(node)).signal, "SIGKILL", "the agent died in the retry");
      await node.kill();
      await node.startAgent({ env });
      return resultIps(first.json);
    };
    const reachableIn = async (ns: TestNamespace, ips: string[]) => {
      assert.deepEqual(
        await podAddresses(ns),
        [...ips].sort(),
        `the pod's addresses in ${ns.name}`,
      );
      for (const ip of ips) assert.ok(await ping(peerNs, ip), `peer → victim ${ip}`);
    };

    await t.step("the record names the new netns after the restart", async () => {
      await using oldNs = await TestNamespace.create("flk-rn");
      await using newNs = await TestNamespace.create("flk-rn");
      const ips = await crashInRetry(oldNs, newNs);
      const victim = storeRecords(node).find((r) => r.containerId === "victim");
      assert.equal(victim?.netns, newNs.path, "the record must not name the abandoned netns");
      // The runtime retries the ADD: the same addresses, the pod in the new netns.
      const again = await node.cni("ADD", { containerId: "victim", netns: newNs.path });
      assert.equal(again.code, 0, again.stdout);
      assert.deepEqual(resultIps(again.json).sort(), [...ips].sort());
      await reachableIn(newNs, ips);
      assert.deepEqual(await podAddresses(oldNs), [], "nothing left in the old netns");
      await assertNodeHolds(node, [peer, { containerId: "victim", ips }]);
      assert.equal((await node.cni("DEL", { containerId: "victim", netns: newNs.path })).code, 0);
      await node.settled();
      await assertNodeHolds(node, [peer], "after the DEL");
    });

    await t.step(
      "a start-up repair after the crash sets the pod up in the new netns, not the old",
      async () => {
        await using oldNs = await TestNamespace.create("flk-rn");
        await using newNs = await TestNamespace.create("flk-rn");
        const ips = await crashInRetry(oldNs, newNs);
        // The host veth loses its state while the agent is down (an operator's `ip link set
        // down`, say): the next start repairs the pod where its record says it lives.
        await node.kill();
        await node.ns.ip(["link", "set", hostIfaceOf(node, "victim"), "down"]);
        await node.startAgent();
        await reachableIn(newNs, ips);
        assert.deepEqual(await podAddresses(oldNs), [], "nothing moved into the old netns");
        await assertNodeHolds(node, [peer, { containerId: "victim", ips }]);
        // The runtime gives the ADD up: its DEL removes the pod cleanly.
        const del = await node.cni("DEL", { containerId: "victim", netns: newNs.path });
        assert.equal(del.code, 0, del.stdout);
        await node.settled();
        await assertNodeHolds(node, [peer], "after the DEL");
        assert.deepEqual(await podAddresses(newNs), [], "the pod interface is gone");
      },
    );

    await t.step(
      "a DEL after the crash, then another container's ADD into the same netns, succeeds",
      async () => {
        await using oldNs = await TestNamespace.create("flk-rn");
        await using newNs = await TestNamespace.create("flk-rn");
        // The restarted agent's first veth deletion takes a second (a busy kernel).
        await crashInRetry(oldNs, newNs, { [SLOW_VETH_DELETE_ENV]: "1000" });
        // DEL answers before the veth is gone; an ADD into that netns waits for it to go.
        const del = await node.cni("DEL", { containerId: "victim", netns: newNs.path });
        assert.equal(del.code, 0, del.stdout);
        const next = await addLivePod(node, "next", newNs.path);
        await reachableIn(newNs, next.ips);
        await assertNodeHolds(node, [peer, next]);
        assert.equal((await node.cni("DEL", { containerId: "next", netns: newNs.path })).code, 0);
        await node.settled();
        await assertNodeHolds(node, [peer]);
      },
    );

    await t.step(
      "a retry refused in the new netns leaves the record naming the netns the pod lives in",
      async () => {
        await using podNs = await TestNamespace.create("flk-rn");
        const victim = await addLivePod(node, "victim", podNs.path);
        // The peer's netns already has a flock interface: the retry is refused before the
        // pod's veth moves, so the pod stays where it was and the record must say so.
        const refused = await node.cni("ADD", { containerId: "victim", netns: peerNs.path });
        assert.equal(refused.json?.code, 7, refused.stdout);
        assert.equal(
          storeRecords(node).find((r) => r.containerId === "victim")?.netns,
          podNs.path,
        );
        await reachableIn(podNs, victim.ips);
        await assertNodeHolds(node, [peer, victim]);
        // The next start repairs a lost host veth state where the pod is.
        await node.kill();
        await node.ns.ip(["link", "set", hostIfaceOf(node, "victim"), "down"]);
        await node.startAgent();
        await reachableIn(podNs, victim.ips);
        assert.equal((await node.cni("DEL", { containerId: "victim", netns: podNs.path })).code, 0);
        await node.settled();
        await assertNodeHolds(node, [peer]);
      },
    );

    assert.equal((await node.cni("DEL", { containerId: "peer", netns: peerNs.path })).code, 0);
    await node.settled();
    assert.deepEqual(storeRecords(node), []);
    await assertNodeHolds(node, []);
  },
});
