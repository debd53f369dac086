/**
 * The agent's side of the CNI RPC: a unix socket that takes one JSON request line per
 * connection and answers with exactly one JSON response line.
 *
 * Ordering guarantees: requests for the same container run one after another (an ADD and its
 * DEL never overlap), different containers run concurrently, GC runs alone (it waits for the
 * in-flight requests and holds new ones back), and STATUS is never held back at all, because
 * runtimes poll it and a stuck STATUS marks the node NotReady. A handler may answer before its
 * work is over (a DEL answers while its veth is still being deleted): what it passes to `hold`
 * keeps its container (and {@link RpcServer.exclusive}) waiting until that settles. GC does not
 * wait for it (the kernel may take minutes over one veth, and GC holds every container back
 * meanwhile): its handler leaves attachments whose held work still runs alone.
 *
 * @module
 */

import { CniCode, CniError, type RpcRequest, type RpcResponse } from "./protocol.ts";
import { toCniError } from "./cni_errors.ts";
import { isRpcCommand } from "./cni_input.ts";
import { concatBytes, writeAll } from "./bytes.ts";
import { assertSafeDirSync, UnsafePathError } from "./safe_path.ts";

/** Default bound on one request line. */
export const DEFAULT_MAX_REQUEST_BYTES = 1 << 20;
/** Default time a client has to send its request line. */
export const DEFAULT_READ_TIMEOUT_MS = 30_000;
/** Default time {@link RpcServer.close} waits for in-flight requests. */
export const DEFAULT_CLOSE_TIMEOUT_MS = 10_000;
/** Default quiet time after the last request before `onIdle` runs. */
export const DEFAULT_IDLE_MS = 1_000;

/** Options of an {@link RpcServer}. */
export interface RpcServerOptions {
  /** The unix socket path. */
  path: string;
  /**
   * Serves one validated-shape request; a thrown CniError becomes its error body. Work passed
   * to `hold` may go on after the answer; see the module doc.
   */
  handler: (req: RpcRequest, hold: HoldWork) => Promise<RpcResponse>;
  /** Structured log sink for transport problems (bad requests, hung-up clients). */
  log?: (fields: Record<string, unknown>) => void;
  maxRequestBytes?: number;
  readTimeoutMs?: number;
  closeTimeoutMs?: number;
  /**
   * Runs once the server has had no request in flight for `idleMs` after some work (the agent
   * returns freed memory to the kernel there). Errors are logged and ignored.
   */
  onIdle?: () => void;
  idleMs?: number;
}

/**
 * Keeps a request's container held (later requests for it, GC and exclusive work wait) until
 * `work` settles, after the request has been answered. A rejection is the handler's to log.
 */
export type HoldWork = (work: Promise<unknown>) => void;

/**
 * Checks that a decoded value has the shape of an {@link RpcRequest}. Absent string fields
 * default to "" (GC and STATUS have none); present ones must be strings.
 *
 * @throws {CniError} code 4 for an unknown command, code 6 for anything else malformed.
 */
export function validateRpcRequest(value: unknown): RpcRequest {
  if (!isPlainObject(value)) {
    throw new CniError(CniCode.decodingFailure, "malformed request: expected a JSON object");
  }
  if (typeof value.command !== "string") {
    throw new CniError(CniCode.decodingFailure, "malformed request: command must be a string");
  }
  if (!isRpcCommand(value.command)) {
    throw new CniError(CniCode.invalidEnvironment, `unknown CNI_COMMAND: ${value.command}`);
  }
  const fields = ["containerId", "netns", "ifname", "args"] as const;
  const strings: Record<string, string> = {};
  for (const field of fields) {
    const v = value[field] ?? "";
    if (typeof v !== "string") {
      throw new CniError(CniCode.decodingFailure, `malformed request: ${field} must be a string`);
    }
    strings[field] = v;
  }
  if (!isPlainObject(value.config)) {
    throw new CniError(CniCode.decodingFailure, "malformed request: config must be an object");
  }
  return {
    command: value.command,
    containerId: strings.containerId,
    netns: strings.netns,
    ifname: strings.ifname,
    args: strings.args,
    config: value.config,
  };
}

