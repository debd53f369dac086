/**
 * Running external programs from tests: a bounded-time `run` that captures everything, and
 * `runOk` that turns a non-zero exit into an error carrying the command and its output.
 *
 * @module
 */

/** What a finished command left behind. */
export interface ExecResult {
  /** Exit code (128 + signal number when killed by a signal). */
  code: number;
  success: boolean;
  stdout: string;
  stderr: string;
}

/** Options for {@linkcode run}. */
export interface ExecOptions {
  /** Extra environment variables; the test process's environment is inherited. */
  env?: Record<string, string>;
  /** Text written to the command's stdin (stdin is empty otherwise). */
  stdin?: string;
  cwd?: string;
  /** Kill the command after this long; default 60 s. */
  timeoutMs?: number;
}

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

const SIGNAL_NUMBERS: Record<string, number> = { SIGKILL: 9, SIGTERM: 15, SIGINT: 2 };

/** Runs `cmd` to completion and returns its exit code and output; never throws on failure. */
export async function run(cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const [program, ...args] = cmd;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), opts.timeoutMs ?? 60_000);
  try {
    const child = new Deno.Command(program, {
      args,
      env: opts.env,
      cwd: opts.cwd,
      stdin: opts.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      signal: abort.signal,
    }).spawn();
    if (opts.stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(opts.stdin));
      await writer.close();
    }
    const out = await child.output();
    const decoder = new TextDecoder();
    const killed = out.signal ? 128 + (SIGNAL_NUMBERS[out.signal] ?? 0) : undefined;
    const stderr = decoder.decode(out.stderr);
    return {
      code: killed ?? out.code,
      success: out.success,
      stdout: decoder.decode(out.stdout),
      stderr: abort.signal.aborted
        ? `${stderr}\n[timed out after ${opts.timeoutMs ?? 60_000} ms]`
        : stderr,
    };
  } finally {
    clearTimeout(timer);
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
