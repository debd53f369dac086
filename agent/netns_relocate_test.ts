/**
 * The agent's sweep learns back where an unknown record's veth is (netns_relocate.ts), without
 * any CHECK: after one sweep a new pod's ADD skips the link dump of its netns. A record whose
 * netns no runtime names stays unknown and is looked for with a back-off, not at every sweep;
 * once its veth is gone it is no longer unknown. In-process with the real pieces (as
 * pod_handler_netns_learn_test): a node namespace, pod namespaces, a store in a temp dir, and
 * PodHandlers as the agent makes them (a new one is a restart); link dumps are counted.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT_ONLY, runOk } from "../tests/helpers/exec.ts";
import { createNode, TestNamespace } from "../tests/helpers/netns.ts";
import { rpcRequest } from "../tests/helpers/rpc_request.ts";
import { getLinkByName, Handle } from "../netlink/mod.ts";
import {
  linkDumpsOf,
  linkDumpsOfNewPod as dumpsOfNewPod,
  restartableHandler,
} from "../tests/helpers/restartable_handler.ts";
import { parseNodeConfig } from "./config.ts";
import type { PodHandler } from "./pod_handler.ts";
import type { RelocateReport } from "./netns_relocate.ts";
import type { RpcRequest } from "./protocol.ts";

const node = parseNodeConfig({ cidr6: "fd00:e6::/64", cidr4: "10.230.0.0/24" }, "reloc");

const request = (command: RpcRequest["command"], containerId: string, netns: string) =>
  rpcRequest(command, containerId, netns, "reloc");

/** Link dumps one new pod's ADD into `netns` sends (the pod is deleted again). */
const linkDumpsOfNewPod = (handler: PodHandler, id: string, netns: string) =>
  dumpsOfNewPod(handler, id, netns, "reloc");

/** Mounts `source` at `target` (made as an empty file first). */
async function bindMount(source: string, target: string): Promise<void> {
  await Deno.writeTextFile(target, "");
  await runOk(["mount", "--bind", source, target]);
}

/** Unmounts whatever of `targets` is mounted (a failed test leaves no mount behind). */
async function unmountAll(targets: string[]): Promise<void> {
  for (const target of targets) {
    await new Deno.Command("umount", { args: [target], stdout: "null", stderr: "null" }).output();
  }
}

