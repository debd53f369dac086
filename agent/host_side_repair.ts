/**
 * Self-repair of a pod's host side while the agent runs (BRIEF §2: "everything idempotent and
 * self-repairing"). A host veth set down and up again (an operator, a script, anything) comes
 * back without the pod's /128 and /32 host routes, its anycast paths and fe80::1: the kernel
 * flushes a device's routes and IPv6 addresses on its way down and restores none on the way up.
 * The pod would stay unreachable, its record committed and both ends up, until a restart.
 *
 * What triggers a repair, all read by one poll every {@link LINK_POLL_MS}:
 * - a flock veth set up (link notifications, netlink/link_events.ts): its pod's host side is
 *   restored (Datapath.restoreHostSide, the requests of setup's own host side) and its anycast
 *   routes synced. The ups the agent made itself (every ADD's new veth) are told apart by
 *   tokens (own_link_ups.ts, fed by the datapath's `onHostVethUp`) and cost nothing; not the
 *   up of a veth it found down (a repeated ADD after an operator's down): that setup restored
 *   the pod's routes, not those of the addresses withheld through the veth;
 * - a pod's host route deleted (route notifications of flock's protocol, netlink/route_events.ts;
 *   a route deleted by hand, or IPv6's on a veth's way down): the record holding that address;
 * - notifications lost (a queue overflow): one dump of flock's routes per family, and the
 *   committed pods lacking a host route ({@link podsLackingHostRoutes}). Never on a timer.
 *
 * Every repair runs in its container's turn (RpcServer.forContainer), as that container's
 * requests do: never during its ADD, DEL or a GC, and a record being released (or gone, or not
 * committed) is left alone, so the agent's own deletions queue no repair that does anything.
 * A veth left down is not touched (a route needs its device up, and an operator's down is not
 * undone); it is repaired when it comes up. A repair that fails (a busy kernel) is tried again
 * at later polls, the wait doubling up to 30 s (poll_retries.ts); one that finds no
 * configuration in force (a configure running) is queued again once one serves.
 *
 * The down also flushed the routes of the addresses withheld through that veth (withheld.ts):
 * the pod may use them as before, so the repair routes them again, and until it has, the sweep
 * that gives back unrouted withheld addresses leaves them alone ({@link
 * HostSideRepair.unsettledVeths}), also while the repair keeps failing: given back, one could go
 * to a new pod while the old one has it.
 *
 * @module
 */

import { AF_INET, AF_INET6, formatIP, type Handle, listRoutes, parseIP } from "../netlink/mod.ts";
import { LinkEvents, type LinkEventsRead } from "../netlink/link_events.ts";
import { RouteEvents, type RouteEventsRead } from "../netlink/route_events.ts";
import { OwnLinkUps } from "./own_link_ups.ts";
import { PollRetries } from "./poll_retries.ts";
import { FailureStreak } from "./failure_streak.ts";
import { rerouteWithheld } from "./withheld.ts";
import {
  type Datapath,
  FLOCK_ROUTE_PROTOCOL,
  isFlockIfaceName,
  type PodNetwork,
} from "./datapath.ts";
import type { AnycastRoutes } from "./anycast.ts";
import type { Attachment, Store } from "./store.ts";
import { attachmentKey } from "./attachment_key.ts";
import type { LogFn } from "./logger.ts";

/**
 * How often the link and route notifications are read: a flapped veth or a deleted host route
 * is repaired within about this.
 */
export const LINK_POLL_MS = 500;

/** What a repair works with: the configuration in force. */
export interface RepairTarget {
  store: Store;
  datapath: Datapath;
  anycast?: AnycastRoutes;
  /** Whether the record's DEL answered and its veth is still being deleted. */
  isRemoving: (rec: Attachment) => boolean;
}

/** Options of {@link HostSideRepair}. */
export interface HostSideRepairOptions {
  /** The configuration in force; undefined while none serves pods (before the first configure). */
  target: () => RepairTarget | undefined;
  /** Runs `fn` in the turn of the container `containerId` (RpcServer.forContainer). */
  inTurn: (containerId: string, fn: () => Promise<void>) => Promise<void>;
  log: LogFn;
  /** Called once per repair that restored something (a metric). */
  onRepaired?: () => void;
}

