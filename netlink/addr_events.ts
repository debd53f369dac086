/**
 * Address change notifications of one network namespace (RTNLGRP_IPV4_IFADDR and
 * RTNLGRP_IPV6_IFADDR), read without waiting: the caller polls them on a timer (see
 * notifications.ts for why polled).
 *
 * @module
 */

import { RT_SCOPE_UNIVERSE, RTM_DELADDR, RTM_NEWADDR } from "./consts.ts";
import type { Handle } from "./handle.ts";
import { type NotificationOptions, NotificationSocket } from "./notifications.ts";

/** RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR: the legacy group bits of both address groups. */
const ADDRESS_GROUPS = 0x10 | 0x100;
/** A burst of this much (pods' link-local addresses come and go too) fits before ENOBUFS. */
const QUEUE_BYTES = 256 * 1024;

/** A subscription to the address changes of a handle's namespace. */
export class AddressEvents {
  readonly #socket: NotificationSocket;

  private constructor(socket: NotificationSocket) {
    this.#socket = socket;
  }

  /** Subscribes to the address changes of `handle`'s namespace (from now on). */
  static open(handle: Handle, options: NotificationOptions = {}): AddressEvents {
    return new AddressEvents(
      NotificationSocket.open(handle, ADDRESS_GROUPS, QUEUE_BYTES, options),
    );
  }

  /**
   * Reads the queued notifications, at most `maxReadsPerPoll` datagrams (the rest are read by
   * the next call); true when one added or removed a global-scope address (link-local ones,
   * such as each pod veth's, do not count), when notifications were lost (the queue
   * overflowed: anything may have changed), or when the bound was reached (what is left unread
   * may hold a change; the caller renders once more rather than late).
   */
  globalAddressChanged(): boolean {
    let changed = false;
    const { lost, bounded } = this.#socket.drain((m) => {
      if (m.type !== RTM_NEWADDR && m.type !== RTM_DELADDR) return;
      // ifaddrmsg: family, prefixlen, flags, scope, index.
      if (m.body.length < 4 || m.body[3] === RT_SCOPE_UNIVERSE) changed = true;
    });
    return changed || lost || bounded;
  }

  /** Ends the subscription. */
  close(): void {
    this.#socket.close();
  }
}
