/**
 * A pod's host veth left down: the running agent leaves it down (host_side_repair.ts: an
 * operator's down is not undone under a running pod), and the next reconcile converges the node
 * to its records: it sets the veth up, routes the pod again and reports the repair as a problem.
 * The restart's reconcile is covered by tests/e2e/reconcile_repair_test.ts; this is the
 * reconfigure's (cluster mode's NodeConfig change), the same reconcile run in a running agent.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { inProcessAgent } from "../tests/helpers/in_process_agent.ts";
import { TestNamespace } from "../tests/helpers/netns.ts";
import { rpcRequest } from "../tests/helpers/rpc_request.ts";
import { callAgent } from "../cni.ts";
import { parseNodeConfig } from "./config.ts";
import { hostIfaceName } from "./datapath.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test({
  name: "agent: a host veth left down stays down while the agent runs; a reconfigure's reconcile " +
    "sets it up, routes the pod again and reports the repair",
  ...ROOT_ONLY,
  async fn() {
    await using node = await inProcessAgent("flk-rdv", "rdv-node");
    await using pod = await TestNamespace.create("flk-rdp");
    const { agent } = node;
    const config = parseNodeConfig({ cidr6: "fd00:7::/64" }, "test");
    await agent.listen();
    await agent.configure(config);
    const added = await callAgent(
      join(node.dir, "flock.sock"),
      rpcRequest("ADD", "c1", pod.path, "flk-rdv"),
      10_000,
    );
    assert.ok(added.ok, JSON.stringify(added));
    const podIp = (added.result?.ips as { address: string }[])[0].address.split("/")[0];
    const host = hostIfaceName("c1");
    const isUp = async () => /<[^>]*\bUP\b/.test(await node.node.ip(["-o", "link", "show", host]));
    const hostRoute = () => node.node.ip(["-6", "route", "show", podIp, "proto", "201"]);
    assert.match(await hostRoute(), new RegExp(`dev ${host}`));

    await node.node.ip(["link", "set", host, "down"]);
    // Longer than two of the host side repair's 500 ms polls: nothing brings it up meanwhile.
    await sleep(1_200);
    assert.equal(await isUp(), false, "the running agent leaves a down veth down");
    assert.equal(await hostRoute(), "", "and unrouted");

    const report = await agent.reconfigure(config);
    assert.equal(await isUp(), true, "the reconcile set the veth up");
    assert.match(await hostRoute(), new RegExp(`dev ${host}`), "and routed the pod again");
    assert.ok(
      report.problems.includes(`c1: datapath repaired (host veth ${host} down)`),
      JSON.stringify(report.problems),
    );
    assert.equal(report.repaired, 1);
  },
});
