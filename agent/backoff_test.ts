import assert from "node:assert/strict";
import { backoffMs } from "./backoff.ts";

Deno.test("backoff: doubles from the first delay with each failure, up to the largest", () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((f) => backoffMs(f, 250, 8_000)), [
    250,
    500,
    1_000,
    2_000,
    4_000,
    8_000,
  ]);
  assert.equal(backoffMs(1_000_000, 500, 10_000), 10_000);
});
