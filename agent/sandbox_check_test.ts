import assert from "node:assert/strict";
import { join } from "node:path";
import { sandboxMismatch } from "./sandbox_check.ts";

Deno.test("sandboxMismatch: the same path, or another path to the same file, is no difference", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-sandbox-" });
  try {
    // Files stand in for netns mounts: what is compared is what a path resolves to.
    const ns = join(dir, "ns-a");
    const other = join(dir, "ns-b");
    await Deno.writeTextFile(ns, "");
    await Deno.writeTextFile(other, "");
    await Deno.symlink(dir, join(dir, "via"));
    assert.equal(sandboxMismatch("eth0", ns, ns), undefined);
    assert.equal(sandboxMismatch("eth0", join(dir, "via", "ns-a"), ns), undefined);
    assert.equal(sandboxMismatch("eth0", `${dir}/./ns-a`, ns), undefined);
    assert.equal(
      sandboxMismatch("eth0", other, ns),
      `prevResult puts interface eth0 in sandbox ${other}, another network namespace than ` +
        `CNI_NETNS ${ns}`,
    );
    const gone = join(dir, "gone");
    assert.equal(
      sandboxMismatch("net1", gone, ns),
      `prevResult puts interface net1 in sandbox ${gone}, which does not exist, not in ` +
        `CNI_NETNS ${ns}`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sandboxMismatch: /proc/<pid>/ns/net is the same namespace as /proc/self/ns/net", () => {
  assert.equal(sandboxMismatch("eth0", `/proc/${Deno.pid}/ns/net`, "/proc/self/ns/net"), undefined);
});
