/**
 * The running agent's periodic sweep learns back a record unknown since a restart (its path
 * names another netns than its veth's), with no CHECK and no request at all: its log says so
 * within a few sweeps (the sweep interval shortened by the tests' env). The cost side (no link
 * dump at a new pod's ADD afterwards) is counted in agent/netns_relocate_test.ts.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT_ONLY, runOk } from "../helpers/exec.ts";
import { FlockNode, TestNamespace } from "../helpers/flock.ts";
import { RELEASE_SWEEP_ENV } from "../../agent/test_faults.ts";

const SWEEP_MS = 100;

/** The agent's log lines saying it learnt unknown records back. */
async function relocations(node: FlockNode): Promise<{ located: number }[]> {
  return (await node.agentLog()).split("\n")
    .filter((line) => line.includes("learnt where unknown records' veths are"))
    .map((line) => JSON.parse(line));
}

Deno.test({
  name: "agent sweep: a record unknown since a restart is learnt back without any request",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:e7::/64", cidr4: "10.231.0.0/24" },
      startAgent: false,
    });
    await node.startAgent({ env: { [RELEASE_SWEEP_ENV]: String(SWEEP_MS) } });
    await using podNs = await TestNamespace.create("flk-rsp");
    await using otherNs = await TestNamespace.create("flk-rso");
    const dir = await Deno.makeTempDir({ prefix: "flk-rs-" });
    const alias = join(dir, "net");
    let mounted = false;
    try {
      await Deno.writeTextFile(alias, "");
      await runOk(["mount", "--bind", podNs.path, alias]);
      mounted = true;
      const add = await node.cni("ADD", { containerId: "lost", netns: alias });
      assert.equal(add.code, 0, add.stdout + add.stderr);
      // The record's path names another netns while its veth stays in the pod's.
      await runOk(["umount", alias]);
      await runOk(["mount", "--bind", otherNs.path, alias]);
      assert.deepEqual(await relocations(node), [], "nothing was unknown before the restart");

      await node.restartAgent();
      let learnt: { located: number }[] = [];
      for (let i = 0; i < 100 && !learnt.length; i++) {
        await new Promise((resolve) => setTimeout(resolve, SWEEP_MS));
        learnt = await relocations(node);
      }
      assert.equal(learnt[0]?.located, 1, await node.agentLog());

      const del = await node.cni("DEL", { containerId: "lost", netns: podNs.path });
      assert.equal(del.code, 0, del.stdout + del.stderr);
      await node.settled();
      assert.deepEqual(await node.flockLinks(), []);
    } finally {
      if (mounted) await runOk(["umount", alias]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
