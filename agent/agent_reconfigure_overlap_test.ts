/**
 * Two SIGHUP reloads (Agent.reconfigureRouting) in quick succession: the kernel part of each
 * awaits (a busy kernel's dumps are read again after a pause), so the first can finish after the
 * second. The config in force afterwards must be the last one asked for.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { inProcessAgent } from "../tests/helpers/in_process_agent.ts";
import { patch } from "../tests/helpers/patch.ts";
import { parseNodeConfig } from "./config.ts";
import { NodeRouting } from "./routing.ts";

/** Makes the next NodeRouting.applyConfig wait `ms` first (a busy kernel); undone on dispose. */
function slowNextApply(ms: number): Disposable {
  let armed = true;
  return patch(
    NodeRouting.prototype,
    "applyConfig",
    (real) =>
      async function (this: NodeRouting, ...args) {
        if (armed) {
          armed = false;
          await new Promise((resolve) => setTimeout(resolve, ms));
        }
        return real.apply(this, args);
      },
  );
}

Deno.test({
  name: "agent: two BGP reloads at once apply in order; the last one asked for is in force",
  ...ROOT_ONLY,
  async fn() {
    await using node = await inProcessAgent("flk-rco", "rco-node");
    const { agent } = node;
    const withAsn = (asn: number) =>
      parseNodeConfig({ cidr6: "fd00:7::/64", bgp: { asn } }, "test");
    await agent.configure(withAsn(64512));
    {
      using _slow = slowNextApply(100);
      const first = agent.reconfigureRouting(withAsn(64513));
      const second = agent.reconfigureRouting(withAsn(64514));
      assert.deepEqual(await Promise.all([first, second]), [true, true]);
    }
    assert.equal(agent.node?.spec.bgp?.asn, 64514, "the later reload is the config in force");
  },
});
