/**
 * Agent.close racing Agent.configure: a stop signal can arrive while the start-up reconcile
 * awaits its leftovers' veth deletions (configure is async). The configure must not go on to
 * serve, start its sweep timer or its routing once the agent is closed.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { TestNamespace } from "../tests/helpers/netns.ts";
import { parseNodeConfig } from "./config.ts";
import { Agent } from "./agent.ts";

Deno.test({
  name: "agent: a close during configure leaves no serving handler, timer or routing behind",
  ...ROOT_ONLY,
  async fn() {
    await using node = await TestNamespace.create("flk-cls");
    const dir = await Deno.makeTempDir({ prefix: "flock-close-" });
    const agent = new Agent({
      nodeName: "close-node",
      stateDir: join(dir, "state"),
      socketPath: join(dir, "flock.sock"),
      netnsPath: node.path,
      cooldownMs: 0,
      log: () => {},
    });
    try {
      await agent.listen();
      const configuring = agent.configure(parseNodeConfig({ cidr6: "fd00:6::/64" }, "test"));
      await agent.close();
      await assert.rejects(configuring, /the agent is closing/);
      assert.equal(agent.ready, false, "a closed agent does not serve");
      await assert.rejects(
        agent.configure(parseNodeConfig({ cidr6: "fd00:6::/64" }, "test")),
        /the agent is closing/,
      );
      // The test's op sanitizer fails it when a sweep interval or a routing timer outlives it.
    } finally {
      await agent.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
