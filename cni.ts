/**
 * The CNI plugin: a thin client exec'd by the container runtime with `CNI_COMMAND` set.
 *
 * It validates the invocation, forwards it over one unix-socket round trip to the local agent
 * and prints the agent's answer. stdout carries only the final JSON (Result, error or VERSION
 * reply), because libcni parses it. This is the exec path of every pod start, so it imports
 * nothing but the wire contract and the shared input checks (which import nothing either).
 *
 * @module
 */

import {
  CniCode,
  CniError,
  type CniErrorBody,
  DEFAULT_SOCKET,
  type RpcRequest,
  type RpcResponse,
  SUPPORTED_VERSIONS,
} from "./agent/protocol.ts";
import {
  DEFAULT_CNI_VERSION,
  isRpcCommand,
  parseCniInvocation,
  requestedVersion,
} from "./agent/cni_input.ts";
import { concatBytes, writeAll, writeAllSync } from "./agent/bytes.ts";
import { appendLogLineSync } from "./agent/log_file.ts";

/** How long the plugin waits for the agent unless the config says `timeoutSeconds`. */
export const DEFAULT_TIMEOUT_SECONDS = 120;

/** STATUS is polled every few seconds by the runtime and must be fast; a hung agent is "not available". */
export const STATUS_TIMEOUT_SECONDS = 5;

/** Largest agent response accepted; a Result is a few hundred bytes. */
const MAX_RESPONSE_BYTES = 4 << 20;

/** Exit code for any CNI error (what the reference skel uses). */
const ERROR_EXIT = 1;

/**
 * Runs the plugin for the current process: env and stdin in, JSON on stdout.
 *
 * @returns the process exit code (0 on success, 1 after printing a CNI error)
 */
export async function cniMain(): Promise<number> {
  const started = performance.now();
  const env = Deno.env.toObject();
  const command = env.CNI_COMMAND ?? "";
  let stdin = "";
  let outcome: { code: number; response: RpcResponse };
  let config: Record<string, unknown> | undefined;
  try {
    if (command !== "VERSION" && !isRpcCommand(command)) {
      // Before reading stdin: a hand-run plugin with a typo must not wait on the terminal.
      throw new CniError(CniCode.invalidEnvironment, `unknown CNI_COMMAND: ${command}`);
    }
    if (command !== "VERSION" || !Deno.stdin.isTerminal()) stdin = await readStdin();
    if (command === "VERSION") {
      printJson({
        cniVersion: requestedVersion(stdin) ?? DEFAULT_CNI_VERSION,
        supportedVersions: SUPPORTED_VERSIONS,
      });
      return 0;
    }
    const req = parseCniInvocation(withAbsoluteNetns(env), stdin);
    config = req.config;
    let response = await callAgent(
      socketPath(req.config, env),
      req,
      command === "STATUS"
        ? Math.min(timeoutMs(req.config), STATUS_TIMEOUT_SECONDS * 1000)
        : timeoutMs(req.config),
    );
    if (command === "STATUS") response = asStatusAnswer(response);
    outcome = { code: response.ok ? 0 : ERROR_EXIT, response };
  } catch (e) {
    const error = e instanceof CniError
      ? e.toBody()
      : { code: CniCode.internal, msg: `flock plugin failed: ${(e as Error)?.message ?? e}` };
    outcome = { code: ERROR_EXIT, response: { ok: false, error } };
  }
  const { response } = outcome;
  if (response.ok) {
    if (response.result) printJson(response.result);
  } else {
    printJson({
      cniVersion: requestedVersion(stdin) ?? DEFAULT_CNI_VERSION,
      ...response.error,
    });
  }
  // STATUS is polled every few seconds by containerd and CRI-O: log it only when it fails.
  // A call refused before the agent (bad CNI_CONTAINERID, cniVersion…) still goes to logFile.
  const log = logPath(config ?? configOf(stdin), env);
  if (log && !(command === "STATUS" && response.ok)) {
    appendLog(log, {
      ts: new Date().toISOString(),
      level: response.ok ? "info" : "error",
      msg: response.ok ? "ok" : response.error.msg,
      command,
      containerId: env.CNI_CONTAINERID || undefined,
      ifname: env.CNI_IFNAME || undefined,
      durationMs: Math.round((performance.now() - started) * 100) / 100,
      code: response.ok ? undefined : response.error.code,
      details: response.ok ? undefined : response.error.details,
    });
  }
  return outcome.code;
}

/**
 * Sends one request to the agent and returns its answer. Never throws: a missing agent, a
 * timeout or a garbled answer come back as an error response with the matching CNI code.
 *
 * @param path the agent's unix socket
 * @param timeoutMs overall budget for connect, write and read
 */
