/**
 * Running an external program to completion within a bounded time, capturing its output: what
 * `flock demo` needs for its iproute2 scaffolding and plugin execs, and what the tests build
 * their helpers on (tests/helpers/exec.ts adds the test-only parts).
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
  /** The command was killed because it ran past its `timeoutMs` (a hang, not a failure). */
  timedOut?: boolean;
}

/** Options for {@linkcode run}. */
export interface ExecOptions {
  /** Extra environment variables; the caller's environment is inherited unless `clearEnv`. */
  env?: Record<string, string>;
  /** Start from an empty environment: the command sees only `env` (as a CNI runtime does). */
  clearEnv?: boolean;
  /** Written to the command's stdin (stdin is empty otherwise). */
  stdin?: string | Uint8Array;
  cwd?: string;
  /** Kill the command after this long; default 60 s. */
  timeoutMs?: number;
}

const SIGNAL_NUMBERS: Record<string, number> = { SIGKILL: 9, SIGTERM: 15, SIGINT: 2 };

/**
 * Runs `cmd` (program and arguments, no shell) to completion and returns its exit code and
 * output; a non-zero exit is not an error. Throws only when the program cannot be started.
 */
export async function run(cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const [program, ...args] = cmd;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const child = new Deno.Command(program, {
      args,
      env: opts.env,
      clearEnv: opts.clearEnv,
      cwd: opts.cwd,
      stdin: opts.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      signal: abort.signal,
    }).spawn();
    if (opts.stdin !== undefined) {
      const bytes = typeof opts.stdin === "string"
        ? new TextEncoder().encode(opts.stdin)
        : opts.stdin;
      const writer = child.stdin.getWriter();
      // A program may exit without reading its input (a broken pipe here); its exit code and
      // output say what happened, so that is the result, not an exception.
      await writer.write(bytes).catch(() => {});
      await writer.close().catch(() => {});
    }
    const out = await child.output();
    const decoder = new TextDecoder();
    const killed = out.signal ? 128 + (SIGNAL_NUMBERS[out.signal] ?? 0) : undefined;
    const stderr = decoder.decode(out.stderr);
    return {
      code: killed ?? out.code,
      success: out.success,
      stdout: decoder.decode(out.stdout),
      timedOut: abort.signal.aborted,
      // Say so when it was us who killed it, so a hang is not mistaken for a crash.
      stderr: abort.signal.aborted ? `${stderr}\n[timed out after ${timeoutMs} ms]` : stderr,
    };
  } finally {
    clearTimeout(timer);
  }
}
