import assert from "node:assert/strict";
import { vethDeleteDelayFromEnv } from "./test_slow_delete.ts";

Deno.test("vethDeleteDelayFromEnv: unset arms nothing, a bad value throws, only the first waits", async () => {
  assert.equal(vethDeleteDelayFromEnv(undefined), undefined);
  assert.equal(vethDeleteDelayFromEnv(""), undefined);
  assert.throws(() => vethDeleteDelayFromEnv("0"), /FLOCK_TEST_SLOW_VETH_DELETE_MS=0/);
  const delay = vethDeleteDelayFromEnv("30")!;
  const started = performance.now();
  await delay();
  assert.ok(performance.now() - started >= 25, "the first deletion waits");
  const again = performance.now();
  await delay();
  assert.ok(performance.now() - again < 25, "later ones do not");
});
