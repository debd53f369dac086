/**
 * A bird.conf render that fails (a kernel too busy to list the node's addresses) is logged once,
 * by NodeRouting's failure streak, with wording that matches its backed-off retry: the agent's
 * caller (a node address, Secret or mesh change) does not log it a second time.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { TestNamespace } from "../tests/helpers/netns.ts";
import { BirdDaemon, bootstrapBirdConfig } from "../tests/helpers/bird.ts";
import { eventually } from "../tests/helpers/eventually.ts";
import { patch } from "../tests/helpers/patch.ts";
import { DumpInterruptedError } from "../netlink/errors.ts";
import { Handle } from "../netlink/mod.ts";
import { Agent } from "./agent.ts";
import { parseNodeConfig } from "./config.ts";

Deno.test({
  name: "agent: a failed bird.conf render is logged once, saying it is retried with backoff",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-arl");
    await using bird = await BirdDaemon.start(ns, { config: bootstrapBirdConfig("10.9.9.9") });
    const dir = await Deno.makeTempDir({ prefix: "flk-arl-" });
    const logs: Record<string, unknown>[] = [];
    const agent = new Agent({
      nodeName: "arl-node",
      stateDir: join(dir, "state"),
      socketPath: join(dir, "flock.sock"),
      netnsPath: ns.path,
      cooldownMs: 0,
      metrics: false,
      bird: { ...bird.controlOptions(), coalesceMs: 10 },
      log: (f) => logs.push(f),
    });
    try {
      await agent.configure(parseNodeConfig({ cidr6: "fd00:7::/64" }, "test"));
      let failing = true;
      using _busy = patch(
        Handle.prototype,
        "dump",
        (real) =>
          function (this: Handle, msg, operation) {
            if (failing && operation === "list addresses") {
              throw new DumpInterruptedError(operation, "RTM_GETADDR", 6);
            }
            return real.call(this, msg, operation);
          },
      );
      const renderLines = () =>
        logs.filter((l) => /bird config|bird\.conf/.test(String(l.msg))).map((l) => l.msg);
      // A node address change (cluster mode: its Node's InternalIPs) renders bird.conf again.
      await agent.setNodeAddresses(["10.0.0.11"]);
      assert.deepEqual(renderLines(), [
        "rendering bird.conf failed; retrying with backoff, logged again once it recovers",
      ]);
      failing = false;
      await eventually(
        "the retry's recovery",
        () => Promise.resolve(renderLines()),
        (lines) => lines.includes("rendering bird.conf recovered"),
        10_000,
        50,
      );
      const failed = renderLines().filter((m) => /failed/.test(String(m)));
      assert.equal(failed.length, 1, JSON.stringify(renderLines()));
    } finally {
      await agent.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
