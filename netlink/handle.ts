/**
 * A rtnetlink handle bound to one network namespace, like vishvananda/netlink's
 * `Handle`: the socket is created inside the namespace, so every request on it
 * acts there, whichever namespace the thread is in later.
 */

import {
  closeFd,
  EINVAL,
  ENOENT,
  exchangeOffThread,
  NETLINK_CAP_ACK,
  NETLINK_EXT_ACK,
  NETLINK_GET_STRICT_CHK,
  netlinkSocket,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDONLY,
  openPath,
  readFileSync,
  receive,
  sendToKernel,
  setReceiveTimeout,
  setSocketOption,
  SO_RCVBUF,
  SOL_NETLINK,
  SOL_SOCKET,
  SyscallError,
  withNetns,
  writeFileSync,
} from "./ffi.ts";
import {
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  NLMSG_ERROR,
  RTM_GETADDR,
  RTM_GETLINK,
  RTM_GETROUTE,
} from "./consts.ts";
import { MessageWriter, type NetlinkMessage, parseMessages } from "./wire.ts";
import {
  DumpIncompleteError,
  DumpInterruptedError,
  NetlinkError,
  NetlinkSocketError,
  NetnsError,
  ReplyTruncatedError,
} from "./errors.ts";
import { ackError, ReplyCollector } from "./reply.ts";

/** How long a reply may take before the request is declared lost. */
const RECEIVE_TIMEOUT_MS = 10_000;
/** Dumps interrupted by concurrent changes are retried this many times. */
const DUMP_RETRIES = 5;
/** The receive buffer a handle starts with; it grows when a reply does not fit. */
const RECEIVE_BUFFER_BYTES = 64 * 1024;
/** The receive buffer never grows beyond this (no netlink reply comes near it). */
const MAX_RECEIVE_BUFFER_BYTES = 16 * 1024 * 1024;
/** A read-only request whose reply did not fit is asked again at most this many times. */
const TRUNCATION_RETRIES = 2;

/** Settings of a {@link Handle}'s socket; the defaults suit every caller. */
export interface HandleOptions {
  /** The receive buffer's starting size (bytes); it grows to fit a bigger reply. */
  receiveBufferBytes?: number;
  /** SO_RCVBUF: how much the kernel queues for the socket before dropping (ENOBUFS). */
  receiveQueueBytes?: number;
}

/** Request types that only read, so asking again is harmless. */
const READ_REQUESTS = new Map([
  [RTM_GETLINK, "RTM_GETLINK"],
  [RTM_GETADDR, "RTM_GETADDR"],
  [RTM_GETROUTE, "RTM_GETROUTE"],
]);

/**
 * What an operation that only sends a request and waits for its ACK needs: a way to start a
 * message and to send it. A {@link Handle} sends at once; a `RequestBatch` (batch.ts) collects.
 */
export interface Requester {
  /** Starts a request message of `type`. */
  message(type: number, flags?: number): MessageWriter;
  /** Sends (or queues) the request; `operation` names it in errors. */
  execute(msg: MessageWriter, operation: string): NetlinkMessage[];
}

/** One request of {@link Handle.executeAll}. */
export interface QueuedRequest {
  msg: MessageWriter;
  operation: string;
}

/** A netlink socket bound to a network namespace. */
export class Handle implements Requester {
  #fd: number;
  #seq = Math.floor(Math.random() * 0x7fffffff);
  #buf: Uint8Array;
  #closed = false;

  private constructor(
    fd: number,
    /** An fd of the namespace (for moving links into it and namespace-scoped files). */
    readonly netnsFd: number,
    /** The path the namespace was opened from. */
    readonly netnsPath: string,
    readonly ownsNetnsFd: boolean,
    readonly options: HandleOptions,
  ) {
    this.#fd = fd;
    this.#buf = new Uint8Array(options.receiveBufferBytes ?? RECEIVE_BUFFER_BYTES);
  }

  /** A handle for the namespace the process runs in. */
  static current(options: HandleOptions = {}): Handle {
    return Handle.forNetns("/proc/thread-self/ns/net", options);
  }

