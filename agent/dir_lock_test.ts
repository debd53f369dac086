import assert from "node:assert/strict";
import { DirLockTimeoutError, lockDirectory } from "./dir_lock.ts";

Deno.test("lockDirectory: a held lock fails after the bound, naming the directory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-dirlock-" });
  try {
    // Another open file description of the directory (another install, as far as flock(2) goes).
    using holder = await Deno.open(dir, { read: true });
    await holder.lock(true);
    const started = performance.now();
    const error = await lockDirectory(dir, { timeoutMs: 300, pollMs: 20 }).then(
      () => assert.fail("took a lock someone else holds"),
      (e) => e,
    );
    const waited = performance.now() - started;
    assert.ok(error instanceof DirLockTimeoutError, String(error));
    assert.ok(error.message.includes(dir), error.message);
    assert.match(error.message, /another flock install holds/);
    assert.ok(waited >= 300 && waited < 5_000, `waited ${waited} ms`);
    // Once the holder lets go, the lock is ours, and released again on dispose.
    await holder.unlock();
    {
      using _lock = await lockDirectory(dir, { timeoutMs: 300, pollMs: 20 });
      await assert.rejects(lockDirectory(dir, { timeoutMs: 50, pollMs: 20 }), DirLockTimeoutError);
    }
    using _again = await lockDirectory(dir, { timeoutMs: 50, pollMs: 20 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("lockDirectory: waits for a lock released within the bound", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-dirlock-" });
  try {
    using holder = await Deno.open(dir, { read: true });
    await holder.lock(true);
    const release = setTimeout(() => holder.unlockSync(), 150);
    try {
      using _lock = await lockDirectory(dir, { timeoutMs: 5_000, pollMs: 20 });
    } finally {
      clearTimeout(release);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("lockDirectory: a missing directory is an error naming it, not a wait", async () => {
  await assert.rejects(
    lockDirectory("/nonexistent-flock-dir-lock", { timeoutMs: 5_000 }),
    /nonexistent-flock-dir-lock/,
  );
});
