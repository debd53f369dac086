/**
 * A reconfigure that moves the node's CIDRs removes the old summary routes: expected
 * housekeeping, listed as notes, so `flock_reconcile_problems` stays 0 and an alert on it does not
 * fire for a normal config change. A flock host route no record explains is still a problem.
 * `flock status` says which reconcile it shows: the start-up one or a reconfigure's, and when.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { inProcessAgent } from "../tests/helpers/in_process_agent.ts";
import { parseNodeConfig } from "./config.ts";
import { renderStatus } from "./status_render.ts";
import type { Agent } from "./agent.ts";

/** `flock_reconcile_problems` as the agent's `/metrics` would answer it. */
async function problemsGauge(agent: Agent): Promise<number> {
  const m = (await agent.metrics!.encode()).match(/^flock_reconcile_problems (\S+)$/m);
  assert.ok(m, "no flock_reconcile_problems in the scrape");
  return Number(m[1]);
}

Deno.test({
  name: "agent: a CIDR-changing reconfigure notes the old summary routes' removal; gauge stays 0",
  ...ROOT_ONLY,
  async fn() {
    const logs: Record<string, unknown>[] = [];
    await using node = await inProcessAgent("flk-rcn", "rcn-node", (f) => logs.push(f));
    const { agent } = node;
    await agent.listen();
    const start = await agent.configure(
      parseNodeConfig({ cidr6: "fd00:7::/64", cidr4: "10.7.0.0/24" }, "test"),
    );
    assert.equal(start.trigger, "start-up");
    assert.deepEqual(start.problems, []);
    assert.match(renderStatus(await agent.status()), /^Start-up reconcile \(\S+Z\): /m);
    const routes = await node.node.ip(["route", "show", "proto", "201"]) +
      await node.node.ip(["-6", "route", "show", "proto", "201"]);
    assert.match(routes, /fd00:7::\/64/, "the first config's summary routes are in place");
    assert.match(routes, /10\.7\.0\.0\/24/);

    const report = await agent.reconfigure(
      parseNodeConfig({ cidr6: "fd00:8::/64", cidr4: "10.8.0.0/24" }, "test"),
    );
    assert.equal(report.trigger, "reconfigure");
    assert.deepEqual(report.problems, [], "a normal CIDR change is no problem");
    assert.equal(report.orphanRoutes, 2);
    for (const old of ["fd00:7::/64", "10.7.0.0/24"]) {
      assert.ok(
        report.notes.includes(
          `removed orphan route ${old}: a summary route of a CIDR no longer configured`,
        ),
        `${old} noted: ${JSON.stringify(report.notes)}`,
      );
    }
    assert.equal(await problemsGauge(agent), 0);

    const status = await agent.status();
    assert.deepEqual(status.reconcile?.problems, []);
    assert.equal(status.reconcile?.notes?.length, 2);
    const text = renderStatus(status);
    assert.match(text, new RegExp(`^Reconfigure reconcile \\(${report.at}\\): `, "m"));
    assert.doesNotMatch(text, /Start-up reconcile|problem:/);
    assert.match(text, /^ {2}note: removed orphan route fd00:7::\/64: a summary route/m);
    const line = logs.findLast((f) => f.msg === "reconciled")!;
    assert.equal(line.problems, undefined, "the log line has no problems either");
    assert.deepEqual(line.notes, report.notes);
    assert.equal(line.trigger, "reconfigure");

    // A flock host route no pod record explains: the store and the kernel disagree. A problem.
    await node.node.ip(["-6", "route", "add", "fd00:8::dead/128", "dev", "lo", "proto", "201"]);
    const again = await agent.reconfigure(
      parseNodeConfig({ cidr6: "fd00:8::/64", cidr4: "10.8.0.0/24", mtu: 1400 }, "test"),
    );
    assert.deepEqual(again.problems, ["removed orphan route fd00:8::dead/128: no record holds it"]);
    assert.deepEqual(again.notes, [], "a later report replaces the earlier one's notes");
    assert.equal(await problemsGauge(agent), 1);
    assert.match(
      renderStatus(await agent.status()),
      /^ {2}problem: removed orphan route fd00:8::dead\/128: no record holds it$/m,
    );
  },
});
