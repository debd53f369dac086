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
  SOL_NETLINK,
  SyscallError,
  withNetns,
  writeFileSync,
} from "./ffi.ts";
import {
  NLM_F_ACK,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLM_F_DUMP,
  NLM_F_DUMP_INTR,
  NLM_F_MULTI,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_HDRLEN,
  NLMSGERR_ATTR_MSG,
} from "./consts.ts";
import {
  MessageWriter,
  type NetlinkMessage,
  parseAttributes,
  parseMessages,
  readString,
} from "./wire.ts";
import { NetlinkError, NetnsError } from "./errors.ts";

/** How long a reply may take before the request is declared lost. */
const RECEIVE_TIMEOUT_MS = 10_000;
/** Dumps interrupted by concurrent changes are retried this many times. */
const DUMP_RETRIES = 5;

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
  #buf = new Uint8Array(64 * 1024);
  #closed = false;

  private constructor(
    fd: number,
    /** An fd of the namespace (for moving links into it and namespace-scoped files). */
    readonly netnsFd: number,
    /** The path the namespace was opened from. */
    readonly netnsPath: string,
    readonly ownsNetnsFd: boolean,
  ) {
    this.#fd = fd;
  }

  /** A handle for the namespace the process runs in. */
  static current(): Handle {
    return Handle.forNetns("/proc/thread-self/ns/net");
  }

  /**
   * A handle for the namespace at `path` (`/var/run/netns/X`, `/proc/PID/ns/net`).
   * Throws {@link NetnsError} when the path is missing or not a network namespace.
   */
  static forNetns(path: string): Handle {
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
      return Handle.#fromFd(nsFd, path, true);
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
    return Handle.#fromFd(this.netnsFd, this.netnsPath, false);
  }

  static #fromFd(nsFd: number, path: string, owns: boolean): Handle {
    let fd: number;
    try {
      fd = withNetns(nsFd, () => netlinkSocket());
    } catch (e) {
      if (e instanceof SyscallError && e.call === "setns" && e.errno === EINVAL) {
        throw new NetnsError(path, "is not a network namespace");
      }
      throw e;
    }
    try {
      setSocketOption(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1);
      setSocketOption(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1);
      setSocketOption(fd, SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1);
      setReceiveTimeout(fd, RECEIVE_TIMEOUT_MS);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
    return new Handle(fd, nsFd, path, owns);
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
    return this.#roundTrip(msg, operation, NLM_F_ACK);
  }

  /**
   * Sends several ACKed requests in one datagram and waits for every ACK. The kernel runs them
   * in order and runs each one even when an earlier one failed; the first failure is thrown
   * (as a {@link NetlinkError} named by its `operation`) once all of them are answered.
   */
  executeAll(requests: QueuedRequest[]): void {
    if (requests.length === 0) return;
    const exchanges = requests.map((r) => this.#begin(r.msg, NLM_F_ACK));
    const size = exchanges.reduce((n, x) => n + x.bytes.length, 0);
    const datagram = new Uint8Array(size);
    let off = 0;
    for (const x of exchanges) {
      datagram.set(x.bytes, off);
      off += x.bytes.length;
    }
    sendToKernel(this.#fd, datagram);
    const pending = new Map(exchanges.map((x, i) => [x.seq, i]));
    const errors: (Error | undefined)[] = [];
    while (pending.size > 0) {
      const n = receive(this.#fd, this.#buf);
      for (const m of parseMessages(this.#buf.subarray(0, n))) {
        const i = pending.get(m.seq);
        if (i === undefined || m.type !== NLMSG_ERROR) continue;
        pending.delete(m.seq);
        errors[i] = ackError(m, requests[i].operation);
      }
    }
    const first = errors.find((e) => e !== undefined);
    if (first) throw first;
  }

  /** Runs a dump request; returns every message of the dump. */
  dump(msg: MessageWriter, operation: string): NetlinkMessage[] {
    for (let attempt = 0;; attempt++) {
      try {
        return this.#roundTrip(msg, operation, NLM_F_DUMP);
      } catch (e) {
        if (!(e instanceof DumpInterrupted) || attempt >= DUMP_RETRIES) throw e;
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
    const exchange = this.#begin(msg, NLM_F_ACK);
    let n = await exchangeOffThread(this.#fd, exchange.bytes, this.#buf);
    for (;;) {
      const done = this.#consume(exchange, n, operation);
      if (done) return done;
      // Not expected for an ACKed request (the ACK follows the request at once): read on.
      n = receive(this.#fd, this.#buf);
    }
  }

  #roundTrip(msg: MessageWriter, operation: string, extraFlags: number): NetlinkMessage[] {
    const exchange = this.#begin(msg, extraFlags);
    sendToKernel(this.#fd, exchange.bytes);
    for (;;) {
      const n = receive(this.#fd, this.#buf);
      const done = this.#consume(exchange, n, operation);
      if (done) return done;
    }
  }

  /** Numbers and flags one request. */
  #begin(msg: MessageWriter, extraFlags: number): Exchange {
    if (this.#closed) throw new Error(`netlink handle for ${this.netnsPath} is closed`);
    const seq = this.#seq = (this.#seq + 1) >>> 0;
    const bytes = msg.finish(seq);
    const view = new DataView(bytes.buffer, bytes.byteOffset);
    view.setUint16(6, view.getUint16(6, true) | extraFlags, true);
    return { seq, bytes, extraFlags, replies: [], interrupted: false };
  }

  /** Takes one received datagram of `n` bytes; returns the replies once the request is done. */
  #consume(x: Exchange, n: number, operation: string): NetlinkMessage[] | undefined {
    for (const m of parseMessages(this.#buf.subarray(0, n))) {
      if (m.seq !== x.seq) continue; // a stale reply to an earlier, abandoned request
      if (m.flags & NLM_F_DUMP_INTR) x.interrupted = true;
      if (m.type === NLMSG_ERROR) {
        const error = ackError(m, operation);
        if (error) throw error;
        return x.replies;
      }
      if (m.type === NLMSG_DONE) {
        if (x.interrupted) throw new DumpInterrupted();
        return x.replies;
      }
      x.replies.push({ ...m, body: m.body.slice() });
      if (!(m.flags & NLM_F_MULTI) && !(x.extraFlags & NLM_F_ACK)) return x.replies;
    }
    return undefined;
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

class DumpInterrupted extends Error {}

/** One request in flight and what came back so far. */
interface Exchange {
  seq: number;
  bytes: Uint8Array;
  extraFlags: number;
  replies: NetlinkMessage[];
  interrupted: boolean;
}

function sysctlPath(key: string): string {
  if (!/^net\.[A-Za-z0-9_.\-]+$/.test(key) || key.includes("..")) {
    throw new Error(`not a network sysctl: ${key}`);
  }
  return "/proc/sys/" + key.replaceAll(".", "/");
}

/** The failure an NLMSG_ERROR reports, named by `operation`; undefined for a plain ACK. */
function ackError(m: NetlinkMessage, operation: string): NetlinkError | undefined {
  const errno = -new DataView(m.body.buffer, m.body.byteOffset).getInt32(0, true);
  return errno === 0 ? undefined : new NetlinkError(operation, errno, extAckMessage(m));
}

function extAckMessage(m: NetlinkMessage): string | undefined {
  if (!(m.flags & NLM_F_ACK_TLVS)) return undefined;
  // error (4) + the original header, plus its payload unless the ack was capped
  let off = 4 + NLMSG_HDRLEN;
  if (!(m.flags & NLM_F_CAPPED)) {
    off = 4 + new DataView(m.body.buffer, m.body.byteOffset).getUint32(4, true);
  }
  if (off > m.body.length) return undefined;
  return readString(parseAttributes(m.body.subarray(off)).get(NLMSGERR_ATTR_MSG));
}
