/**
 * The background retry of a reconfigure's failed summary routes: its failures in a row are logged
 * once (not at every try) and its pauses double; a SIGHUP reload (`reconfigureRouting`) that
 * installs the routes first ends the retry and takes its problem out of the report.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { inProcessAgent } from "../tests/helpers/in_process_agent.ts";
import { eventually } from "../tests/helpers/eventually.ts";
import { patch } from "../tests/helpers/patch.ts";
import { parseNodeConfig } from "./config.ts";
import { NodeRouting } from "./routing.ts";

/** Lines whose message matches `pattern`. */
function linesMatching(logs: Record<string, unknown>[], pattern: RegExp) {
  return logs.filter((f) => pattern.test(String(f.msg)));
}

Deno.test({
  name: "agent: failed retries of a reconfigure's summary routes log one line, not one per try, " +
    "and wait twice as long each time",
  ...ROOT_ONLY,
  async fn() {
    const logs: Record<string, unknown>[] = [];
    await using node = await inProcessAgent("flk-rrb", "rrb-node", (f) => logs.push(f));
    const { agent } = node;
    await agent.configure(parseNodeConfig({ cidr6: "fd00:7::/64" }, "test"));

    // The reconfigure's own try and the next two retries fail; the third retry goes through.
    const tries: number[] = [];
    using _busy = patch(
      NodeRouting.prototype,
      "applyConfig",
      (real) =>
        async function (this: NodeRouting, ...args) {
          tries.push(performance.now());
          if (tries.length <= 3) throw new Error("injected: summary routes: kernel busy");
          return await real.apply(this, args);
        },
    );
    const report = await agent.reconfigure(parseNodeConfig({ cidr6: "fd00:8::/64" }, "test"));
    assert.ok(report.problems.some((p) => /^summary routes not installed/.test(p)));
    await eventually(
      "the problem resolved",
      () => Promise.resolve(linesMatching(logs, /reconcile problem resolved/)),
      (lines) => lines.length === 1,
      15_000,
      50,
    );
    assert.equal(tries.length, 4);
    const pauses = tries.slice(1).map((t, i) => t - tries[i]);
    // 1 s, 2 s, 4 s (lower bounds only: a loaded machine only makes them longer).
    for (const [i, min] of [1_000, 2_000, 4_000].entries()) {
      assert.ok(pauses[i] >= min - 50, `pause ${i + 1}: ${pauses.map(Math.round)} ms`);
    }
    const failed = linesMatching(logs, /^summary routes: retry/);
    assert.equal(failed.length, 1, JSON.stringify(failed));
    assert.equal(failed[0].level, "warn");
    assert.equal(failed[0].retryInMs, 2_000, "the pause after the first failed retry");
    assert.deepEqual(agent.reconcileReport?.problems, []);
  },
});

Deno.test({
  name: "agent: a SIGHUP reload that installs the summary routes ends a pending retry and takes " +
    "its problem out of the report and status",
  ...ROOT_ONLY,
  async fn() {
    const logs: Record<string, unknown>[] = [];
    await using node = await inProcessAgent("flk-rrh", "rrh-node", (f) => logs.push(f));
    const { agent } = node;
    await agent.configure(parseNodeConfig({ cidr6: "fd00:7::/64" }, "test"));

    let tries = 0;
    using _busyOnce = patch(
      NodeRouting.prototype,
      "applyConfig",
      (real) =>
        async function (this: NodeRouting, ...args) {
          if (++tries === 1) throw new Error("injected: summary routes: kernel busy");
          return await real.apply(this, args);
        },
    );
    const report = await agent.reconfigure(parseNodeConfig({ cidr6: "fd00:8::/64" }, "test"));
    const [problem] = report.problems.filter((p) => /^summary routes not installed/.test(p));
    assert.ok(problem, JSON.stringify(report.problems));

    // Before the retry's first try (1 s): the BGP part changed, `kill -HUP`.
    const reloaded = parseNodeConfig({ cidr6: "fd00:8::/64", bgp: { asn: 65001 } }, "test");
    assert.equal(await agent.reconfigureRouting(reloaded), true);
    const resolved = linesMatching(logs, /reconcile problem resolved/);
    assert.equal(resolved.length, 1);
    assert.match(String(resolved[0].msg), /by a reload/);
    assert.equal(resolved[0].resolved, problem);
    assert.deepEqual((await agent.status()).reconcile?.problems, [], "flock status");

    // The retry was called off: no further try, no second line.
    await new Promise((r) => setTimeout(r, 1_500));
    assert.equal(tries, 2, "the reconfigure's try and the reload's");
    assert.equal(linesMatching(logs, /reconcile problem resolved/).length, 1);
  },
});
