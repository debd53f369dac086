/** Typed errors for netlink operations. */

import {
  EADDRNOTAVAIL,
  EAGAIN,
  EEXIST,
  EMSGSIZE,
  ENOBUFS,
  ENODEV,
  ENOENT,
  ESRCH,
  strerror,
} from "./ffi.ts";

/** `File exists (errno 17) — kernel says: …` */
function describeErrno(errno: number, kernelMessage?: string): string {
  return `${strerror(errno)} (errno ${errno})${
    kernelMessage ? ` — kernel says: ${kernelMessage}` : ""
  }`;
}

/** The kernel refused a netlink request (the NLMSG_ERROR payload was non-zero). */
export class NetlinkError extends Error {
  constructor(
    /** What was being done, e.g. `add route fd00::5/128`. */
    readonly operation: string,
    /** The positive errno the kernel returned. */
    readonly errno: number,
    /** The kernel's extended-ack message, when it gave one. */
    readonly kernelMessage?: string,
  ) {
    super(`${operation}: ${describeErrno(errno, kernelMessage)}`);
    this.name = "NetlinkError";
  }

  /** The object already exists. */
  get exists(): boolean {
    return this.errno === EEXIST;
  }

  /** The object (link, address, route) does not exist. */
  get notFound(): boolean {
    return this.errno === ENODEV || this.errno === ENOENT || this.errno === ESRCH ||
      this.errno === EADDRNOTAVAIL;
  }
}

/**
 * A dump the kernel stopped part-way with an error (the errno in its NLMSG_DONE): the replies
 * so far are not the whole table, so none are returned.
 */
export class DumpIncompleteError extends NetlinkError {
  constructor(operation: string, errno: number, kernelMessage?: string) {
    super(operation, errno, kernelMessage);
    this.name = "DumpIncompleteError";
    this.message = `${operation}: the kernel stopped the dump part-way: ${
      describeErrno(errno, kernelMessage)
    }`;
  }
}

/**
 * Every attempt at a dump was interrupted (NLM_F_DUMP_INTR): the kernel's table kept changing
 * while it was read, so no consistent answer was had.
 */
export class DumpInterruptedError extends Error {
  constructor(
    /** What was being done, e.g. `list routes`. */
    readonly operation: string,
    /** The request type, e.g. `RTM_GETROUTE`. */
    readonly request: string,
    /** How many dumps were tried. */
    readonly attempts: number,
  ) {
    super(
      `${operation}: ${request} dump interrupted ${attempts} times in a row ` +
        `(the table kept changing while it was read)`,
    );
    this.name = "DumpInterruptedError";
  }
}

/** A reply did not fit the receive buffer and could not be asked for again. */
export class ReplyTruncatedError extends Error {
  constructor(
    readonly operation: string,
    /** The datagram's real size. */
    readonly bytes: number,
    /** The receive buffer's size when it arrived. */
    readonly bufferBytes: number,
    reason: string,
  ) {
    super(
      `${operation}: the kernel's reply (${bytes} bytes) did not fit the receive buffer ` +
        `(${bufferBytes} bytes); ${reason}`,
    );
    this.name = "ReplyTruncatedError";
  }
}

/** Reading the reply from the socket failed (no reply in time, receive queue overflowed…). */
export class NetlinkSocketError extends Error {
  constructor(readonly operation: string, readonly errno: number) {
    super(
      `${operation}: receiving the kernel's reply failed: ${describeErrno(errno)}${
        errno === ENOBUFS
          ? " — the socket's receive queue overflowed and replies were lost"
          : errno === EAGAIN
          ? " — no reply in time"
          : ""
      }`,
    );
    this.name = "NetlinkSocketError";
  }
}

/** Whether `e` is a NetlinkError saying the object does not exist. */
export function isNotFound(e: unknown): boolean {
  return e instanceof NetlinkError && e.notFound;
}

/** Whether `e` is a NetlinkError saying the object already exists. */
export function isExists(e: unknown): boolean {
  return e instanceof NetlinkError && e.exists;
}

/** Whether `e` is a NetlinkError saying the answer did not fit in one message (EMSGSIZE). */
export function isTooLarge(e: unknown): boolean {
  return e instanceof NetlinkError && e.errno === EMSGSIZE;
}

/** A path given as a network namespace is missing or is something else. */
export class NetnsError extends Error {
  constructor(readonly path: string, reason: string) {
    super(`network namespace ${JSON.stringify(path)}: ${reason}`);
    this.name = "NetnsError";
  }
}

/** Bad arguments to a netlink operation (caught before anything is sent). */
export class NetlinkArgumentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NetlinkArgumentError";
  }
}
