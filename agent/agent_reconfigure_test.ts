/**
 * Agent.reconfigureRouting (SIGHUP in standalone mode): the BGP part of a changed config is the
 * config in force afterwards (`Agent.node`), for the next reload's comparison and every reader.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { inProcessAgent } from "../tests/helpers/in_process_agent.ts";
import { parseNodeConfig } from "./config.ts";

Deno.test({
  name:
    "agent: a BGP-only reconfigure becomes the node config in force; a later one compares to it",
  ...ROOT_ONLY,
  async fn() {
    await using node = await inProcessAgent("flk-rcf", "rcf-node");
    const { agent } = node;
    const spec = { cidr6: "fd00:7::/64" };
    const first = parseNodeConfig({ ...spec, bgp: { asn: 64512 } }, "test");
    const second = parseNodeConfig({ ...spec, bgp: { asn: 64513 } }, "test");
    await agent.listen();
    await agent.configure(first);
    assert.equal(await agent.reconfigureRouting(second), true);
    assert.equal(agent.node?.spec.bgp?.asn, 64513, "the BGP config applied is the one in force");
    // A change outside BGP is still refused against the config in force.
    const moved = parseNodeConfig({ cidr6: "fd00:8::/64", bgp: { asn: 64513 } }, "test");
    assert.equal(await agent.reconfigureRouting(moved), false);
    assert.equal(agent.node?.spec.cidr6, "fd00:7::/64");
  },
});