/** The committed records of `store` one of whose host routes the node lacks: one dump per family. */
export function podsLackingHostRoutes(store: Store, node: Handle): Attachment[] {
  const committed = store.listByState("committed");
  if (committed.length === 0) return [];
  const routed = new Set<string>();
  for (const family of [AF_INET6, AF_INET] as const) {
    if (!committed.some((rec) => family === AF_INET6 ? rec.ipv6 : rec.ipv4)) continue;
    for (const r of listRoutes(node, { family, protocol: FLOCK_ROUTE_PROTOCOL })) {
      // A pod's host route: the full prefix through one device (anycast ECMP routes have none).
      if (r.oif !== undefined && r.dst.len === (family === AF_INET6 ? 128 : 32)) {
        routed.add(formatIP(r.dst.ip));
      }
    }
  }
  // The store keeps addresses as canonical text (formatIP's), so they are compared as they are.
  return committed.filter((rec) =>
    (rec.ipv6 !== undefined && !routed.has(rec.ipv6)) ||
    (rec.ipv4 !== undefined && !routed.has(rec.ipv4))
  );
}

/**
 * A committed record as the datapath describes its pod. No MTU: a down and up changes none, and
 * the MTU in force may not be the pod's (running pods keep theirs across an MTU reconfigure), so
 * setting it on the host end alone would leave the veth's two ends different.
 */
function podNetworkOf(rec: Attachment): PodNetwork {
  return {
    containerId: rec.containerId,
    hostIface: rec.hostIface,
    netns: rec.netns,
    ifname: rec.ifname,
    ipv6: rec.ipv6 === undefined ? undefined : parseIP(rec.ipv6),
    ipv4: rec.ipv4 === undefined ? undefined : parseIP(rec.ipv4),
    anycast: rec.anycast.map((a) => parseIP(a)),
  };
}

/** An attachment by its key fields. */
type AttachmentRef = Pick<Attachment, "containerId" | "ifname">;

/** Watches the node's flock veths come up and its host routes go, and restores pods' host sides. */
export class HostSideRepair {
  #links?: LinkEvents;
  #routes?: RouteEvents;
  #timer?: ReturnType<typeof setInterval>;
  /** A poll right after one that left notifications queued (its read bound reached). */
  #followUp?: ReturnType<typeof setTimeout>;
  /** The ups the agent made itself, whose notifications need no repair check. */
  readonly #ownUps = new OwnLinkUps();
  /** Notifications were lost and the look at the routes has not been made yet. */
  #lookAgain = false;
  /** Attachments whose repair is queued or running: a second ask while one is queued is moot. */
  readonly #queued = new Set<string>();
  readonly #running = new Set<Promise<void>>();
  /**
   * Attachments whose last repair failed, tried again at later polls with a capped backoff (a
   * busy kernel passes; a record no request can serve, such as a corrupt host veth name, stays
   * so, and the start-up reconcile reports it): logged once, not at every try. Also those whose
   * repair found no configuration to work with (a configure running): again after it.
   */
  readonly #retries = new PollRetries<AttachmentRef>();
  /**
   * Veths no record holds whose withheld routes could not be put back: tried again at later
   * polls, and unsettled until a try succeeds (or finds the veth or its withheld entries gone).
   */
  readonly #rerouteRetries = new PollRetries<string>();
  /**
   * The flock veths someone else set up and the host routes deleted that a poll read but could
   * not look up in the store: looked at again by the next poll.
   */
  #carried?: { ups: Set<string>; deleted: Set<string> };
  /** The store reads of the polls: a failing store is logged once, not every 500 ms. */
  readonly #storeReads: FailureStreak;
  /**
   * Pods whose host veth came up (someone else's up) or lacked a host route, by attachment, until
   * their repair ran: the routes of addresses withheld through that veth may be missing only for
   * that while. Kept when the repair fails (never given back on a failure), pruned once the
   * record is no longer committed.
   */
  readonly #unsettled = new Map<string, AttachmentRef & { hostIface: string }>();
  /** While {@link unsettledVeths} polls: the veths that poll found, repaired in it or not. */
  #seen?: Set<string>;
  #closed = false;

