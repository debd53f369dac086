/**
 * Self-repair of a pod's host side while the agent runs (BRIEF §2: "everything idempotent and
 * self-repairing"). A host veth set down and up again (an operator, a script, anything) comes
 * back without the pod's /128 and /32 host routes, its anycast paths and fe80::1: the kernel
 * flushes a device's routes and IPv6 addresses on its way down and restores none on the way up.
 * The pod would stay unreachable, its record committed and both ends up, until a restart.
 *
 * - Prompt: link notifications (netlink/link_events.ts), polled every {@link LINK_POLL_MS}; a
 *   flock veth set up has its pod's host side restored (Datapath.restoreHostSide, the requests
 *   of setup's own host side) and its anycast routes synced.
 * - Safety net: the agent's sweep, and a poll whose notifications were lost (queue overflow),
 *   look at one dump of flock's routes per family and repair the committed pods lacking one.
 *
 * Every repair runs in its container's turn (RpcServer.forContainer), as that container's
 * requests do: never during its ADD, DEL or a GC, and a record being released is left alone.
 * A veth left down is not touched (a route needs its device up, and an operator's down is not
 * undone); it is repaired when it comes up.
 *
 * @module
 */

import { AF_INET, AF_INET6, formatIP, type Handle, listRoutes, parseIP } from "../netlink/mod.ts";
import { LinkEvents } from "../netlink/link_events.ts";
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

/** How often the link notifications are read: a flapped veth is repaired within about this. */
export const LINK_POLL_MS = 500;

/** What a repair works with: the configuration in force. */
export interface RepairTarget {
  store: Store;
  datapath: Datapath;
  anycast?: AnycastRoutes;
  /** The node's pod MTU, as ADD gives it. */
  mtu?: number;
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

/** A committed record as the datapath describes its pod. */
function podNetworkOf(rec: Attachment, mtu: number | undefined): PodNetwork {
  return {
    containerId: rec.containerId,
    hostIface: rec.hostIface,
    netns: rec.netns,
    ifname: rec.ifname,
    ipv6: rec.ipv6 === undefined ? undefined : parseIP(rec.ipv6),
    ipv4: rec.ipv4 === undefined ? undefined : parseIP(rec.ipv4),
    anycast: rec.anycast.map((a) => parseIP(a)),
    mtu,
  };
}

/** Watches the node's flock veths come up and restores their pods' host sides. */
export class HostSideRepair {
  #events?: LinkEvents;
  #timer?: ReturnType<typeof setInterval>;
  /** Attachments whose repair is queued or running: a second ask while one is queued is moot. */
  readonly #queued = new Set<string>();
  readonly #running = new Set<Promise<void>>();
  /**
   * Attachments whose last repair failed: logged once, not at every sweep (a record no request
   * can serve, such as a corrupt host veth name, stays so; the start-up reconcile reports it).
   */
  readonly #failing = new Set<string>();
  #closed = false;

  constructor(readonly options: HostSideRepairOptions) {}

  /**
   * Subscribes to the link changes of the node `node` (once) and polls them every `pollMs`.
   * Opened before the first reconcile takes its dumps, so that no veth set up after them goes
   * unseen; notifications queue until a configuration serves.
   */
  start(node: Handle, pollMs = LINK_POLL_MS): void {
    if (this.#events || this.#closed) return;
    this.#events = LinkEvents.open(node);
    this.#timer = setInterval(() => this.poll(), pollMs);
    Deno.unrefTimer(this.#timer);
  }

  /**
   * Reads the link notifications and queues the repair of every committed pod whose veth came
   * up; when notifications were lost, of every committed pod lacking a host route. Nothing is
   * read while no configuration serves (the queued notifications wait).
   */
  poll(): void {
    const target = this.options.target();
    if (!target || !this.#events) return;
    try {
      const read = this.#events.read();
      if (read.incomplete) return this.sweep();
      for (const link of read.up) {
        if (!isFlockIfaceName(link.name)) continue;
        const holder = target.store.hostIfaceHolder(link.name);
        if (holder) this.#queue(holder);
      }
    } catch (e) {
      this.options.log({
        level: "error",
        msg: "reading link notifications failed",
        error: String(e),
      });
    }
  }

  /**
   * The safety net (the agent's sweep): one dump of flock's routes per family, and the repair of
   * every committed pod lacking a host route. A pod whose veth is down costs a link look-up in
   * its turn and is left as it is.
   */
  sweep(): void {
    const target = this.options.target();
    if (!target) return;
    try {
      for (const rec of podsLackingHostRoutes(target.store, target.datapath.node)) this.#queue(rec);
    } catch (e) {
      // A busy kernel interrupts the dump: the next sweep looks again.
      this.options.log({
        level: "warn",
        msg: "looking for missing host routes failed",
        error: String(e),
      });
    }
  }

  /** Queues the repair of the attachment `key` in its container's turn, unless one is queued. */
  #queue(key: Pick<Attachment, "containerId" | "ifname">): void {
    const queued = attachmentKey(key);
    if (this.#queued.has(queued) || this.#closed) return;
    this.#queued.add(queued);
    const run = this.options.inTurn(key.containerId, () => {
      this.#queued.delete(queued);
      try {
        this.#repair(key);
      } catch (e) {
        // A rejection, also where the turn runs at once: one record's failure is its own.
        return Promise.reject(e);
      }
      this.#failing.delete(queued);
      return Promise.resolve();
    }).catch((e) => {
      this.#queued.delete(queued);
      const again = this.#failing.has(queued);
      this.#failing.add(queued);
      this.options.log({
        level: again ? "debug" : "error",
        msg: "restoring a pod's host side failed",
        containerId: key.containerId,
        ifname: key.ifname,
        error: String(e),
      });
    }).finally(() => this.#running.delete(run));
    this.#running.add(run);
  }

  /** In the container's turn: the record as it is now, repaired if still committed. */
  #repair(key: Pick<Attachment, "containerId" | "ifname">): void {
    const target = this.options.target();
    const rec = target?.store.get(key.containerId, key.ifname);
    if (!target || this.#closed || rec?.state !== "committed" || target.isRemoving(rec)) return;
    const restored = target.datapath.restoreHostSide(podNetworkOf(rec, target.mtu));
    // Not this repair's (veth down, gone or another pod's), or nothing lost: anycast included,
    // whose paths the kernel flushes with the same down.
    if (!restored?.length) return;
    if (rec.anycast.length && target.anycast) {
      const synced = target.anycast.sync(rec.anycast);
      restored.push(...synced.changed.map((a) => `anycast ${a}`));
    }
    this.options.onRepaired?.();
    this.options.log({
      msg: "host side restored",
      containerId: rec.containerId,
      ifname: rec.ifname,
      pod: rec.podName ? `${rec.podNamespace ?? ""}/${rec.podName}` : undefined,
      hostIface: rec.hostIface,
      restored,
    });
  }

  /** Stops watching; resolves once the repairs under way are done. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    this.#events?.close();
    await Promise.all(this.#running);
  }
}
