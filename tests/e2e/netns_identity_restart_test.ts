/**
 * The ADD's "one flock interface per netns" refusal after an agent restart, through the real
 * plugin and agent: the agent skips the kernel's check for a netns no record may have its veth in
 * (agent/netns_identity.ts), and after a restart it must know again, from the kernel, which netns
 * the surviving pods are in, also when a pod's path no longer names its netns.
 */

import assert from "node:assert/strict";
import { FlockNode, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY, runOk } from "../helpers/exec.ts";
import { addLivePod, assertNodeHolds } from "../helpers/node_state.ts";
import { assertCniError } from "../helpers/cni_output.ts";
import { eventually } from "../helpers/eventually.ts";

/** A process inside `ns` (kept until killed): its /proc path names the netns after the mount. */
async function holdNetns(ns: TestNamespace): Promise<{ path: string; stop: () => Promise<void> }> {
  const sleeper = new Deno.Command("ip", {
    args: ["netns", "exec", ns.name, "sleep", "120"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const path = `/proc/${sleeper.pid}/ns/net`;
  const stop = async () => {
    try {
      sleeper.kill("SIGKILL");
    } catch { /* already gone */ }
    await sleeper.status;
  };
  try {
    const want = Deno.statSync(ns.path).ino;
    await eventually(
      "the sleeper to enter the netns",
      () => Promise.resolve(Deno.statSync(path).ino),
      (ino) => ino === want,
      5_000,
      20,
    );
  } catch (e) {
    await stop();
    throw e;
  }
  return { path, stop };
}

Deno.test({
  name: "restart: a second container's ADD into a surviving pod's netns is still refused",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({ config: { cidr6: "fd00:f7::/64" } });
    const shared = await TestNamespace.create("flk-nir");
    let holder: Awaited<ReturnType<typeof holdNetns>> | undefined;
    try {
      const first = await addLivePod(node, "first", shared.path);
      holder = await holdNetns(shared);
      const refusal = /CNI_NETNS .*already has container first's flock interface eth0/;

      // The first ADD after the restart: the identities come back from the kernel.
      await node.restartAgent();
      const viaProc = await node.cni("ADD", { containerId: "second", netns: holder.path });
      assertCniError(viaProc, 7, refusal);
      await assertNodeHolds(node, [first], "after the refused ADD");
      assert.equal((await node.cni("DEL", { containerId: "second", netns: holder.path })).code, 0);

      // The pod's path goes while the netns lives on (the sleeper) and is then reused by a new
      // netns: after a restart the record's path names another netns than its veth's other end.
      await runOk(["ip", "netns", "del", shared.name]);
      await runOk(["ip", "netns", "add", shared.name]);
      await node.restartAgent();
      // Whatever the start-up reconcile made of the record, the answer is the kernel's: refused
      // while a flock veth has its other end in that netns (the first pod's, kept there).
      const links = await runOk(["nsenter", `--net=${holder.path}`, "ip", "-j", "link", "show"]);
      const held = (JSON.parse(links.stdout) as { link_netnsid?: number }[])
        .some((l) => l.link_netnsid !== undefined);
      assert.ok(held, "the first pod's veth stays in its netns across the restart");
      const again = await node.cni("ADD", { containerId: "third", netns: holder.path });
      assertCniError(again, 7, refusal);
      await node.cni("DEL", { containerId: "third", netns: holder.path });
    } finally {
      await holder?.stop();
      await shared.remove();
    }
  },
});
