import assert from "node:assert/strict";
import { CRASH_POINTS, crashHookFromEnv } from "./crash_points.ts";

Deno.test("crashHookFromEnv: unset or empty arms nothing", () => {
  assert.equal(crashHookFromEnv(undefined), undefined);
  assert.equal(crashHookFromEnv(""), undefined);
});

Deno.test("crashHookFromEnv: an unknown point is refused, naming the known ones", () => {
  assert.throws(() => crashHookFromEnv("after-pending"), /FLOCK_TEST_CRASH_AT=after-pending/);
  assert.throws(() => crashHookFromEnv("nope"), new RegExp(CRASH_POINTS.join(", ")));
});

Deno.test("crashHookFromEnv: the hook ignores every point but the armed one", () => {
  const hook = crashHookFromEnv("del-after-teardown")!;
  for (const p of CRASH_POINTS) if (p !== "del-after-teardown") hook(p); // still alive
});
