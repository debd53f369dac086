/**
 * Agent.reconfigureRouting (SIGHUP in standalone mode): the BGP part of a changed config is the
 * config in force afterwards (`Agent.node`), for the next reload's comparison and every reader.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { inProcessAgent } from "../tests/helpers/in_process_agent.ts";
import { patch } from "../tests/helpers/patch.ts";
import { parseNodeConfig } from "./config.ts";
import { Handle } from "../netlink/mod.ts";
import { NodeRouting, SUMMARY_ROUTES_DUMP } from "./routing.ts";
import { TestNamespace } from "../tests/helpers/netns.ts";
import { DumpInterruptedError } from "../netlink/errors.ts";

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

Deno.test({
  name: "routing: a config whose summary routes fail is not the one in force (router id, renders)",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-rcb");
    const handle = Handle.forNetns(ns.path);
    const dir = await Deno.makeTempDir({ prefix: "flk-rcb-" });
    // A BIRD target (never started: only the router id it would be given is looked at).
    const routing = new NodeRouting({
      handle,
      nodeName: "rcb-node",
      log: () => {},
      bird: {
        configPath: `${dir}/bird.conf`,
        socketPath: `${dir}/bird.ctl`,
        addressPollMs: 0,
      },
    });
    try {
      const spec = { cidr6: "fd00:7::/64" };
      await routing.applyConfig(
        parseNodeConfig({ ...spec, bgp: { asn: 64512, routerID: "192.0.2.1" } }, "t"),
      );
      assert.equal(routing.routerId()?.id, "192.0.2.1");
      {
        using _interrupted = patch(
          Handle.prototype,
          "dump",
          (real) =>
            function (this: Handle, msg, operation) {
              if (operation === SUMMARY_ROUTES_DUMP) {
                throw new DumpInterruptedError(operation, "RTM_GET", 6);
              }
              return real.call(this, msg, operation);
            },
        );
        const next = parseNodeConfig({ ...spec, bgp: { asn: 64512, routerID: "192.0.2.2" } }, "t");
        await assert.rejects(routing.applyConfig(next), /no whole answer/);
      }
      // What the next bird.conf (an address change, a mesh or Secret update) would carry.
      assert.equal(routing.routerId()?.id, "192.0.2.1");
    } finally {
      await routing.close();
      handle.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
