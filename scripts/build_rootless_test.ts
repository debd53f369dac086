import assert from "node:assert/strict";
import { join } from "node:path";
import { writeLauncher } from "./build.ts";
import { ROOT_ONLY, run } from "../tests/helpers/exec.ts";

/** The unprivileged user the plugin runs as here, standing in for a rootless runtime's. */
const NOBODY = 65534;

Deno.test({
  name: "launcher: the bundled plugin run by a non-root user logs to that user's own log file",
  ...ROOT_ONLY,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "flock-rootless-" });
    try {
      // Root-owned 0755 down to the user's own 0700 log directory: a safe place for that user.
      await Deno.chmod(dir, 0o755);
      const launcher = await writeLauncher(join(dir, "dist"));
      const home = join(dir, "home");
      const logDir = join(home, "log");
      await Deno.mkdir(logDir, { recursive: true, mode: 0o700 });
      for (const path of [home, logDir]) await Deno.chown(path, NOBODY, NOBODY);
      const logFile = join(logDir, "cni.log");
      // No agent there: STATUS fails (code 50), and a failed call is always logged.
      const out = await run([
        "setpriv",
        `--reuid=${NOBODY}`,
        `--regid=${NOBODY}`,
        "--clear-groups",
        "--",
        launcher,
      ], {
        clearEnv: true,
        env: {
          CNI_COMMAND: "STATUS",
          CNI_PATH: join(dir, "dist"),
          HOME: home,
          DENO_DIR: join(home, "deno"),
          PATH: "/usr/bin:/bin",
        },
        stdin: JSON.stringify({
          cniVersion: "1.1.0",
          name: "rootless",
          type: "flock",
          agentSocket: join(home, "no-agent.sock"),
          logFile,
        }),
        timeoutMs: 30_000,
      });
      assert.equal(JSON.parse(out.stdout).code, 50, out.stdout + out.stderr);
      assert.doesNotMatch(out.stderr, /refusing|Requires/, out.stderr);
      const lines = (await Deno.readTextFile(logFile)).trim().split("\n");
      assert.equal(lines.length, 1);
      assert.equal(JSON.parse(lines[0]).command, "STATUS");
      assert.equal((await Deno.stat(logFile)).uid, NOBODY);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