  /**
   * A handle for the namespace at `path` (`/var/run/netns/X`, `/proc/PID/ns/net`).
   * Throws {@link NetnsError} when the path is missing or not a network namespace.
   */
  static forNetns(path: string, options: HandleOptions = {}): Handle {
    if (typeof path !== "string" || path === "") {
      throw new NetnsError(String(path), "no path given");
    }
    let nsFd: number;
    try {
      // Non-blocking: a FIFO at `path` would otherwise block the only JS thread for good.
      nsFd = openPath(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    } catch (e) {
      if (e instanceof SyscallError && e.errno === ENOENT) {
        throw new NetnsError(path, "does not exist");
      }
      throw new NetnsError(path, (e as Error).message);
    }
    try {
      return Handle.#fromFd(nsFd, path, true, options);
    } catch (e) {
      closeFd(nsFd);
      throw e;
    }
  }

  /**
   * A second handle (its own socket) on the same namespace, for a request that must not share
   * a socket with others in flight ({@link executeOffThread}). Close it after use; the namespace
   * fd stays this handle's.
   */
  another(): Handle {
    if (this.#closed) throw new Error(`netlink handle for ${this.netnsPath} is closed`);
    return Handle.#fromFd(this.netnsFd, this.netnsPath, false, this.options);
  }

  static #fromFd(nsFd: number, path: string, owns: boolean, options: HandleOptions): Handle {
    let fd: number;
    try {
      fd = openSocket(nsFd, options);
    } catch (e) {
      if (e instanceof SyscallError && e.call === "setns" && e.errno === EINVAL) {
        throw new NetnsError(path, "is not a network namespace");
      }
      throw e;
    }
    return new Handle(fd, nsFd, path, owns, options);
  }

  /** The receive buffer's current size (it grows when a reply does not fit). */
  get receiveBufferBytes(): number {
    return this.#buf.length;
  }

  /**
   * Replaces the socket with a fresh one after a request was abandoned part-way (its reply
   * truncated, a receive error): whatever of it is still queued, or a dump the kernel still
   * runs for the old socket (which would refuse the next dump with EBUSY), goes with it.
   */
  #resetSocket(): void {
    closeFd(this.#fd);
    this.#fd = -1;
    try {
      this.#fd = openSocket(this.netnsFd, this.options);
    } catch {
      // The namespace is gone: the handle stays unusable (later requests fail with EBADF) rather
      // than read a stream that lost its place; the caller throws the error that got it here.
    }
  }

  /** Starts a request message of `type`; callers add the family header and attributes. */
  message(type: number, flags = 0): MessageWriter {
    return new MessageWriter(type, NLM_F_REQUEST | flags);
  }

  /**
   * Sends a request that expects an ACK (or replies then an ACK); returns the replies.
   * A kernel error becomes a {@link NetlinkError} described by `operation`.
   */
  execute(msg: MessageWriter, operation: string): NetlinkMessage[] {
    return this.#roundTrip(msg, operation, NLM_F_ACK).messages;
  }

  /**
   * Sends several ACKed requests in one datagram and waits for every ACK. The kernel runs them
   * in order and runs each one even when an earlier one failed; the first failure is thrown
   * (as a {@link NetlinkError} named by its `operation`) once all of them are answered.
   */
  executeAll(requests: QueuedRequest[]): void {
    if (requests.length === 0) return;
    const exchanges = requests.map((r) => this.#begin(r.msg, NLM_F_ACK, r.operation));
    const size = exchanges.reduce((n, x) => n + x.request.length, 0);
    const datagram = new Uint8Array(size);
    let off = 0;
    for (const x of exchanges) {
      datagram.set(x.request, off);
      off += x.request.length;
    }
    sendToKernel(this.#fd, datagram);
    const pending = new Map(exchanges.map((x, i) => [x.seq, i]));
    const errors: (Error | undefined)[] = [];
    const operation = `batch of ${requests.length} requests (first: ${requests[0].operation})`;
    while (pending.size > 0) {
      const n = this.#receive(operation);
      if (n > this.#buf.length) {
        // ACKs are small (NETLINK_CAP_ACK): only a protocol mistake gets here.
        throw this.#truncated(operation, n, "the requests were sent and may have been carried out");
      }
      for (const m of this.#parse(n)) {
        const i = pending.get(m.seq);
        if (i === undefined || m.type !== NLMSG_ERROR) continue;
        pending.delete(m.seq);
        errors[i] = ackError(m, requests[i].operation);
      }
    }
    const first = errors.find((e) => e !== undefined);
    if (first) throw first;
  }

  /**
   * Runs a dump request; returns every message of the dump. A dump the kernel flags as
   * interrupted (its table changed while it was read) is run again, up to {@link DUMP_RETRIES}
   * times, then a {@link DumpInterruptedError} is thrown; a dump the kernel stopped with an error
   * throws a `DumpIncompleteError`. Never returns a partial table.
   */
  dump(msg: MessageWriter, operation: string): NetlinkMessage[] {
    for (let attempt = 1;; attempt++) {
      const reply = this.#roundTrip(msg, operation, NLM_F_DUMP);
      if (!reply.interrupted) return reply.messages;
      if (attempt > DUMP_RETRIES) {
        throw new DumpInterruptedError(operation, requestName(msg), attempt);
      }
    }
  }

  /**
   * {@link execute} with the send and the receive on a worker thread, for a request the kernel
   * is slow to answer (a veth deletion waits for RCU grace periods): the event loop keeps
   * running. Only one request at a time per handle, and no other request on this handle while
   * it is in flight — use a handle of its own ({@link another}).
   */
  async executeOffThread(msg: MessageWriter, operation: string): Promise<NetlinkMessage[]> {
    const exchange = this.#begin(msg, NLM_F_ACK, operation);
    let n: number;
    try {
      n = await exchangeOffThread(this.#fd, exchange.request, this.#buf);
    } catch (e) {
      this.#resetSocket();
      throw e;
    }
    for (;;) {
      if (n > this.#buf.length) {
        throw this.#truncated(operation, n, "the request was sent and may have been carried out");
      }
      if (this.#collect(exchange, n)) return exchange.messages;
      // Not expected for an ACKed request (the ACK follows the request at once): read on.
      n = this.#receive(operation);
    }
  }

  /**
   * Sends one request and collects its answer. A read-only request whose reply did not fit the
   * buffer is asked again with a buffer grown to fit; any other throws {@link ReplyTruncatedError}.
   */
  #roundTrip(msg: MessageWriter, operation: string, extraFlags: number): ReplyCollector {
    for (let attempt = 0;; attempt++) {
      const exchange = this.#begin(msg, extraFlags, operation);
      sendToKernel(this.#fd, exchange.request);
      for (;;) {
        const n = this.#receive(operation);
        if (n > this.#buf.length) {
          const readOnly = READ_REQUESTS.has(msg.type);
          if (!readOnly || attempt >= TRUNCATION_RETRIES) {
            throw this.#truncated(
              operation,
              n,
              readOnly
                ? "asked again, it still did not fit"
                : "the request may have been carried out",
            );
          }
          this.#dropTruncated(n);
          break; // ask again, with the grown buffer
        }
        if (this.#collect(exchange, n)) return exchange;
      }
    }
  }

  /** Numbers and flags one request. */
  #begin(msg: MessageWriter, extraFlags: number, operation: string): ReplyCollector {
    if (this.#closed) throw new Error(`netlink handle for ${this.netnsPath} is closed`);
    const seq = this.#seq = (this.#seq + 1) >>> 0;
    const bytes = msg.finish(seq);
    const view = new DataView(bytes.buffer, bytes.byteOffset);
    view.setUint16(6, view.getUint16(6, true) | extraFlags, true);
    return new ReplyCollector(bytes, seq, operation, (extraFlags & NLM_F_ACK) !== 0);
  }

  /** Reads one datagram; returns its real length (above the buffer's when it did not fit). */
  #receive(operation: string): number {
    try {
      return receive(this.#fd, this.#buf);
    } catch (e) {
      if (!(e instanceof SyscallError)) throw e;
      this.#resetSocket();
      throw new NetlinkSocketError(operation, e.errno);
    }
  }

  /** The messages of the `n` bytes just received; a malformed datagram abandons the socket. */
  #parse(n: number): NetlinkMessage[] {
    try {
      return parseMessages(this.#buf.subarray(0, n));
    } catch (e) {
      this.#resetSocket();
      throw e;
    }
  }

  /** Feeds the `n` bytes just received to `collector`; a malformed datagram resets the socket. */
  #collect(collector: ReplyCollector, n: number): boolean {
    try {
      return collector.take(this.#buf.subarray(0, n));
    } catch (e) {
      // The kernel's own answer (NLMSG_ERROR, an errno in NLMSG_DONE) ends the request cleanly.
      if (!(e instanceof NetlinkError)) this.#resetSocket();
      throw e;
    }
  }

  /**
   * After a datagram of `bytes` did not fit: {@link dropTruncated}, and the error to throw.
   */
  #truncated(operation: string, bytes: number, reason: string): ReplyTruncatedError {
    const error = new ReplyTruncatedError(operation, bytes, this.#buf.length, reason);
    this.#dropTruncated(bytes);
    return error;
  }

  /** Grows the buffer to fit a datagram of `bytes` and drops the socket it was read from. */
  #dropTruncated(bytes: number): void {
    let size = this.#buf.length;
    while (size < bytes && size < MAX_RECEIVE_BUFFER_BYTES) size *= 2;
    if (size !== this.#buf.length) this.#buf = new Uint8Array(size);
    this.#resetSocket();
  }

  /**
   * Writes a /proc/sys knob as seen from this namespace. Only for settings
   * rtnetlink cannot change (e.g. net.ipv6.conf.all.forwarding).
   */
  writeSysctl(key: string, value: string): void {
    const path = sysctlPath(key);
    withNetns(this.netnsFd, () => writeFileSync(path, value));
  }

  /** Reads a /proc/sys knob as seen from this namespace. */
  readSysctl(key: string): string {
    const path = sysctlPath(key);
    return withNetns(this.netnsFd, () => readFileSync(path)).trim();
  }

  /** Closes the socket (and the namespace fd when this handle opened it). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeFd(this.#fd);
    if (this.ownsNetnsFd) closeFd(this.netnsFd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * `h.dump(msg, operation)`, except that a dump the kernel stops with `absentErrno` lists nothing:
 * a filter naming what is not there (a link gone, a table not created yet) ends so.
 */
export function dumpFiltered(
  h: Handle,
  msg: MessageWriter,
  operation: string,
  absentErrno: number | undefined,
): NetlinkMessage[] {
  try {
    return h.dump(msg, operation);
  } catch (e) {
    if (e instanceof DumpIncompleteError && e.errno === absentErrno) return [];
    throw e;
  }
}

/** Opens a configured rtnetlink socket inside the namespace `nsFd`. */
function openSocket(nsFd: number, options: HandleOptions): number {
  const fd = withNetns(nsFd, () => netlinkSocket());
  try {
    setSocketOption(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1);
    setSocketOption(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1);
    setSocketOption(fd, SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1);
    setReceiveTimeout(fd, RECEIVE_TIMEOUT_MS);
    if (options.receiveQueueBytes !== undefined) {
      setSocketOption(fd, SOL_SOCKET, SO_RCVBUF, options.receiveQueueBytes);
    }
  } catch (e) {
    closeFd(fd);
    throw e;
  }
  return fd;
}

/** `RTM_GETROUTE`, for errors. */
function requestName(msg: MessageWriter): string {
  return READ_REQUESTS.get(msg.type) ?? `message type ${msg.type}`;
}

function sysctlPath(key: string): string {
  if (!/^net\.[A-Za-z0-9_.\-]+$/.test(key) || key.includes("..")) {
    throw new Error(`not a network sysctl: ${key}`);
  }
  return "/proc/sys/" + key.replaceAll(".", "/");
}
