/**
 * DEL answers before the pod's veth is gone, and an ADD into the same netns waits for that veth
 * to leave (its other end may still be the pod's `eth0`). The wait must hold whatever path the
 * ADD names the netns by: the runtime may pass `/proc/<pid>/ns/net` or another bind mount of the
 * one netns that the DEL named as `/run/netns/x`. Through the real plugin and agent, with the
 * veth's deletion made slow (test_slow_delete.ts) so that the ADD surely comes while it runs,
 * also when the DEL is the restarted agent's first request.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY, runOk } from "../helpers/exec.ts";
import { addLivePod, assertNodeHolds, podAddresses, resultIps } from "../helpers/node_state.ts";
import { SLOW_VETH_DELETE_ENV } from "../../agent/test_slow_delete.ts";

/** Long enough that the ADD surely starts while the first pod's veth is still being deleted. */
const SLOW_MS = 1_500;

/** A second path naming `ns`: a bind mount of its /run/netns file; removed on dispose. */
async function netnsAlias(ns: TestNamespace): Promise<AsyncDisposable & { path: string }> {
  const dir = await Deno.makeTempDir({ prefix: "flk-alias-" });
  const path = join(dir, "net");
  let mounted = false;
  const dispose = async () => {
    if (mounted) await runOk(["umount", path]);
    await Deno.remove(dir, { recursive: true });
  };
  try {
    await Deno.writeTextFile(path, "");
    await runOk(["mount", "--bind", ns.path, path]);
    mounted = true;
    assert.equal(Deno.statSync(path).ino, Deno.statSync(ns.path).ino, "the alias names the netns");
  } catch (e) {
    await dispose();
    throw e;
  }
  return { path, [Symbol.asyncDispose]: dispose };
}

Deno.test({
  name: "leaving veth: an ADD naming the DELed pod's netns by another path waits for its veth",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:e6::/64", cidr4: "10.230.0.0/24" },
      startAgent: false,
    });
    const env = { [SLOW_VETH_DELETE_ENV]: String(SLOW_MS) };
    await node.startAgent({ env });
    await using peerNs = await TestNamespace.create("flk-lvp");
    await using podNs = await TestNamespace.create("flk-lva");
    await using alias = await netnsAlias(podNs);
    const peer = await addLivePod(node, "peer", peerNs.path);

    /** `from` DELed by the netns's /run/netns path, then `to` ADDed at once by the alias. */
    const replace = async (from: string, to: string) => {
      const del = await node.cni("DEL", { containerId: from, netns: podNs.path });
      assert.equal(del.code, 0, `DEL ${from}: ${del.stdout}`);
      const started = performance.now();
      const add = await node.cni("ADD", { containerId: to, netns: alias.path });
      const addMs = Math.round(performance.now() - started);
      assert.equal(
        add.code,
        0,
        `ADD ${to} by the alias while ${from}'s veth leaves: ${add.stdout}`,
      );
      console.log(`ADD by another path during a ${SLOW_MS} ms veth deletion took ${addMs} ms`);
      const pod = { containerId: to, ips: resultIps(add.json) };
      assert.deepEqual((await podAddresses(podNs)).sort(), [...pod.ips].sort(), `${to}'s eth0`);
      for (const ip of pod.ips) assert.ok(await ping(peerNs, ip), `peer → ${to} ${ip}`);
      return pod;
    };

    await addLivePod(node, "first", podNs.path);
    const second = await replace("first", "second");
    await node.settled(SLOW_MS + 10_000);
    await assertNodeHolds(node, [peer, second], "after the first replacement");

    // The DEL is the restarted agent's first request: it has not looked at its records yet.
    await node.kill("SIGKILL");
    await node.startAgent({ env });
    const third = await replace("second", "third");
    await node.settled(SLOW_MS + 10_000);
    await assertNodeHolds(node, [peer, third], "after the replacement across a restart");

    for (const [id, ns] of [["third", podNs], ["peer", peerNs]] as const) {
      assert.equal((await node.cni("DEL", { containerId: id, netns: ns.path })).code, 0);
    }
    await node.settled(SLOW_MS + 10_000);
    await assertNodeHolds(node, [], "at the end");
  },
});
