/**
 * Running external programs from tests: the product's bounded-time `run` (agent/exec.ts) that
 * captures everything, and `runOk` that turns a non-zero exit into an error carrying the command
 * and its output; `ROOT_ONLY` for tests that need root.
 *
 * @module
 */

import { type ExecOptions, type ExecResult, run } from "../../agent/exec.ts";

export { type ExecOptions, type ExecResult, run };

/** Thrown by {@linkcode runOk} when a command exits non-zero. */
export class CommandFailedError extends Error {
  constructor(readonly cmd: string[], readonly result: ExecResult) {
    super(
      `command failed (exit ${result.code}): ${cmd.join(" ")}\n` +
        `stdout: ${result.stdout.trim()}\nstderr: ${result.stderr.trim()}`,
    );
    this.name = "CommandFailedError";
  }
}

/** Runs `cmd` and throws {@linkcode CommandFailedError} unless it exits 0. */
export async function runOk(cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const result = await run(cmd, opts);
  if (!result.success) throw new CommandFailedError(cmd, result);
  return result;
}

/** True when the test process runs as root. */
export function isRoot(): boolean {
  return Deno.uid() === 0;
}

/**
 * `Deno.test` options for tests that need root and namespaces: skipped for a non-root developer,
 * never in CI (CI=true), where such a test must run and fail loudly instead.
 */
export const ROOT_ONLY: { ignore: boolean } = {
  ignore: !isRoot() && Deno.env.get("CI") !== "true",
};
