import assert from "node:assert/strict";
import { addFaultFromEnv, releaseSweepMsFromEnv, vethDeleteFaultFromEnv } from "./test_faults.ts";

Deno.test("vethDeleteFaultFromEnv: unset or empty arms nothing", () => {
  assert.equal(vethDeleteFaultFromEnv(undefined), undefined);
  assert.equal(vethDeleteFaultFromEnv(""), undefined);
});

Deno.test("vethDeleteFaultFromEnv: a value that is no positive integer is refused", () => {
  for (const bad of ["0", "-1", "1.5", "two", "1e400"]) {
    assert.throws(
      () => vethDeleteFaultFromEnv(bad),
      new RegExp(`FLOCK_TEST_FAIL_VETH_DELETE=${bad.replace(".", "\\.")}: not a positive`),
    );
  }
});

Deno.test("vethDeleteFaultFromEnv: the first N calls throw, later ones pass", () => {
  const fault = vethDeleteFaultFromEnv("2")!;
  assert.throws(fault, /injected veth deletion failure \(1 left\)/);
  assert.throws(fault, /injected veth deletion failure \(0 left\)/);
  fault();
  fault();
});

Deno.test("releaseSweepMsFromEnv: the default unless a positive integer is set", () => {
  assert.equal(releaseSweepMsFromEnv(30_000, undefined), 30_000);
  assert.equal(releaseSweepMsFromEnv(30_000, ""), 30_000);
  assert.equal(releaseSweepMsFromEnv(30_000, "250"), 250);
  assert.throws(() => releaseSweepMsFromEnv(30_000, "0"), /FLOCK_TEST_RELEASE_SWEEP_MS=0/);
});

Deno.test("addFaultFromEnv: the first N ADDs fail after their datapath, later ones pass", () => {
  assert.equal(addFaultFromEnv(undefined), undefined);
  assert.throws(() => addFaultFromEnv("0"), /FLOCK_TEST_FAIL_ADD_AFTER_DATAPATH=0: not a positive/);
  const fault = addFaultFromEnv("1")!;
  assert.throws(fault, /injected ADD failure after the datapath \(0 left\)/);
  fault();
});
