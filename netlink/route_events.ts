/**
 * Route deletion notifications of one network namespace (RTNLGRP_IPV4_ROUTE and
 * RTNLGRP_IPV6_ROUTE), read without waiting: the caller polls them on a timer (see
 * notifications.ts for why polled). What is reported is the host routes of one protocol that
 * were deleted: a unicast /128 or /32 through one device, as a pod's host route is.
 *
 * A node's other route changes (BIRD's routes, the kernel's local and multicast routes, every
 * route a veth brings) arrive on the same groups: each is judged by its 12-byte rtmsg header
 * alone (type, protocol, prefix length), so they cost a receive and no attribute parsing.
 *
 * Not every deletion is notified: IPv4 drops a device's routes silently when the device goes
 * down (IPv6 notifies each). A caller that must see those watches the links too.
 *
 * @module
 */

import { RTA_DST, RTA_MULTIPATH, RTA_OIF, RTM_DELROUTE, RTN_UNICAST } from "./consts.ts";
import type { Handle } from "./handle.ts";
import { AF_INET, AF_INET6, formatIP } from "./ip.ts";
import { type NotificationOptions, NotificationSocket } from "./notifications.ts";
import { parseAttributes } from "./wire.ts";

/** RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE: the legacy group bits of the route groups. */
const ROUTE_GROUPS = 0x40 | 0x400;
/**
 * A route notification is small but takes about 1 KiB of the queue (the socket buffer's
 * overhead; the kernel doubles the size asked for): 2 MiB overflowed at fewer than 2,000 in
 * bench/host_side_repair_bench.ts. This much holds several thousand (a burst of pod starts and
 * deletions, BIRD installing a table) before ENOBUFS; memory is taken only while queued.
 */
const QUEUE_BYTES = 4 * 1024 * 1024;
/** sizeof(struct rtmsg): family, dst_len, src_len, tos, table, protocol, scope, type, flags. */
const RTMSG_LEN = 12;
/** RTM_F_CLONED: a cached clone (an IPv6 exception), never a route someone installed. */
const RTM_F_CLONED = 0x200;

/** What one {@link RouteEvents.read} found. */
export interface RouteEventsRead {
  /**
   * The destinations (canonical address text, formatIP's) of the host routes deleted since the
   * last read, each once, in the order first deleted.
   */
  deleted: string[];
  /** Notifications were lost (the queue overflowed): routes may have gone unseen. */
  lost: boolean;
  /** The read bound was reached: more is queued, for the next read. */
  bounded: boolean;
}

/** A subscription to the host route deletions of one protocol in a handle's namespace. */
export class RouteEvents {
  readonly #socket: NotificationSocket;
  readonly #protocol: number;

  private constructor(socket: NotificationSocket, protocol: number) {
    this.#socket = socket;
    this.#protocol = protocol;
  }

  /** Subscribes to the route changes of `handle`'s namespace (from now on), of `protocol`. */
  static open(handle: Handle, protocol: number, options: NotificationOptions = {}): RouteEvents {
    return new RouteEvents(
      NotificationSocket.open(handle, ROUTE_GROUPS, QUEUE_BYTES, options),
      protocol,
    );
  }

  /**
   * Reads the queued notifications: the deleted unicast host routes (/128, /32) of the
   * protocol through one device. A route deleted and added again within one read is reported
   * too: the caller reads the kernel's state before acting.
   */
  read(): RouteEventsRead {
    const deleted = new Set<string>();
    const { lost, bounded } = this.#socket.drain((m) => {
      if (m.type !== RTM_DELROUTE || m.body.length < RTMSG_LEN) return;
      const body = m.body;
      const family = body[0];
      if (family !== AF_INET6 && family !== AF_INET) return;
      const hostLen = family === AF_INET6 ? 128 : 32;
      if (body[1] !== hostLen || body[5] !== this.#protocol || body[7] !== RTN_UNICAST) return;
      if (new DataView(body.buffer, body.byteOffset + 8, 4).getUint32(0, true) & RTM_F_CLONED) {
        return;
      }
      // Only now the attributes: a pod's host route has its device and no next hop list.
      const attrs = parseAttributes(body.subarray(RTMSG_LEN));
      const dst = attrs.get(RTA_DST);
      if (!dst || dst.length !== hostLen / 8 || !attrs.has(RTA_OIF)) return;
      if (attrs.has(RTA_MULTIPATH)) return;
      deleted.add(formatIP({ family, bytes: dst.slice() }));
    });
    return { deleted: [...deleted], lost, bounded };
  }

  /** Ends the subscription. */
  close(): void {
    this.#socket.close();
  }
}
