/**
 * Link notifications of one network namespace (RTNLGRP_LINK), read without waiting: the caller
 * polls them on a timer (see notifications.ts for why polled). What is reported is the links
 * that were set up (admin up: IFF_UP turned on), the one change after which the kernel has
 * flushed what a link's way down took (its routes, its IPv6 addresses) and puts none of it back.
 *
 * @module
 */

import { IFF_UP, IFLA_IFNAME, RTM_NEWLINK } from "./consts.ts";
import type { Handle } from "./handle.ts";
import { type NotificationOptions, NotificationSocket } from "./notifications.ts";
import { parseAttributes, readString } from "./wire.ts";

/** RTMGRP_LINK: the legacy group bit of RTNLGRP_LINK. */
const LINK_GROUP = 0x1;
/**
 * A link notification is ~1.5 KiB (every attribute of the link); a node starting hundreds of
 * pods makes several per veth: this much fits a burst of a few hundred before ENOBUFS.
 */
const QUEUE_BYTES = 1024 * 1024;
/** sizeof(struct ifinfomsg): family, pad, type, index, flags, change. */
const IFINFOMSG_LEN = 16;

/** A link that was set up. */
export interface LinkUp {
  index: number;
  name: string;
  /**
   * How many times it was set up since the last read: a caller that knows some of these ups
   * are its own (one notification each, in order) can tell whether another one followed.
   */
  times: number;
}

/** What one {@link LinkEvents.read} found. */
export interface LinkEventsRead {
  /** The links set up since the last read (each once, by index), as their last message names them. */
  up: LinkUp[];
  /**
   * Notifications were lost (the queue overflowed): links may have come up unseen, so the
   * caller looks at the kernel's state itself.
   */
  lost: boolean;
  /**
   * Notifications were lost, or more are queued than one read takes (those come with the next
   * read).
   */
  incomplete: boolean;
}

/** A subscription to the link changes of a handle's namespace. */
export class LinkEvents {
  readonly #socket: NotificationSocket;

  private constructor(socket: NotificationSocket) {
    this.#socket = socket;
  }

  /** Subscribes to the link changes of `handle`'s namespace (from now on). */
  static open(handle: Handle, options: NotificationOptions = {}): LinkEvents {
    return new LinkEvents(
      NotificationSocket.open(handle, LINK_GROUP, QUEUE_BYTES, options),
    );
  }

  /**
   * Reads the queued notifications: the links whose IFF_UP was turned on (the notification's
   * `ifi_change` names the flags that changed, so a link that is up and changes anything else,
   * its carrier, MTU or settings, is not reported). A link set up and down again within one
   * read is reported too (`times` 2): the caller reads the link's state before acting.
   */
  read(): LinkEventsRead {
    const up = new Map<number, LinkUp>();
    const { lost, bounded } = this.#socket.drain((m) => {
      if (m.type !== RTM_NEWLINK || m.body.length < IFINFOMSG_LEN) return;
      const v = new DataView(m.body.buffer, m.body.byteOffset, m.body.byteLength);
      const flags = v.getUint32(8, true);
      const change = v.getUint32(12, true);
      if (!(flags & IFF_UP) || !(change & IFF_UP)) return;
      const index = v.getInt32(4, true);
      const name = readString(parseAttributes(m.body.subarray(IFINFOMSG_LEN)).get(IFLA_IFNAME));
      up.set(index, { index, name: name ?? "", times: (up.get(index)?.times ?? 0) + 1 });
    });
    return { up: [...up.values()], lost, incomplete: lost || bounded };
  }

  /** Ends the subscription. */
  close(): void {
    this.#socket.close();
  }
}
