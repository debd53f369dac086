/**
 * Agent.close racing Agent.configure: a stop signal can arrive while the start-up reconcile
 * awaits its leftovers' veth deletions (configure is async). The configure must not go on to
 * serve, start its sweep timer or its routing once the agent is closed.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { inProcessAgent } from "../tests/helpers/in_process_agent.ts";
import { parseNodeConfig } from "./config.ts";

Deno.test({
  name: "agent: a close during configure leaves no serving handler, timer or routing behind",
  ...ROOT_ONLY,
  async fn() {
    await using node = await inProcessAgent("flk-cls", "close-node");
    const { agent } = node;
    const config = parseNodeConfig({ cidr6: "fd00:6::/64" }, "test");
    await agent.listen();
    const configuring = agent.configure(config);
    await agent.close();
    await assert.rejects(configuring, /the agent is closing/);
    assert.equal(agent.ready, false, "a closed agent does not serve");
    await assert.rejects(agent.configure(config), /the agent is closing/);
    // The test's op sanitizer fails it when a sweep interval or a routing timer outlives it.
  },
});
