/**
 * The command line at its edges, as an operator meets it: `flock install` where it cannot write
 * (a read-only or non-directory CNI dir), an unknown flag of a mode, and `flock install` run
 * straight from the sources (`deno run main.ts`), which has no flock executable to copy. Each
 * must end in one clear line naming the mode and a non-zero exit, never a stack trace or a
 * CNI bin dir holding something that is not flock.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT_ONLY, run } from "../helpers/exec.ts";
import { flockExecutable, TestNamespace } from "../helpers/flock.ts";
import { denoPath, REPO_ROOT } from "../helpers/tools.ts";

/** A JavaScript stack frame line, as an uncaught exception prints it (colours or not). */
const STACK_FRAME = new RegExp(`^\\s+(?:${String.fromCharCode(27)}\\[[0-9;]*m)*at `, "m");

/** Asserts one `flock <mode>: …` error line on stderr and no stack trace. */
function assertCleanError(stderr: string, mode: string, message: RegExp): void {
  assert.doesNotMatch(stderr, STACK_FRAME, `no stack trace:\n${stderr}`);
  assert.doesNotMatch(stderr, /Uncaught/, stderr);
  assert.match(stderr, new RegExp(`^flock ${mode}: `), stderr);
  assert.match(stderr, message, stderr);
}

Deno.test("flock install: a conf dir that is a file is one error line and exit 1", async () => {
  const flock = await flockExecutable();
  const dir = await Deno.makeTempDir({ prefix: "flock-cli-" });
  try {
    const confDir = join(dir, "net.d");
    await Deno.writeTextFile(confDir, "not a directory\n");
    const r = await run([
      flock,
      "install",
      `--bin-dir=${join(dir, "bin")}`,
      `--conf-dir=${confDir}`,
    ]);
    assert.equal(r.code, 1, r.stderr);
    assertCleanError(r.stderr, "install", /net\.d/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "flock install: a read-only CNI bin dir is one error line, exit 1, nothing written",
  ...ROOT_ONLY,
  fn: async () => {
    const flock = await flockExecutable();
    const dir = await Deno.makeTempDir({ prefix: "flock-cli-" });
    try {
      const binDir = join(dir, "bin");
      await Deno.mkdir(binDir);
      // A private mount namespace: the read-only tmpfs exists for this one command only.
      const r = await run([
        "unshare",
        "--mount",
        "--propagation=private",
        "sh",
        "-c",
        'mount -t tmpfs -o ro tmpfs "$1" && exec "$2" install --bin-dir "$1" --conf-dir "$3"',
        "sh",
        binDir,
        flock,
        join(dir, "net.d"),
      ]);
      assert.equal(r.code, 1, r.stderr);
      assertCleanError(r.stderr, "install", /Read-only file system/);
      assert.deepEqual([...Deno.readDirSync(binDir)], [], "nothing left in the bin dir");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "flock agent: an unknown flag is one usage line and exit 2 (as every other mode)",
  ...ROOT_ONLY,
  fn: async () => {
    const flock = await flockExecutable();
    // In a namespace of its own, should it ever get past its flags.
    await using ns = await TestNamespace.create("flk-cli");
    const dir = await Deno.makeTempDir({ prefix: "flock-cli-" });
    try {
      const r = await ns.exec([
        flock,
        "agent",
        "--bogus",
        "--state-dir",
        join(dir, "state"),
        "--socket",
        join(dir, "flock.sock"),
        "--http",
        "off",
        "--config",
        join(dir, "missing.yaml"),
      ], { timeoutMs: 30_000 });
      assert.equal(r.code, 2, r.stderr);
      assertCleanError(r.stderr, "agent", /Unknown option '--bogus'/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("flock install from the sources (deno run main.ts) never installs deno as the plugin", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-cli-" });
  try {
    const binDir = join(dir, "bin");
    const env = Deno.env.toObject();
    delete env.FLOCK_EXECUTABLE;
    const r = await run([
      denoPath(),
      "run",
      "-A",
      "--no-lock",
      join(REPO_ROOT, "main.ts"),
      "install",
      `--bin-dir=${binDir}`,
      `--conf-dir=${join(dir, "net.d")}`,
    ], { env, clearEnv: true });
    assert.equal(r.code, 1, r.stderr);
    assertCleanError(r.stderr, "install", /dist\/flock/);
    const installed = await Deno.stat(join(binDir, "flock")).then(() => true, () => false);
    assert.equal(installed, false, "no plugin binary was installed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
