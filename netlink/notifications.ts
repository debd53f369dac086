/**
 * A netlink socket subscribed to rtnetlink multicast groups, read without waiting: the caller
 * polls it on a timer (addr_events.ts, link_events.ts).
 *
 * Why polled and not read by a blocking receive on a worker thread: such a receive cannot be
 * interrupted (netlink sockets do not implement shutdown(2), and close(2) does not wake a thread
 * blocked in recvfrom), so closing would wait for its timeout, and the pending call would hold a
 * thread of the blocking pool for good. A non-blocking read is one system call per poll and costs
 * nothing when nothing changed.
 *
 * @module
 */

import {
  closeFd,
  ENOBUFS,
  EPERM,
  netlinkSocket,
  receiveQueued,
  setSocketOption,
  SO_RCVBUF,
  SOL_SOCKET,
  SyscallError,
  withNetns,
} from "./ffi.ts";
import type { Handle } from "./handle.ts";
import { type NetlinkMessage, parseMessages } from "./wire.ts";

/**
 * Default bound on the datagrams one {@link NotificationSocket.drain} reads: under constant
 * churn an unbounded drain could hold the event loop; the rest waits for the next poll.
 */
export const MAX_READS_PER_POLL = 256;

/**
 * SO_RCVBUFFORCE: a receive queue beyond net.core.rmem_max (212992 bytes by default, which would
 * cap the queue the caller asks for); allowed with CAP_NET_ADMIN, as the agent has.
 */
const SO_RCVBUFFORCE = 33;

/** Options of a notification reader's `open` (addr_events.ts, link_events.ts, route_events.ts). */
export interface NotificationOptions {
  /** Datagrams read at most per poll (default {@link MAX_READS_PER_POLL}). */
  maxReadsPerPoll?: number;
  /** The receive queue's size (default: the reader's; tests make it overflow with a small one). */
  queueBytes?: number;
}

/** What one {@link NotificationSocket.drain} could not see. */
export interface DrainOutcome {
  /**
   * Notifications were lost (the queue overflowed: ENOBUFS, or a datagram larger than the
   * buffer lost its tail): anything may have changed.
   */
  lost: boolean;
  /** The read bound was reached: more is queued, for the next poll. */
  bounded: boolean;
}

/** A non-blocking subscription to rtnetlink groups of one namespace. */
export class NotificationSocket {
  #fd: number;
  readonly #buf = new Uint8Array(64 * 1024);
  readonly #maxReads: number;

  private constructor(fd: number, maxReads: number) {
    this.#fd = fd;
    this.#maxReads = maxReads;
  }

  /**
   * Subscribes to the legacy group bits `groups` (RTMGRP_*) of `handle`'s namespace, from now
   * on, with a receive queue of `options.queueBytes` (default `defaultQueueBytes`).
   */
  static open(
    handle: Handle,
    groups: number,
    defaultQueueBytes: number,
    options: NotificationOptions = {},
  ): NotificationSocket {
    const { maxReadsPerPoll = MAX_READS_PER_POLL, queueBytes = defaultQueueBytes } = options;
    if (!Number.isInteger(maxReadsPerPoll) || maxReadsPerPoll < 1) {
      throw new RangeError(`maxReadsPerPoll must be a positive integer, not ${maxReadsPerPoll}`);
    }
    const fd = withNetns(handle.netnsFd, () => netlinkSocket(groups));
    try {
      try {
        setSocketOption(fd, SOL_SOCKET, SO_RCVBUFFORCE, queueBytes);
      } catch (e) {
        // Without CAP_NET_ADMIN: as much as rmem_max allows.
        if (!(e instanceof SyscallError && e.errno === EPERM)) throw e;
        setSocketOption(fd, SOL_SOCKET, SO_RCVBUF, queueBytes);
      }
    } catch (e) {
      closeFd(fd);
      throw e;
    }
    return new NotificationSocket(fd, maxReadsPerPoll);
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /**
   * Hands every queued notification to `onMessage`, reading at most `maxReadsPerPoll` datagrams
   * (the rest are read by the next call). Nothing is read once closed.
   */
  drain(onMessage: (m: NetlinkMessage) => void): DrainOutcome {
    const outcome: DrainOutcome = { lost: false, bounded: false };
    if (this.#fd < 0) return outcome;
    for (let reads = 0;; reads++) {
      if (reads === this.#maxReads) return { ...outcome, bounded: true };
      let n: number | null;
      try {
        n = receiveQueued(this.#fd, this.#buf);
      } catch (e) {
        if (e instanceof SyscallError && e.errno === ENOBUFS) {
          outcome.lost = true;
          continue;
        }
        throw e;
      }
      if (n === null) return outcome;
      if (n > this.#buf.length) {
        outcome.lost = true;
        continue;
      }
      for (const m of parseMessages(this.#buf.subarray(0, n))) onMessage(m);
    }
  }

  /** Ends the subscription. */
  close(): void {
    if (this.#fd < 0) return;
    closeFd(this.#fd);
    this.#fd = -1;
  }
}