Deno.test({
  name: "netns relocate: one sweep learns an unknown record back, no CHECK needed",
  ...ROOT_ONLY,
  async fn() {
    await using fixture = await createNode({ prefix: "flk-rl" });
    await using podNs = await TestNamespace.create("flk-rlp");
    await using otherNs = await TestNamespace.create("flk-rlo");
    await using newNs = await TestNamespace.create("flk-rln");
    const dir = await Deno.makeTempDir({ prefix: "flk-rl-" });
    // The record's path: a bind mount of the pod's netns, later of another one.
    const alias = join(dir, "net");
    using handle = Handle.forNetns(fixture.node.path);
    try {
      using agent = restartableHandler(handle, dir, node);
      await bindMount(podNs.path, alias);
      let handler = agent.restart();
      await handler.add(request("ADD", "lost", alias));
      // The record's path names another netns while its veth stays in the pod's.
      await runOk(["umount", alias]);
      await runOk(["mount", "--bind", otherNs.path, alias]);

      handler = agent.restart();
      await linkDumpsOfNewPod(handler, "first", newNs.path);
      assert.equal(await linkDumpsOfNewPod(handler, "unknown", newNs.path), 1, "unknown at first");
      const sweep = await linkDumpsOf(() => handler.relocateUnknownNetns());
      assert.deepEqual(
        { ...sweep.value, scanned: 0 },
        { lookedFor: 1, located: 1, vanished: 0, notFound: 0, scanned: 0 },
      );
      assert.ok(sweep.value.scanned >= 1, "found among the named netns");
      assert.equal(sweep.dumps, 1, "one node link dump for the sweep");
      assert.equal(
        await linkDumpsOfNewPod(handler, "after-sweep", newNs.path),
        0,
        "after one sweep, a new pod's ADD skips the dump",
      );
      // Known by the netns it was found in: a second container there is still refused.
      await assert.rejects(
        handler.add(request("ADD", "intruder", podNs.path)),
        /already has container lost's flock interface eth0/,
      );
      await handler.del(request("DEL", "intruder", podNs.path));
      const idle = await linkDumpsOf(() => handler.relocateUnknownNetns());
      assert.equal(idle.dumps, 0, "a sweep with nothing unknown dumps nothing");

      // The sweep as the restarted agent's first work: it learns the records' netns first.
      handler = agent.restart();
      const first = await linkDumpsOf(() => handler.relocateUnknownNetns());
      assert.equal(first.value.located, 1);
      assert.equal(first.dumps, 1, "learning the records and the sweep share one node link dump");
      assert.equal(await linkDumpsOfNewPod(handler, "after-first-sweep", newNs.path), 0);

      await handler.del(request("DEL", "lost", podNs.path));
      assert.deepEqual(agent.store.list(), [], "every record released");
    } finally {
      await unmountAll([alias]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "netns relocate: a record found nowhere is looked for with a back-off, until its veth goes",
  ...ROOT_ONLY,
  async fn() {
    await using fixture = await createNode({ prefix: "flk-rb" });
    await using newNs = await TestNamespace.create("flk-rbn");
    const dir = await Deno.makeTempDir({ prefix: "flk-rb-" });
    // The pod's netns lives on only through `keep`, a mount no runtime directory holds; the
    // record names it by `gone`, which disappears.
    const keep = join(dir, "keep");
    const gone = join(dir, "gone");
    using handle = Handle.forNetns(fixture.node.path);
    try {
      using agent = restartableHandler(handle, dir, node);
      {
        await using hiddenNs = await TestNamespace.create("flk-rbh");
        await bindMount(hiddenNs.path, keep);
        await bindMount(hiddenNs.path, gone);
      }
      let handler = agent.restart();
      await handler.add(request("ADD", "hidden", gone));
      const hostIface = agent.store.get("hidden", "eth0")!.hostIface;
      await runOk(["umount", gone]);
      await Deno.remove(gone);

      handler = agent.restart();
      await linkDumpsOfNewPod(handler, "first", newNs.path);
      const reports: RelocateReport[] = [];
      let dumps = 0;
      for (let sweep = 1; sweep <= 8; sweep++) {
        const counted = await linkDumpsOf(() => handler.relocateUnknownNetns());
        reports.push(counted.value);
        dumps += counted.dumps;
      }
      assert.deepEqual(
        reports.map((r) => r.notFound),
        [1, 1, 0, 1, 0, 0, 0, 1],
        "looked for at sweeps 1, 2, 4 and 8",
      );
      assert.equal(dumps, 4, "a sweep with nobody due dumps nothing");
      assert.equal(
        await linkDumpsOfNewPod(handler, "still-unknown", newNs.path),
        1,
        "still unknown: a new pod's ADD asks the kernel",
      );

      // The netns goes, and its veth with it: no longer unknown at its next look.
      await runOk(["umount", keep]);
      for (let i = 0; i < 200 && getLinkByName(handle, hostIface); i++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.equal(getLinkByName(handle, hostIface), undefined, "the veth went with its netns");
      let vanishedAt = 0;
      for (let sweep = 9; sweep <= 9 + 32 && !vanishedAt; sweep++) {
        if (handler.relocateUnknownNetns().vanished) vanishedAt = sweep;
      }
      assert.equal(vanishedAt, 16, "looked at again after 8 more sweeps");
      assert.equal(await linkDumpsOfNewPod(handler, "after-gone", newNs.path), 0);
      await handler.del(request("DEL", "hidden", gone));
      assert.deepEqual(agent.store.list(), [], "every record released");
    } finally {
      await unmountAll([keep, gone]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