/** The unix-socket RPC server of the agent. */
export class RpcServer {
  readonly #opts:
    & Required<Omit<RpcServerOptions, "log" | "onIdle">>
    & Pick<RpcServerOptions, "log" | "onIdle">;
  #listener?: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
  #acceptLoop?: Promise<void>;
  #inFlight = new Set<Promise<void>>();
  #socketIno?: number | null;
  #closing = false;
  /**
   * Aborts of the connections still waiting for their request; close() calls them. Each is
   * removed once its request is read: racing every read against one long-lived "shutdown"
   * promise instead left a reaction on it per request, a leak of about 1 KiB per request
   * (bench/README.md, "Memory").
   */
  readonly #abortReads = new Set<(why: "shutdown") => void>();
  readonly #gate = new GcGate();
  readonly #containerChains = new Map<string, Promise<void>>();
  #idleTimer?: ReturnType<typeof setTimeout>;

  constructor(opts: RpcServerOptions) {
    this.#opts = {
      maxRequestBytes: DEFAULT_MAX_REQUEST_BYTES,
      readTimeoutMs: DEFAULT_READ_TIMEOUT_MS,
      closeTimeoutMs: DEFAULT_CLOSE_TIMEOUT_MS,
      idleMs: DEFAULT_IDLE_MS,
      ...opts,
    };
  }

  /** Creates the socket (0600) and starts accepting connections. */
  async start(): Promise<void> {
    if (this.#listener) throw new Error("RpcServer already started");
    const path = this.#opts.path;
    const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) || "/" : ".";
    // The directory may be shared with other components: create it only when missing, and
    // then private, so the socket is never reachable through a looser directory of ours.
    if (!(await exists(dir))) await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    // Root binds here: a directory others may write to would let them plant links at the name.
    assertSafeDirSync(dir, "socket directory");
    await removeStaleSocket(path);
    // bind() creates the socket with 0777 & ~umask and it accepts connections at once: with a
    // lax umask anyone could connect before the chmod (and stay connected after it). The umask
    // is set only around this synchronous call, so no other file of the process is affected.
    const umask = Deno.umask(0o177);
    try {
      this.#listener = Deno.listen({ transport: "unix", path });
    } finally {
      Deno.umask(umask);
    }
    // No chmod: the umask above made it 0600 already, and a chmod by path would follow a link
    // put in its place meanwhile.
    const socket = await Deno.lstat(path);
    if (!socket.isSocket) {
      this.#listener.close();
      this.#listener = undefined;
      throw new UnsafePathError(`refusing ${path}: replaced by something else than our socket`);
    }
    this.#socketIno = socket.ino;
    this.#acceptLoop = this.#accept(this.#listener);
  }

  /** Stops accepting, waits (bounded) for in-flight requests and removes the socket file. */
  async close(): Promise<void> {
    if (this.#closing || !this.#listener) return;
    this.#closing = true;
    clearTimeout(this.#idleTimer);
    for (const abort of this.#abortReads) abort("shutdown");
    try {
      this.#listener.close();
    } catch { /* already closed */ }
    await this.#acceptLoop;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.#opts.closeTimeoutMs);
    });
    const outcome = await Promise.race([
      Promise.allSettled([...this.#inFlight]).then(() => "drained" as const),
      timeout,
    ]);
    clearTimeout(timer);
    if (outcome === "timeout") {
      this.#opts.log?.({
        level: "warn",
        msg: "rpc server closed with requests still running",
        inFlight: this.#inFlight.size,
      });
    }
    // Remove the socket only if it is still ours: a new agent may already have replaced it.
    try {
      const st = await Deno.lstat(this.#opts.path);
      if (st.ino === this.#socketIno) await Deno.remove(this.#opts.path);
    } catch { /* already gone */ }
  }

  async #accept(listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>): Promise<void> {
    while (!this.#closing) {
      let conn: Deno.UnixConn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (this.#closing) return;
        this.#opts.log?.({ level: "error", msg: "rpc accept failed", error: String(e) });
        // Transient (e.g. EMFILE): back off instead of spinning.
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      const done = this.#serve(conn).finally(() => {
        this.#inFlight.delete(done);
        if (this.#inFlight.size === 0) this.#armIdle();
      });
      this.#inFlight.add(done);
    }
  }

  /** (Re)starts the quiet-time timer of `onIdle`; it never keeps the process alive. */
  #armIdle(): void {
    const onIdle = this.#opts.onIdle;
    if (!onIdle || this.#closing) return;
    clearTimeout(this.#idleTimer);
    const timer = setTimeout(() => {
      this.#idleTimer = undefined;
      if (this.#inFlight.size > 0 || this.#closing) return;
      try {
        onIdle();
      } catch (e) {
        this.#opts.log?.({ level: "warn", msg: "rpc idle hook failed", error: String(e) });
      }
    }, this.#opts.idleMs);
    Deno.unrefTimer(timer);
    this.#idleTimer = timer;
  }

  /** One connection: read, dispatch, answer once, close. Never throws. */
  async #serve(conn: Deno.UnixConn): Promise<void> {
    let response: RpcResponse;
    try {
      const line = await this.#readRequest(conn);
      if (line === undefined) {
        // Hung up before sending anything: nobody to answer, but the socket is still ours.
        try {
          conn.close();
        } catch { /* already closed */ }
        return;
      }
      response = await this.#dispatch(decodeRequest(line));
    } catch (e) {
      response = { ok: false, error: toCniError(e).toBody() };
    }
    try {
      let text: string;
      try {
        text = JSON.stringify(response) + "\n";
      } catch (e) {
        text = JSON.stringify({ ok: false, error: toCniError(e).toBody() }) + "\n";
      }
      await writeAll(conn, new TextEncoder().encode(text));
    } catch (e) {
      // The client gave up (timeout, SIGKILL): the work is done, the answer has nowhere to go.
      this.#opts.log?.({
        level: "warn",
        msg: "rpc client went away before the answer",
        error: String(e),
      });
    } finally {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  }

  /**
   * Reads up to the first `\n`. A request that ends at EOF without one is taken as is; an
   * oversized one is drained to its end first, so the client is still reading when the error
   * comes back.
   *
   * @returns the line, or undefined when the client hung up without sending anything
   */
  async #readRequest(conn: Deno.UnixConn): Promise<Uint8Array | undefined> {
    const max = this.#opts.maxRequestBytes;
    const chunks: Uint8Array[] = [];
    let total = 0;
    let oversized = false;
    const buf = new Uint8Array(64 * 1024);
    // Per connection, and dropped with it (see #abortReads).
    const { promise: abort, resolve: abortWith } = Promise.withResolvers<"timeout" | "shutdown">();
    const timer = setTimeout(() => abortWith("timeout"), this.#opts.readTimeoutMs);
    this.#abortReads.add(abortWith);
    if (this.#closing) abortWith("shutdown");
    try {
      while (true) {
        const read = conn.read(buf);
        const n = await Promise.race([read, abort]);
        if (n === "timeout" || n === "shutdown") {
          read.catch(() => {}); // settles with an error once the connection closes
          throw n === "timeout"
            ? new CniError(
              CniCode.decodingFailure,
              `timed out after ${this.#opts.readTimeoutMs} ms waiting for the request`,
            )
            : new CniError(CniCode.tryAgainLater, "flock agent is shutting down");
        }
        if (n === null) {
          if (total === 0 && !oversized) return undefined;
          break;
        }
        const newline = buf.subarray(0, n).indexOf(10);
        const used = newline === -1 ? n : newline;
        if (!oversized) {
          chunks.push(buf.slice(0, used));
          total += used;
          if (total > max) {
            oversized = true;
            chunks.length = 0;
          }
        } else {
          total += used;
        }
        if (newline !== -1) break;
        // A client that streams endlessly without a newline is cut off at 16× the bound.
        if (oversized && total > max * 16) break;
      }
    } finally {
      clearTimeout(timer);
      this.#abortReads.delete(abortWith);
    }
    if (oversized) {
      throw new CniError(
        CniCode.decodingFailure,
        `request too large: more than ${max} bytes`,
        `at least ${total} bytes`,
      );
    }
    return concatBytes(chunks, total);
  }

  /**
   * Runs `fn` while no container request or GC is in progress (like a GC does); requests that
   * arrive meanwhile wait. For node-wide changes such as a new NodeConfig.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.#gate.exclusive(fn);
  }

  /**
   * Runs `fn` as a request of container `containerId` runs: after that container's earlier
   * requests and the work they hold, alongside other containers' requests, never during a GC.
   * For the agent's own work on one container (retrying its stuck release), which must not hold
   * up the other containers as {@link exclusive} does.
   */
  forContainer<T>(containerId: string, fn: () => Promise<T>): Promise<T> {
    const nothingHeld = () => undefined;
    return this.#perContainer(containerId, () => this.#gate.shared(fn, nothingHeld), nothingHeld);
  }

  /** Runs the handler under the ordering rules (see module doc). */
  #dispatch(req: RpcRequest): Promise<RpcResponse> {
    const held: Promise<unknown>[] = [];
    const hold: HoldWork = (work) => held.push(work.catch(() => {}));
    const call = () => this.#call(req, hold);
    // Called once the handler has answered (so `held` is complete); undefined: nothing held.
    let heldDone: Promise<void> | undefined;
    const settled = (): Promise<void> | undefined => {
      if (held.length === 0 || heldDone) return heldDone;
      const all: Promise<void> = Promise.all(held).then(() => {
        this.#inFlight.delete(all);
        if (this.#inFlight.size === 0) this.#armIdle();
      });
      this.#inFlight.add(all);
      return heldDone = all;
    };
    switch (req.command) {
      case "STATUS":
        return call();
      case "GC":
        return this.#gate.exclusive(call, { waitForHeld: false });
      default:
        return this.#perContainer(
          req.containerId,
          () => this.#gate.shared(call, settled),
          settled,
        );
    }
  }

  async #call(req: RpcRequest, hold: HoldWork): Promise<RpcResponse> {
    try {
      const response = await this.#opts.handler(req, hold);
      if (!isPlainObject(response) || typeof response.ok !== "boolean") {
        throw new Error(`handler returned a malformed response for ${req.command}`);
      }
      return response;
    } catch (e) {
      return { ok: false, error: toCniError(e).toBody() };
    }
  }

  /**
   * Chains calls per container ID so that they never overlap; the next call also waits for
   * what `settled` resolves (work held after the answer).
   */
  async #perContainer<T>(
    key: string,
    fn: () => Promise<T>,
    settled: () => Promise<void> | undefined,
  ): Promise<T> {
    const previous = this.#containerChains.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => release = resolve);
    const tail = previous.then(() => mine);
    this.#containerChains.set(key, tail);
    const done = () => {
      release();
      if (this.#containerChains.get(key) === tail) this.#containerChains.delete(key);
    };
    try {
      await previous;
      return await fn();
    } finally {
      afterHeld(settled(), done);
    }
  }
}

/**
 * A readers-writer gate: container requests share it, GC takes it alone. A waiting GC holds
 * back new container requests so that a steady stream of ADDs cannot starve it.
 */
class GcGate {
  /** Requests sharing the gate, counted until their held work settles. */
  #shared = 0;
  /** Requests sharing the gate that have not answered yet. */
  #active = 0;
  #exclusivePending = 0;
  #exclusiveTail: Promise<void> = Promise.resolve();
  #drainWaiters: (() => void)[] = [];
  #exclusiveWaiters: (() => void)[] = [];

  /** Runs `fn` sharing the gate, which stays taken until `settled` (after `fn`) resolves. */
  async shared<T>(fn: () => Promise<T>, settled: () => Promise<void> | undefined): Promise<T> {
    while (this.#exclusivePending > 0) {
      await new Promise<void>((resolve) => this.#exclusiveWaiters.push(resolve));
    }
    this.#shared++;
    this.#active++;
    const done = () => {
      this.#shared--;
      if (this.#shared === 0) wake(this.#drainWaiters);
    };
    try {
      return await fn();
    } finally {
      this.#active--;
      if (this.#active === 0) wake(this.#drainWaiters);
      afterHeld(settled(), done);
    }
  }

  /**
   * Runs `fn` alone: after the requests sharing the gate have answered and, unless
   * `waitForHeld` is false, their held work has settled; holds new ones back meanwhile.
   */
  async exclusive<T>(fn: () => Promise<T>, { waitForHeld = true } = {}): Promise<T> {
    this.#exclusivePending++;
    const previous = this.#exclusiveTail;
    let release!: () => void;
    this.#exclusiveTail = new Promise<void>((resolve) => release = resolve);
    try {
      await previous;
      while ((waitForHeld ? this.#shared : this.#active) > 0) {
        await new Promise<void>((resolve) => this.#drainWaiters.push(resolve));
      }
      return await fn();
    } finally {
      release();
      this.#exclusivePending--;
      if (this.#exclusivePending === 0) wake(this.#exclusiveWaiters);
    }
  }
}

/** Runs `done` once `held` settles, or at once when nothing is held. */
function afterHeld(held: Promise<void> | undefined, done: () => void): void {
  if (held) held.then(done, done);
  else done();
}

function wake(waiters: (() => void)[]): void {
  for (const resolve of waiters.splice(0)) resolve();
}

function decodeRequest(line: Uint8Array): RpcRequest {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(line));
  } catch (e) {
    throw new CniError(
      CniCode.decodingFailure,
      "failed to decode the request",
      (e as Error).message,
    );
  }
  return validateRpcRequest(value);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Removes a socket left by a dead agent. A socket that still answers belongs to a live agent
 * and a non-socket file is not ours: both are refused rather than clobbered.
 */
async function removeStaleSocket(path: string): Promise<void> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  if (!st.isSocket) {
    throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  }
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    throw new Deno.errors.AddrInUse(`another process is serving ${path}`);
  } catch (e) {
    if (e instanceof Deno.errors.AddrInUse) throw e;
  }
  await Deno.remove(path);
}
