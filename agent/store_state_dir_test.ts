/**
 * A state directory path that is no directory (a file there, or a file above it) is refused by
 * `Store.open` with an error naming the state directory: it shows in `flock status` and in the
 * CNI error of cluster mode, where "flock.db: Not a directory" left the operator guessing.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Store } from "./store.ts";

Deno.test("Store.open: a state directory path that is a file is refused, naming it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-store-dir-" });
  try {
    const file = join(dir, "state");
    await Deno.writeTextFile(file, "not a directory");
    assert.throws(
      () => Store.open(file),
      (e: Error) => {
        assert.equal(e.message, `state directory ${file} is not a directory (it is a file)`);
        return e instanceof Deno.errors.NotADirectory;
      },
    );
    // A file higher up the path: nothing can be created below it.
    const below = join(file, "flock");
    assert.throws(
      () => Store.open(below),
      (e: Error) => {
        assert.equal(
          e.message,
          `cannot create state directory ${below}: ${file} is not a directory`,
        );
        return e instanceof Deno.errors.NotADirectory;
      },
    );
    assert.equal(await Deno.readTextFile(file), "not a directory", "the file is left alone");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
