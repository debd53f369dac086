/**
 * A record whose veth's other end is in a netns its path no longer names is "unknown" after a
 * restart (netns_identity.ts), and while it is, every new pod's ADD asks the kernel (a link dump
 * of its netns). Once a CHECK or a retried ADD of that record finds its veth, it is known again
 * and the new pods' ADDs stop paying the dump. In-process with the real pieces: a node namespace,
 * pod namespaces, a store in a temp dir and PodHandlers as the agent makes them (a new one is a
 * restart); the dumps are counted on the netlink handle.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT_ONLY, runOk } from "../tests/helpers/exec.ts";
import { createNode, TestNamespace } from "../tests/helpers/netns.ts";
import { rpcRequest } from "../tests/helpers/rpc_request.ts";
import {
  linkDumpsOfNewPod as dumpsOfNewPod,
  restartableHandler,
} from "../tests/helpers/restartable_handler.ts";
import { Handle } from "../netlink/mod.ts";
import { parseNodeConfig } from "./config.ts";
import type { PodHandler } from "./pod_handler.ts";
import type { RpcRequest } from "./protocol.ts";

const node = parseNodeConfig({ cidr6: "fd00:e5::/64", cidr4: "10.229.0.0/24" }, "learn");

const request = (command: RpcRequest["command"], containerId: string, netns: string) =>
  rpcRequest(command, containerId, netns, "learn");

/** Link dumps (of any netns) one new pod's ADD into `netns` sends, by `handler`. */
const linkDumpsOfNewPod = (handler: PodHandler, id: string, netns: string) =>
  dumpsOfNewPod(handler, id, netns, "learn");

Deno.test({
  name: "netns identity: an unknown record is known again after its CHECK or retried ADD",
  ...ROOT_ONLY,
  async fn() {
    await using fixture = await createNode({ prefix: "flk-nl" });
    await using podNs = await TestNamespace.create("flk-nlp");
    await using otherNs = await TestNamespace.create("flk-nlo");
    await using newNs = await TestNamespace.create("flk-nln");
    const dir = await Deno.makeTempDir({ prefix: "flk-nl-" });
    // The record's path: a bind mount of the pod's netns, later of another one.
    const alias = join(dir, "net");
    let mounted = false;
    using handle = Handle.forNetns(fixture.node.path);
    using agent = restartableHandler(handle, dir, node);
    try {
      await Deno.writeTextFile(alias, "");
      await runOk(["mount", "--bind", podNs.path, alias]);
      mounted = true;
      /** A new agent on the same store and node (a restart). */
      const restart = () => agent.restart();
      /** The record's path names another netns while its veth stays in the pod's. */
      const loseThePath = async () => {
        await runOk(["umount", alias]);
        await runOk(["mount", "--bind", otherNs.path, alias]);
      };

      let handler = restart();
      await handler.add(request("ADD", "lost", alias));
      assert.equal(await linkDumpsOfNewPod(handler, "known", newNs.path), 0, "nothing unknown");

      await loseThePath();
      handler = restart();
      // The first ADD after the restart learns the records' netns (its own dump of the node).
      await linkDumpsOfNewPod(handler, "first", newNs.path);
      assert.equal(
        await linkDumpsOfNewPod(handler, "unknown", newNs.path),
        1,
        "while a record is unknown, a new pod's ADD asks the kernel",
      );
      // The runtime's CHECK names where the pod is: its veth is found there.
      handler.check(request("CHECK", "lost", podNs.path));
      assert.equal(
        await linkDumpsOfNewPod(handler, "after-check", newNs.path),
        0,
        "after a CHECK found the veth, a new pod's ADD skips the dump",
      );

      // CHECK as the restarted agent's first request: it learns the records first.
      handler = restart();
      handler.check(request("CHECK", "lost", podNs.path));
      assert.equal(
        await linkDumpsOfNewPod(handler, "after-first-check", newNs.path),
        0,
        "after a first CHECK found the veth, a new pod's ADD skips every dump",
      );

      handler = restart();
      await linkDumpsOfNewPod(handler, "first-again", newNs.path);
      assert.equal(await linkDumpsOfNewPod(handler, "unknown-again", newNs.path), 1);
      // The runtime retries the ADD with the path the pod really is at.
      await handler.add(request("ADD", "lost", podNs.path));
      assert.equal(
        await linkDumpsOfNewPod(handler, "after-retry", newNs.path),
        0,
        "after a retried ADD found the veth, a new pod's ADD skips the dump",
      );
      // Known by the identity it was found in: a second container there is still refused.
      await assert.rejects(
        handler.add(request("ADD", "intruder", podNs.path)),
        /already has container lost's flock interface eth0/,
      );
      await handler.del(request("DEL", "intruder", podNs.path));
      await handler.del(request("DEL", "lost", podNs.path));
      assert.deepEqual(agent.store.list(), [], "every record released");
    } finally {
      if (mounted) await runOk(["umount", alias]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
