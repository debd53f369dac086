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
/**
 * Default bound on the datagrams one {@link AddressEvents.globalAddressChanged} reads: under
 * constant address churn (every pod veth's link-local comes and goes too) an unbounded drain
 * could hold the event loop; the rest waits for the next poll.
 */
export const MAX_READS_PER_POLL = 256;

/** Options of {@link AddressEvents.open}. */
export interface AddressEventsOptions {
  /** Datagrams read at most per poll (default {@link MAX_READS_PER_POLL}). */
  maxReadsPerPoll?: number;
}

/** A subscription to the address changes of a handle's namespace. */
export class AddressEvents {
  #fd: number;
  readonly #buf = new Uint8Array(64 * 1024);
  readonly #maxReads: number;

  private constructor(fd: number, maxReads: number) {
    this.#fd = fd;
    this.#maxReads = maxReads;
  }

  /** Subscribes to the address changes of `handle`'s namespace (from now on). */
  static open(handle: Handle, options: AddressEventsOptions = {}): AddressEvents {
    const maxReads = options.maxReadsPerPoll ?? MAX_READS_PER_POLL;
    if (!Number.isInteger(maxReads) || maxReads < 1) {
      throw new RangeError(`maxReadsPerPoll must be a positive integer, not ${maxReads}`);
    }
    const fd = withNetns(handle.netnsFd, () => netlinkSocket(ADDRESS_GROUPS));
    try {
      setSocketOption(fd, SOL_SOCKET, SO_RCVBUF, QUEUE_BYTES);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
    return new AddressEvents(fd, maxReads);
  }

  /**
   * Reads the queued notifications, at most `maxReadsPerPoll` datagrams (the rest are read by
   * the next call); true when one added or removed a global-scope address (link-local ones,
   * such as each pod veth's, do not count), when notifications were lost (the queue
   * overflowed: anything may have changed), or when the bound was reached (what is left unread
   * may hold a change; the caller renders once more rather than late).
   */
  globalAddressChanged(): boolean {
    if (this.#fd < 0) return false;
    let changed = false;
    for (let reads = 0;; reads++) {
      if (reads === this.#maxReads) return true;
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
