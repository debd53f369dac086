/** Typed errors for netlink operations. */

import { EADDRNOTAVAIL, EEXIST, EMSGSIZE, ENODEV, ENOENT, ESRCH, strerror } from "./ffi.ts";

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
    super(
      `${operation}: ${strerror(errno)} (errno ${errno})${
        kernelMessage ? ` — kernel says: ${kernelMessage}` : ""
      }`,
    );
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
