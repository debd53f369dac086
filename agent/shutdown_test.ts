import assert from "node:assert/strict";
import { SHUTDOWN_BUDGET_MS, SHUTDOWN_STEP_MS, stopWithin } from "./shutdown.ts";

Deno.test("shutdown: the steps' bounds add up to the budget, well inside a 30 s grace period", () => {
  const total = Object.values(SHUTDOWN_STEP_MS).reduce((a, b) => a + b, 0);
  assert.ok(total <= SHUTDOWN_BUDGET_MS, `${total} ms`);
  assert.ok(SHUTDOWN_BUDGET_MS <= 30_000 / 2);
});

Deno.test("stopWithin: a step that hangs is left behind after its bound, one that fails is logged", async () => {
  const logs: Record<string, unknown>[] = [];
  const log = (f: Record<string, unknown>) => logs.push(f);
  let release!: () => void;
  const hung = new Promise<void>((r) => release = r);
  const started = performance.now();
  assert.equal(await stopWithin("hung", 50, () => hung, log), false);
  assert.ok(performance.now() - started < 1_000);
  assert.equal(logs[0].step, "hung");
  release();
  assert.equal(await stopWithin("quick", 1_000, () => Promise.resolve(), log), true);
  assert.equal(
    await stopWithin("broken", 1_000, () => Promise.reject(new Error("boom")), log),
    true,
  );
  assert.deepEqual(logs.map((l) => [l.level, l.step]), [["warn", "hung"], ["error", "broken"]]);
});
