/**
 * A reconfigure whose summary routes failed reports it (its `reconciled` report, `flock status`,
 * `flock_reconcile_problems`); once the background retry installs them, the report, the gauge and
 * `flock status` no longer list that problem, and one log line says it was resolved.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { inProcessAgent } from "../tests/helpers/in_process_agent.ts";
import { eventually } from "../tests/helpers/eventually.ts";
import { patch } from "../tests/helpers/patch.ts";
import { parseNodeConfig } from "./config.ts";
import { NodeRouting } from "./routing.ts";
import type { Agent } from "./agent.ts";

/** `flock_reconcile_problems` as the agent's `/metrics` would answer it. */
async function problemsGauge(agent: Agent): Promise<number> {
  const scrape = await agent.metrics!.encode();
  const m = scrape.match(/^flock_reconcile_problems (\S+)$/m);
  assert.ok(m, "no flock_reconcile_problems in the scrape");
  return Number(m[1]);
}

Deno.test({
  name: "agent: the routing retry that succeeds resolves its problem in the report, the gauge " +
    "and status, and says so once",
  ...ROOT_ONLY,
  async fn() {
    const logs: Record<string, unknown>[] = [];
    await using node = await inProcessAgent("flk-rrr", "rrr-node", (f) => logs.push(f));
    const { agent } = node;
    await agent.configure(parseNodeConfig({ cidr6: "fd00:7::/64" }, "test"));
    assert.equal(await problemsGauge(agent), 0);

    let calls = 0;
    using _busyOnce = patch(
      NodeRouting.prototype,
      "applyConfig",
      (real) =>
        async function (this: NodeRouting, ...args) {
          if (calls++ === 0) throw new Error("injected: summary routes: kernel busy");
          return await real.apply(this, args);
        },
    );
    const report = await agent.reconfigure(parseNodeConfig({ cidr6: "fd00:8::/64" }, "test"));
    const [problem] = report.problems.filter((p) => /^summary routes not installed/.test(p));
    assert.ok(problem, `reported: ${JSON.stringify(report.problems)}`);
    assert.ok((await agent.status()).reconcile?.problems.includes(problem), "status lists it");
    // The old summary route the reconcile removed is a note: neither a problem nor counted.
    const others = report.problems.filter((p) => p !== problem);
    assert.deepEqual(others, []);
    assert.ok(report.notes.some((n) => n.startsWith("removed orphan route fd00:7::/64")));
    assert.equal(await problemsGauge(agent), others.length + 1);

    const resolved = (f: Record<string, unknown>) =>
      /reconcile problem resolved/.test(String(f.msg));
    await eventually(
      "the retry's log line",
      () => Promise.resolve(logs.filter(resolved)),
      (lines) => lines.length > 0,
      10_000,
      50,
    );
    const lines = logs.filter(resolved);
    assert.equal(lines.length, 1, "one line");
    assert.equal(lines[0].resolved, problem, "naming the problem");
    assert.equal(lines[0].problemsLeft, others.length);
    assert.deepEqual(agent.reconcileReport?.problems, others, "the report");
    assert.deepEqual((await agent.status()).reconcile?.problems, others, "flock status");
    assert.equal(await problemsGauge(agent), others.length, "the gauge");
  },
});
