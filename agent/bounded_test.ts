import assert from "node:assert/strict";
import { forEachBounded } from "./bounded.ts";

Deno.test("forEachBounded: never more than the limit in flight, every item tried", async () => {
  let inFlight = 0;
  let most = 0;
  const seen: number[] = [];
  const outcomes = await forEachBounded([0, 1, 2, 3, 4, 5, 6], 3, async (item) => {
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((resolve) => setTimeout(resolve, item % 2 ? 5 : 1));
    inFlight--;
    seen.push(item);
    if (item === 2 || item === 5) throw new Error(`item ${item}`);
  });
  assert.equal(most, 3);
  assert.deepEqual(seen.sort(), [0, 1, 2, 3, 4, 5, 6]);
  assert.deepEqual(
    outcomes.map((o) => o.status === "rejected" ? String(o.reason) : "ok"),
    ["ok", "ok", "Error: item 2", "ok", "ok", "Error: item 5", "ok"],
    "outcomes in item order; a rejection does not stop the rest",
  );
});

Deno.test("forEachBounded: an empty list and a synchronous throw", async () => {
  assert.deepEqual(await forEachBounded([], 4, () => Promise.resolve()), []);
  const outcomes = await forEachBounded([1], 4, () => {
    throw new Error("sync");
  });
  assert.equal(outcomes[0].status, "rejected");
  await assert.rejects(() => forEachBounded([1], 0, () => Promise.resolve()), RangeError);
});
