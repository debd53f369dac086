import assert from "node:assert/strict";
import { join } from "node:path";
import { writeLauncher } from "./build.ts";
import { run } from "../tests/helpers/exec.ts";

/** Runs `launcher` as a runtime runs a CNI plugin: env, config on stdin, JSON on stdout. */
async function runPlugin(launcher: string, env: Record<string, string>, stdin: string) {
  const out = await run([launcher], { env, stdin });
  return { code: out.code, stdout: out.stdout, json: JSON.parse(out.stdout) };
}

Deno.test("launcher: the CNI lane answers VERSION and reaches for the agent socket", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-build-" });
  try {
    const launcher = await writeLauncher(dir);
    const script = await Deno.readTextFile(launcher);
    assert.match(script, /-n "\$\{CNI_COMMAND\}"/, "the launcher has the CNI lane");
    assert.match(script, /flock-cni\.js/);
    for (const source of ["cni.ts", "agent/protocol.ts", "agent/cni_input.ts"]) {
      assert.ok(script.includes(source), `freshness check covers ${source}`);
    }
    const version = await runPlugin(
      launcher,
      { CNI_COMMAND: "VERSION" },
      JSON.stringify({ cniVersion: "0.4.0" }),
    );
    assert.equal(version.code, 0);
    assert.equal(version.json.cniVersion, "0.4.0");
    assert.ok(version.json.supportedVersions.includes("1.1.0"));
    // The narrowed permissions must still allow connecting to the socket: with no agent there,
    // STATUS answers "not running" (code 50, the spec's "plugin not available"), not a
    // permission error.
    const socket = join(dir, "no-agent.sock");
    const status = await runPlugin(
      launcher,
      { CNI_COMMAND: "STATUS", CNI_PATH: dir },
      JSON.stringify({ cniVersion: "1.0.0", name: "n", type: "flock", agentSocket: socket }),
    );
    assert.equal(status.code, 1);
    assert.equal(status.json.code, 50, status.stdout);
    assert.match(status.json.msg, /not running/);
    assert.doesNotMatch(status.stdout, /Requires .* access/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("launcher: a bundle older than its sources is never run", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-build-" });
  try {
    const launcher = await writeLauncher(dir);
    // A stale bundle that would fail if it ran: the launcher must take main.ts instead.
    const bundle = join(dir, "flock-cni.js");
    await Deno.writeTextFile(bundle, "Deno.exit(42);\n");
    await Deno.utime(bundle, 0, 0);
    const version = await runPlugin(
      launcher,
      { CNI_COMMAND: "VERSION" },
      JSON.stringify({ cniVersion: "1.0.0" }),
    );
    assert.equal(version.code, 0, version.stdout);
    assert.equal(version.json.cniVersion, "1.0.0");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
