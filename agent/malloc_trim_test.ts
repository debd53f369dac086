import assert from "node:assert/strict";
import { trimFreedMemory } from "./malloc_trim.ts";

Deno.test("trimFreedMemory: returns freed heap pages on glibc, and is safe to call again", () => {
  // Free a few MiB of native memory first, so there is something to give back.
  for (let i = 0; i < 64; i++) new Uint8Array(64 * 1024).fill(i);
  assert.equal(typeof trimFreedMemory(), "boolean");
  assert.equal(typeof trimFreedMemory(), "boolean");
});