  constructor(readonly options: HostSideRepairOptions) {
    this.#storeReads = new FailureStreak(
      "host side repair's store reads",
      options.log,
      "looking again at the next poll",
    );
  }

  /**
   * Subscribes to the link and route changes of the node `node` (once) and polls them every
   * `pollMs`; `queues.queueBytes` sizes both receive queues (tests: a small one overflows).
   * Opened before the first reconcile takes its dumps, so that no veth set up and no
   * route deleted after them goes unseen; notifications queue until a configuration serves.
   */
  start(node: Handle, pollMs = LINK_POLL_MS, queues: { queueBytes?: number } = {}): void {
    if (this.#links || this.#closed) return;
    this.#links = LinkEvents.open(node, queues);
    try {
      this.#routes = RouteEvents.open(node, FLOCK_ROUTE_PROTOCOL, queues);
    } catch (e) {
      this.#links.close();
      this.#links = undefined;
      throw e;
    }
    this.#timer = setInterval(() => this.poll(), pollMs);
    Deno.unrefTimer(this.#timer);
  }

  /**
   * Notes that the agent itself set the host veth `index` up (Datapath's `onHostVethUp`): the
   * notification of that up queues no repair check. Nothing is noted before {@link start} (no
   * notification would come to consume it).
   */
  noteOwnUp(index: number): void {
    if (this.#links && !this.#closed) this.#ownUps.add(index);
  }

  /**
   * Reads the link and route notifications and queues the repair of every committed pod whose
   * veth someone else set up or whose host route went; when notifications were lost, of every
   * committed pod lacking a host route. Nothing is read while no configuration serves (the
   * queued notifications wait). Returns whether every queued notification was read.
   */
  poll(): boolean {
    const target = this.options.target();
    if (!target || !this.#links || !this.#routes || this.#closed) return false;
    let links: LinkEventsRead | undefined;
    let routes: RouteEventsRead | undefined;
    try {
      links = this.#links.read();
      routes = this.#routes.read();
    } catch (e) {
      // What was read is as good as lost (the tokens of its own ups too).
      this.options.log({
        level: "error",
        msg: "reading link or route notifications failed",
        error: String(e),
      });
    }
    const lost = !links || !routes || links.lost || routes.lost;
    // Lost link notifications may have held own ups: a token left would hide a later flap.
    if (!links || links.lost) this.#ownUps.clear();
    // Every up's token is consumed, whatever the store says below.
    const notified = this.#carried ?? { ups: new Set(), deleted: new Set() };
    for (const link of links?.up ?? []) {
      if (this.#ownUps.consume(link.index, link.times) === 0 || !isFlockIfaceName(link.name)) {
        continue;
      }
      notified.ups.add(link.name);
    }
    // Tokens of ups whose notifications were read and not consumed stood for no notification.
    if (links && !links.incomplete) this.#ownUps.polled();
    for (const address of routes?.deleted ?? []) notified.deleted.add(address);
    this.#carried = undefined;
    try {
      this.#queueNotified(target, notified.ups, notified.deleted);
    } catch (e) {
      // A store read failed (a full disk, a locked database): what the notifications ask for is
      // looked at again at the next poll, every veth unsettled until then. Thrown on, it would
      // end the agent from this timer.
      this.#carried = notified;
      this.#storeReads.failed(e, { level: "error" });
    }
    try {
      this.#pruneGone(target.store);
      if (!this.#carried) this.#storeReads.succeeded();
    } catch (e) {
      this.#storeReads.failed(e, { level: "error" });
    }
    this.#retryDue(target);
    if (lost) {
      this.options.log({ msg: "link or route notifications lost: looking at the host routes" });
      this.#lookAgain = true;
    }
    if (this.#lookAgain) this.#lookAgain = !this.sweep();
    // More queued than one read takes: read on at once, after what else the event loop holds.
    const more = links?.incomplete || routes?.bounded;
    if (more) this.#pollSoon();
    return !lost && !more && !this.#carried;
  }

  /**
   * The host veths through which a missing route does not mean its address went (for the sweep
   * giving back withheld addresses, withheld.ts): every queued notification is read first (a
   * poll), so a veth that went down and up before the caller looked at the routes is known, then
   * the veths whose pod's repair has not run yet. All of them while that is not known (no
   * configuration serves, notifications were lost and not looked into, more are queued, the
   * store could not be read).
   */
  unsettledVeths(): (hostIface: string) => boolean {
    // A repair may run within the poll (a free turn runs at once): the veths it found count too,
    // since the caller's look at the routes came before that repair.
    const seen = this.#seen = new Set();
    let readAll: boolean;
    try {
      readAll = this.poll();
    } finally {
      this.#seen = undefined;
    }
    if (!readAll || this.#lookAgain) return () => true;
    for (const u of this.#unsettled.values()) seen.add(u.hostIface);
    for (const [hostIface] of this.#rerouteRetries.entries()) seen.add(hostIface);
    return (hostIface) => seen.has(hostIface);
  }

  /**
   * Queues the repairs the notifications ask for: of the pod of every flock veth someone else
   * set up (`ups`), or whose host route went (`deleted`). Reads the store.
   */
  #queueNotified(
    target: RepairTarget,
    ups: Iterable<string>,
    deleted: Iterable<string>,
  ): void {
    // A flap tells twice (IPv6 notifies the routes the down dropped, then the up): one repair.
    const due = new Map<string, AttachmentRef>();
    const add = (holder?: AttachmentRef) => {
      if (holder) due.set(attachmentKey(holder), holder);
    };
    for (const name of ups) {
      const holder = target.store.hostIfaceHolder(name);
      if (holder) {
        add(holder);
        this.#markUnsettled(holder, name);
      } else this.#rerouteWithheldNow(target, name);
    }
    for (const address of deleted) add(target.store.addressHolder(address));
    for (const holder of due.values()) this.#queue(holder);
  }

  /**
   * Queues the repairs due again (failed, or found no configuration), and tries again the
   * withheld routes of record-less veths due again. Made after the prune: no moot retry.
   */
  #retryDue(target: RepairTarget): void {
    for (const ref of this.#retries.due()) this.#queue(ref);
    for (const hostIface of this.#rerouteRetries.due()) this.#rerouteWithheldNow(target, hostIface);
  }

  /** Notes that the pod `ref`'s veth `hostIface` may lack routes until its repair has run. */
  #markUnsettled(ref: AttachmentRef, hostIface: string): void {
    const { containerId, ifname } = ref;
    this.#unsettled.set(attachmentKey(ref), { containerId, ifname, hostIface });
    this.#seen?.add(hostIface);
  }

  /**
   * Forgets the retries and unsettled veths of records no longer committed (deleted, being
   * released): no repair of theirs comes any more to clear them. A read of the few entries.
   */
  #pruneGone(store: Store): void {
    const gone = (key: string, ref: AttachmentRef) =>
      !this.#queued.has(key) && store.get(ref.containerId, ref.ifname)?.state !== "committed";
    for (const [key, ref] of this.#retries.entries()) {
      if (gone(key, ref)) this.#retries.delete(key);
    }
    for (const [key, ref] of this.#unsettled) if (gone(key, ref)) this.#unsettled.delete(key);
  }

  /**
   * A flock veth that came up without a record holding it: the routes of the addresses withheld
   * through it are put back at once (no pod's turn to wait for). A failure is tried again at
   * later polls, the veth unsettled until then (never given back on a failure).
   */
  #rerouteWithheldNow(target: RepairTarget, hostIface: string): void {
    this.#seen?.add(hostIface);
    try {
      const rerouted = rerouteWithheld(target.store, target.datapath.node, hostIface);
      this.#rerouteRetries.delete(hostIface);
      if (rerouted.length) {
        this.options.log({ msg: "withheld routes restored", hostIface, restored: rerouted });
      }
    } catch (e) {
      const failures = this.#rerouteRetries.failed(hostIface, hostIface);
      this.options.log({
        level: failures === 1 ? "error" : "debug",
        msg: "restoring withheld routes failed",
        hostIface,
        error: String(e),
      });
    }
  }

  #pollSoon(): void {
    if (this.#followUp !== undefined || this.#closed) return;
    this.#followUp = setTimeout(() => {
      this.#followUp = undefined;
      this.poll();
    }, 0);
    Deno.unrefTimer(this.#followUp);
  }

  /**
   * The look for lost notifications: one dump of flock's routes per family, and the repair of
   * every committed pod lacking a host route. A pod whose veth is down costs a link look-up in
   * its turn and is left as it is. Returns whether the look was made (a failed one is made
   * again at the next poll).
   */
  sweep(): boolean {
    const target = this.options.target();
    if (!target) return false;
    try {
      for (const rec of podsLackingHostRoutes(target.store, target.datapath.node)) {
        // Its veth may have gone down and up unseen: withheld routes through it wait its repair.
        this.#markUnsettled(rec, rec.hostIface);
        this.#queue(rec);
      }
      return true;
    } catch (e) {
      // A busy kernel interrupts the dump: the next poll looks again.
      this.options.log({
        level: "warn",
        msg: "looking for missing host routes failed",
        error: String(e),
      });
      return false;
    }
  }

  /** Queues the repair of the attachment `key` in its container's turn, unless one is queued. */
  #queue(key: AttachmentRef): void {
    const queued = attachmentKey(key);
    if (this.#queued.has(queued) || this.#closed) return;
    this.#queued.add(queued);
    const ref = { containerId: key.containerId, ifname: key.ifname };
    const run = this.options.inTurn(key.containerId, () => {
      this.#queued.delete(queued);
      let done: boolean;
      try {
        done = this.#repair(key);
      } catch (e) {
        // A rejection, also where the turn runs at once: one record's failure is its own.
        return Promise.reject(e);
      }
      if (done) {
        this.#retries.delete(queued);
        this.#unsettled.delete(queued);
      } else {
        // No configuration to repair with (a configure runs): again at a later poll, after it;
        // its veth stays unsettled meanwhile.
        this.#retries.defer(queued, ref);
      }
      return Promise.resolve();
    }).catch((e) => {
      this.#queued.delete(queued);
      // Tried again at later polls; its veth stays unsettled until a try succeeds.
      const failures = this.#retries.failed(queued, ref);
      this.options.log({
        level: failures === 1 ? "error" : "debug",
        msg: "restoring a pod's host side failed",
        containerId: key.containerId,
        ifname: key.ifname,
        error: String(e),
      });
    }).finally(() => this.#running.delete(run));
    this.#running.add(run);
  }

  /**
   * In the container's turn: the record as it is now, repaired if still committed. Returns
   * whether the repair is done (false: no configuration serves to repair with, for now).
   */
  #repair(key: AttachmentRef): boolean {
    if (this.#closed) return true;
    const target = this.options.target();
    if (!target) return false;
    const rec = target.store.get(key.containerId, key.ifname);
    if (rec?.state !== "committed" || target.isRemoving(rec)) return true;
    // Undefined: not this repair's (veth down, gone or another pod's); empty: nothing lost,
    // anycast included, whose paths the kernel flushes with the same down.
    const ownSide = target.datapath.restoreHostSide(podNetworkOf(rec)) ?? [];
    const restored = [...ownSide];
    // The down flushed the routes of the addresses withheld through this veth as well; looked at
    // also when the pod's own routes are whole (an own up restored those, not these). No kernel
    // request when nothing is withheld through it, none routed when the veth is down.
    for (const ip of rerouteWithheld(target.store, target.datapath.node, rec.hostIface)) {
      restored.push(`withheld route ${ip}`);
    }
    if (ownSide.length && rec.anycast.length && target.anycast) {
      const synced = target.anycast.sync(rec.anycast);
      restored.push(...synced.changed.map((a) => `anycast ${a}`));
    }
    if (!restored.length) return true;
    this.options.onRepaired?.();
    this.options.log({
      msg: "host side restored",
      containerId: rec.containerId,
      ifname: rec.ifname,
      pod: rec.podName ? `${rec.podNamespace ?? ""}/${rec.podName}` : undefined,
      hostIface: rec.hostIface,
      restored,
    });
    return true;
  }

  /** Stops watching; resolves once the repairs under way are done. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#followUp);
    this.#links?.close();
    this.#routes?.close();
    this.#ownUps.clear();
    await Promise.all(this.#running);
  }

  /** How many attachments' last repair failed (kept until one succeeds or the record goes). */
  get failing(): number {
    return this.#retries.failing;
  }
}