export async function callAgent(
  path: string,
  req: RpcRequest,
  timeoutMs: number,
): Promise<RpcResponse> {
  let conn: Deno.Conn | undefined;
  let timedOut = false;
  let deadline: AbortSignal | undefined;
  let expire!: (response: RpcResponse) => void;
  const expired = new Promise<RpcResponse>((resolve) => expire = resolve);
  const onDeadline = () => {
    timedOut = true;
    // Closing the connection makes the pending write or read reject.
    try {
      conn?.close();
    } catch { /* already closed */ }
    expire(failure(
      CniCode.tryAgainLater,
      "timed out waiting for the flock agent",
      `no answer on ${path} within ${timeoutMs} ms`,
    ));
  };
  const work = (async (): Promise<RpcResponse> => {
    try {
      // Needs no deadline: the socket is nonblocking, so even a full backlog fails at once.
      conn = await Deno.connect({ transport: "unix", path });
    } catch (e) {
      return connectFailure(path, e);
    }
    const sent = writeAll(conn, new TextEncoder().encode(JSON.stringify(req) + "\n"));
    // Armed once the request is on its way, so that setting it up (~0.5 ms) overlaps the
    // agent's work. Not setTimeout: Deno 2.9 loads its node:timers polyfill (about 20 modules,
    // 5-9 ms) on the first setTimeout call. AbortSignal.timeout does not keep the process alive.
    deadline = AbortSignal.timeout(timeoutMs);
    deadline.addEventListener("abort", onDeadline, { once: true });
    try {
      await sent;
    } catch (e) {
      // The agent stops reading an oversized request and answers at once, then closes: the
      // write fails (EPIPE) but that answer is waiting on the socket, and it is the one to give.
      const answer = await readLine(conn).catch(() => undefined);
      if (answer?.length) return parseResponse(answer);
      throw e;
    }
    return parseResponse(await readLine(conn));
  })();
  try {
    return await Promise.race([
      work.catch((e): RpcResponse | Promise<RpcResponse> => {
        if (timedOut) return expired;
        if (e instanceof CniError) return { ok: false, error: e.toBody() };
        return failure(
          CniCode.tryAgainLater,
          "lost the connection to the flock agent",
          `${path}: ${(e as Error)?.message ?? e}`,
        );
      }),
      expired,
    ]);
  } finally {
    deadline?.removeEventListener("abort", onDeadline);
    if (!timedOut) {
      try {
        (conn as Deno.Conn | undefined)?.close();
      } catch { /* already closed */ }
    }
  }
}

/**
 * The answer when the agent's socket cannot be connected to: code 11 either way (the runtime
 * retries), but a socket the caller may not open (`flock status` run without root) is not "not
 * running", which would send an operator looking at a healthy agent.
 */
export function connectFailure(path: string, e: unknown): RpcResponse {
  const details = `cannot connect to ${path}: ${(e as Error)?.message ?? e}`;
  if (e instanceof Deno.errors.PermissionDenied) {
    return failure(
      CniCode.tryAgainLater,
      "no permission to connect to the flock agent's socket (it is root's only)",
      details,
    );
  }
  return failure(CniCode.tryAgainLater, "flock agent is not running", details);
}

/**
 * STATUS answers only with the codes the spec gives it (50 "plugin not available", 51): an agent
 * that cannot be reached or does not answer (11 on the other verbs) cannot service ADD, which is
 * 50. Without this a stopped agent would report "try again later", which STATUS does not define.
 */
export function asStatusAnswer(response: RpcResponse): RpcResponse {
  if (response.ok || response.error.code !== CniCode.tryAgainLater) return response;
  return { ok: false, error: { ...response.error, code: CniCode.notAvailable } };
}

function failure(code: number, msg: string, details?: string): RpcResponse {
  const error: CniErrorBody = details === undefined ? { code, msg } : { code, msg, details };
  return { ok: false, error };
}

