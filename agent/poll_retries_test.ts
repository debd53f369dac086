import assert from "node:assert/strict";
import { PollRetries, RETRY_MAX_POLLS } from "./poll_retries.ts";

/** The polls (1-based) at which `key`'s value is due among the next `polls` polls. */
function duePolls(retries: PollRetries<string>, polls: number, onDue?: () => void): number[] {
  const at: number[] = [];
  for (let poll = 1; poll <= polls; poll++) {
    if (retries.due().length) {
      at.push(poll);
      onDue?.();
    }
  }
  return at;
}

Deno.test("PollRetries: a failure is due at the next poll, then after a doubling wait, capped", () => {
  const retries = new PollRetries<string>(8);
  assert.equal(retries.failed("a", "A"), 1);
  assert.deepEqual(retries.due(), ["A"], "due at the very next poll");
  // It failed again at each due poll: 2, 4, 8, 8 polls later.
  assert.equal(retries.failed("a", "A"), 2);
  assert.deepEqual(duePolls(retries, 30, () => retries.failed("a", "A")), [2, 6, 14, 22, 30]);
  assert.equal(retries.failing, 1);
  retries.delete("a");
  assert.equal(retries.failing, 0);
  assert.deepEqual(duePolls(retries, 10), [], "forgotten: never due");
  assert.equal(RETRY_MAX_POLLS, 60);
});

Deno.test("PollRetries: a deferral is due at the next poll, counts no failure, keeps those so far", () => {
  const retries = new PollRetries<string>();
  retries.defer("d", "D");
  assert.equal(retries.failing, 0, "deferred, not failed");
  assert.deepEqual(retries.due(), ["D"]);
  assert.deepEqual(retries.due(), ["D"], "stays due until deleted");
  retries.failed("d", "D");
  retries.defer("d", "D");
  assert.equal(retries.failed("d", "D"), 2, "the failure before the deferral still counts");
  assert.deepEqual(retries.entries(), [["d", "D"]]);
});
