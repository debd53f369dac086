/**
 * A Deno cache directory of the benchmarked agent's own, as a node has it.
 *
 * Launched by `deno run` (this machine has no `denort` to compile with), the agent maps Deno's
 * dependency-analysis database (SQLite, memory-mapped) from `DENO_DIR`. On a node that
 * database holds the agent's modules only (and a compiled binary has none). On this machine
 * the shared one also holds every test file the suite ever analysed (5.4 MB on 2026-12-02),
 * and the pages the agent's look-ups touch there were 0.5–2.7 MiB of its RSS, depending on
 * where its modules' rows happened to lie: a figure of the machine's history, not of flock.
 * So the memory benchmarks run the agent with a fresh `DENO_DIR`, filled by `deno cache`
 * before the agent starts (cold, the first start would also count the TypeScript transpiler's
 * memory). npm packages come from the shared cache through a symbolic link: nothing is fetched.
 *
 * @module
 */

import { join } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;

/** The shared cache's directory, as `deno info` reports it. */
async function sharedDenoDir(): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
    stderr: "null",
  }).output();
  if (!out.success) throw new Error("deno info --json failed");
  return (JSON.parse(new TextDecoder().decode(out.stdout)) as { denoDir: string }).denoDir;
}

/** A fresh `DENO_DIR` holding the analysis of `main.ts`'s module graph only. */
export interface AgentDenoDir extends AsyncDisposable {
  /** The directory to hand the agent as `DENO_DIR`. */
  path: string;
}

/** Creates and fills the agent's `DENO_DIR`; disposing removes it. */
export async function agentDenoDir(): Promise<AgentDenoDir> {
  const shared = await sharedDenoDir();
  const path = await Deno.makeTempDir({ prefix: "flock-bench-deno-dir-" });
  const dispose = () => Deno.remove(path, { recursive: true }).catch(() => {});
  try {
    await Deno.symlink(join(shared, "npm"), join(path, "npm"));
    const cached = await new Deno.Command(Deno.execPath(), {
      // The launcher's flags, so that the cache serves the agent's own look-ups.
      args: ["cache", "--no-config", "--no-lock", join(ROOT, "main.ts")],
      env: { DENO_DIR: path, DENO_NO_UPDATE_CHECK: "1" },
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!cached.success) {
      throw new Error(`deno cache main.ts: ${new TextDecoder().decode(cached.stderr).trim()}`);
    }
  } catch (e) {
    await dispose();
    throw e;
  }
  return { path, [Symbol.asyncDispose]: dispose };
}