/** Checks the agent's answer is one of the two shapes the protocol allows. */
function parseResponse(line: Uint8Array): RpcResponse {
  const text = new TextDecoder().decode(line);
  if (text.trim() === "") {
    return failure(
      CniCode.tryAgainLater,
      "the flock agent closed the connection without an answer",
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return failure(
      CniCode.internal,
      "the flock agent sent an invalid response",
      `${(e as Error).message}: ${text.slice(0, 200)}`,
    );
  }
  const v = value as Record<string, unknown> | null;
  if (v?.ok === true && (v.result === undefined || isObject(v.result))) {
    return v.result === undefined ? { ok: true } : { ok: true, result: v.result };
  }
  const err = v?.error as Record<string, unknown> | undefined;
  if (
    v?.ok === false && isObject(err) && typeof err.code === "number" &&
    typeof err.msg === "string" && (err.details === undefined || typeof err.details === "string")
  ) {
    return failure(err.code, err.msg, err.details as string | undefined);
  }
  return failure(
    CniCode.internal,
    "the flock agent sent a malformed response",
    text.slice(0, 200),
  );
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Reads up to the first `\n` (or EOF); the agent sends exactly one line. */
async function readLine(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(64 * 1024);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) break;
    const newline = buf.subarray(0, n).indexOf(10);
    chunks.push(buf.slice(0, newline === -1 ? n : newline));
    total += newline === -1 ? n : newline;
    if (newline !== -1) break;
    if (total > MAX_RESPONSE_BYTES) {
      throw new CniError(CniCode.internal, "the flock agent's response is too large");
    }
  }
  return concatBytes(chunks, total);
}

/**
 * Reads stdin to EOF with plain synchronous reads: `new Response(Deno.stdin.readable)` costs
 * ~6 ms of start-up and async reads ~0.5 ms (each a hop to a blocking thread) against 0.1 ms;
 * the plugin has nothing else to do meanwhile. A nonblocking stdin (never seen from a runtime)
 * falls back to async reads.
 */
async function readAllStdin(): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(64 * 1024);
  let sync = true;
  for (;;) {
    let n: number | null;
    try {
      n = sync ? Deno.stdin.readSync(buf) : await Deno.stdin.read(buf);
    } catch (e) {
      if (!(sync && e instanceof Deno.errors.WouldBlock)) throw e;
      sync = false;
      continue;
    }
    if (n === null) break;
    chunks.push(buf.slice(0, n));
    total += n;
  }
  return concatBytes(chunks, total);
}

async function readStdin(): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = await readAllStdin();
  } catch (e) {
    throw new CniError(CniCode.ioFailure, "failed to read stdin", (e as Error).message);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new CniError(
      CniCode.decodingFailure,
      "failed to decode the network configuration on stdin",
      "stdin is not valid UTF-8",
    );
  }
}

function printJson(value: unknown): void {
  writeAllSync(Deno.stdout, new TextEncoder().encode(JSON.stringify(value) + "\n"));
}

/** cnitool resolves the netns path itself, but a hand-run plugin may get a relative one. */
function withAbsoluteNetns(env: Record<string, string>): Record<string, string> {
  const netns = env.CNI_NETNS;
  if (!netns || netns.startsWith("/")) return env;
  return { ...env, CNI_NETNS: `${Deno.cwd()}/${netns}` };
}

function socketPath(config: Record<string, unknown>, env: Record<string, string>): string {
  if (typeof config.agentSocket === "string" && config.agentSocket !== "") {
    return config.agentSocket;
  }
  return env.FLOCK_SOCKET || DEFAULT_SOCKET;
}

/** The longest delay a timer holds; a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function timeoutMs(config: Record<string, unknown>): number {
  const seconds = config.timeoutSeconds;
  return typeof seconds === "number" && Number.isFinite(seconds) && seconds > 0
    ? Math.min(seconds * 1000, MAX_TIMER_MS)
    : DEFAULT_TIMEOUT_SECONDS * 1000;
}

/** The network configuration on stdin when it is a JSON object, else undefined; never throws. */
function configOf(stdin: string): Record<string, unknown> | undefined {
  try {
    const value = JSON.parse(stdin);
    return isObject(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

function logPath(
  config: Record<string, unknown> | undefined,
  env: Record<string, string>,
): string | undefined {
  if (typeof config?.logFile === "string" && config.logFile !== "") return config.logFile;
  return env.FLOCK_CNI_LOG || undefined;
}

/**
 * Appends one JSON line (rotated at 10 MiB to `<name>.1`, see agent/log_file.ts); logging is
 * best effort and never fails the call. Synchronous: the plugin has nothing else to do, and each
 * async file op is a hop to a blocking thread. A path refused as unsafe (a symbolic link, a
 * directory others may write to) is said once on stderr, which runtimes keep in their logs.
 */
function appendLog(path: string, fields: Record<string, unknown>): void {
  try {
    appendLogLineSync(path, JSON.stringify(fields) + "\n");
  } catch (e) {
    if ((e as Error)?.name !== "UnsafePathError") return;
    try {
      writeAllSync(
        Deno.stderr,
        new TextEncoder().encode(`flock: not logging: ${(e as Error).message}\n`),
      );
    } catch { /* best effort */ }
  }
}
