/**
 * A reconfigure (cluster mode applies every NodeConfig change this way) whose summary routes fail
 * is "applied whole" by the agent (agent.ts #applyRouting: `agent.node`, `flock status`, and in
 * cluster mode the NodeConfig's observedGeneration show the new spec). Reviewer R2's bug:
 * NodeRouting put its previous config back on that failure and nothing rendered the new one, so
 * BIRD kept the old BGP part (a peer added was not there, a peer removed still was) until the
 * background retry of the summary routes succeeded, and every render meanwhile (a mesh, Secret or
 * address change) rendered the old config too.
 *
 * The check: while the summary routes keep failing, bird.conf has the peer the config in force
 * adds.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { TestNamespace } from "../tests/helpers/netns.ts";
import { BirdDaemon, bootstrapBirdConfig } from "../tests/helpers/bird.ts";
import { patch } from "../tests/helpers/patch.ts";
import { eventually } from "../tests/helpers/eventually.ts";
import { Handle } from "../netlink/mod.ts";
import { Agent } from "./agent.ts";
import { parseNodeConfig } from "./config.ts";
import { SUMMARY_ROUTES_DUMP } from "./routing.ts";

function spec(peers: string[]) {
  return {
    cidr6: "fd00:7::/64",
    bgp: {
      asn: 65001,
      routerID: "10.9.9.9",
      peers: peers.map((address) => ({ address, asn: 65000 })),
    },
  };
}

Deno.test({
  name: "agent: a reconfigure whose summary routes fail still gives BIRD " +
    "the BGP part of the config it reports in force",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-rbw");
    await using bird = await BirdDaemon.start(ns, { config: bootstrapBirdConfig("10.9.9.9") });
    const dir = await Deno.makeTempDir({ prefix: "flk-rbw-" });
    const agent = new Agent({
      nodeName: "rbw-node",
      stateDir: join(dir, "state"),
      socketPath: join(dir, "flock.sock"),
      netnsPath: ns.path,
      cooldownMs: 0,
      metrics: false,
      bird: { ...bird.controlOptions(), coalesceMs: 10 },
      log: () => {},
    });
    try {
      await agent.configure(parseNodeConfig(spec(["fd00:b::1"]), "test"));
      await eventually(
        "the first bird.conf",
        () => Deno.readTextFile(bird.configPath),
        (text) => text.includes("fd00:b::1"),
        10_000,
        50,
      );

      // The kernel refuses the summary routes' dump (at once, no busy pauses) from now on.
      using _refused = patch(
        Handle.prototype,
        "dump",
        (real) =>
          function (this: Handle, msg, operation) {
            if (operation === SUMMARY_ROUTES_DUMP) throw new Error("injected: route dump refused");
            return real.call(this, msg, operation);
          },
      );
      const next = parseNodeConfig(spec(["fd00:b::1", "fd00:b::2"]), "test");
      const report = await agent.reconfigure(next);
      assert.equal(agent.node, next, "reported in force");
      assert.ok(report.problems.some((p) => /summary routes not installed/.test(p)));
      // Any later render (cluster mode: a node address, Secret or mesh change).
      await agent.setNodeAddresses(["10.0.0.11"]);
      await new Promise((r) => setTimeout(r, 300));
      assert.match(
        await Deno.readTextFile(bird.configPath),
        /fd00:b::2/,
        "bird.conf lacks the peer of the config in force",
      );
    } finally {
      await agent.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
