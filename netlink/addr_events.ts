/**
 * Address change notifications of one network namespace (RTNLGRP_IPV4_IFADDR and
 * RTNLGRP_IPV6_IFADDR), read without waiting: the caller polls them on a timer.
 *
 * Why polled and not read by a blocking receive on a worker thread: such a receive cannot be
 * interrupted (netlink sockets do not implement shutdown(2), and close(2) does not wake a thread
 * blocked in recvfrom), so closing would wait for its timeout, and the pending call would hold a
 * thread of the blocking pool for good. A non-blocking read is one system call per poll and costs
 * nothing when no address changed.
 *
 * @module
 */

import {
  closeFd,
  ENOBUFS,
  netlinkSocket,
  receiveQueued,
  setSocketOption,
  SO_RCVBUF,
  SOL_SOCKET,
  SyscallError,
  withNetns,
} from "./ffi.ts";
import { RT_SCOPE_UNIVERSE, RTM_DELADDR, RTM_NEWADDR } from "./consts.ts";
import type { Handle } from "./handle.ts";
import { parseMessages } from "./wire.ts";

/** RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR: the legacy group bits of both address groups. */
const ADDRESS_GROUPS = 0x10 | 0x100;
/** A burst of this much (pods' link-local addresses come and go too) fits before ENOBUFS. */
const QUEUE_BYTES = 256 * 1024;

/** A subscription to the address changes of a handle's namespace. */
export class AddressEvents {
  #fd: number;
  readonly #buf = new Uint8Array(64 * 1024);

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** Subscribes to the address changes of `handle`'s namespace (from now on). */
  static open(handle: Handle): AddressEvents {
    const fd = withNetns(handle.netnsFd, () => netlinkSocket(ADDRESS_GROUPS));
    try {
      setSocketOption(fd, SOL_SOCKET, SO_RCVBUF, QUEUE_BYTES);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
    return new AddressEvents(fd);
  }

  /**
   * Reads every queued notification; true when one added or removed a global-scope address
   * (link-local ones, such as each pod veth's, do not count), or when notifications were lost
   * (the queue overflowed: anything may have changed).
   */
  globalAddressChanged(): boolean {
    if (this.#fd < 0) return false;
    let changed = false;
    for (;;) {
      let n: number | null;
      try {
        n = receiveQueued(this.#fd, this.#buf);
      } catch (e) {
        if (e instanceof SyscallError && e.errno === ENOBUFS) {
          changed = true;
          continue;
        }
        throw e;
      }
      if (n === null) return changed;
      // A datagram larger than the buffer lost its tail: count it as a change.
      if (n > this.#buf.length) {
        changed = true;
        continue;
      }
      for (const m of parseMessages(this.#buf.subarray(0, n))) {
        if (m.type !== RTM_NEWADDR && m.type !== RTM_DELADDR) continue;
        // ifaddrmsg: family, prefixlen, flags, scope, index.
        if (m.body.length < 4 || m.body[3] === RT_SCOPE_UNIVERSE) changed = true;
      }
    }
  }

  /** Ends the subscription. */
  close(): void {
    if (this.#fd < 0) return;
    closeFd(this.#fd);
    this.#fd = -1;
  }
}
