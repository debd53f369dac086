import assert from "node:assert/strict";
import { isNetnsGone } from "./netns_path.ts";

Deno.test("isNetnsGone: only a path that surely does not exist is gone", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flk-netns-path-" });
  try {
    const file = `${dir}/ns`;
    await Deno.writeTextFile(file, "");
    assert.equal(isNetnsGone(file), false, "an existing path");
    assert.equal(isNetnsGone(`${dir}/missing`), true, "a missing path");
    assert.equal(isNetnsGone(""), true, "no path at all");
    // ENOTDIR is not NotFound: in doubt, the pod is kept.
    assert.equal(isNetnsGone(`${file}/below`), false, "a path below a file");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
