/**
 * Anycast host routes (BRIEF §4): one flock-tagged route per anycast address, over the host
 * veths of every local pod that holds it, computed from the store's committed records.
 *
 * Route shapes (main table, protocol {@link FLOCK_ROUTE_PROTOCOL}):
 * - one holder: `A/128 dev flockX scope link` (or `A/32 …`), the same shape as a pod's own route;
 * - several IPv4 holders: `A/32 scope link nexthop dev flockX nexthop dev flockY …`;
 * - several IPv6 holders: `A/128 nexthop via <pod X's /128> dev flockX onlink nexthop via …` —
 *   the kernel refuses device-only next hops in an IPv6 multipath route ("Device only routes
 *   can not be added for IPv6 using the multipath API"), so each path names the holder's own
 *   address as its gateway, `onlink` so no other route has to make it reachable first.
 *
 * Next hops are ordered by ifindex, and a route that already has the right paths is left alone,
 * so a restart or a redundant sync never makes the route (and BIRD's announcement) flap.
 *
 * Down holders: the kernel refuses a path through a device that is not up ("Device for nexthop
 * is not up"), flushes a one-path route when its device goes down and keeps a dead path in an
 * ECMP route. A holder whose host veth is down is therefore left out: the route goes over the
 * holders that are up, and an address with none has no route, so BIRD withdraws it from BGP
 * (no pod on this node can serve it). The host side repair's sync when the veth comes up, or the
 * next resync round, puts the path back.
 *
 * Serialisation: {@link AnycastRoutes.sync} reads the holders from the store and programs the
 * kernel in one synchronous step (sqlite and netlink are both synchronous here), so no other
 * request can interleave between the read and the write. Two ADDs of different containers with
 * the same anycast address therefore each leave a route equal to the committed holders at their
 * moment, and the last one to run leaves the final set.
 */

import {
  AF_INET,
  AF_INET6,
  deleteRoute,
  deleteRoutesTo,
  formatIP,
  formatPrefix,
  getLinkByName,
  type Handle,
  hostPrefix,
  type IP,
  isNotFound,
  isTooLarge,
  type Link,
  listLinks,
  listRoutes,
  lookupRoute,
  NetlinkError,
  type NextHop,
  parseIP,
  replaceRoute,
  type Route,
  routeMatches,
  RT_SCOPE_LINK,
  RT_TABLE_MAIN,
} from "../netlink/mod.ts";
import { FLOCK_ROUTE_PROTOCOL } from "./datapath.ts";
import type { AnycastHolder, Attachment, Store } from "./store.ts";
import { FailureStreak } from "./failure_streak.ts";
import { retryWhileKernelBusy } from "./kernel_busy.ts";

/** RTNH_F_ONLINK: the gateway is on the link without any route saying so. */
export const RTNH_F_ONLINK = 4;

/** ENETDOWN: the kernel's answer to a path through a device that is not up. */
const ENETDOWN = 100;

/** What one link request costs in dumped links (bench/anycast_bench.ts: ~45 µs vs ~23 µs). */
const LINK_REQUEST_COST_IN_DUMPED_LINKS = 2;

/** Host veths by name, as one link dump saw them. */
type LinkSnapshot = Map<string, Pick<Link, "index" | "up">>;

/** One local pod's path to an anycast address. */
export interface AnycastPath {
  /** Ifindex of the holder's host veth. */
  oif: number;
  /** The holder's own address of the anycast address's family (the IPv6 ECMP gateway). */
  podIP?: IP;
}

/** Identity of one attachment. */
export interface AttachmentKey {
  containerId: string;
  ifname: string;
}

/**
 * The route flock keeps for `address` with these local paths; undefined when there is none
 * (the route must go). Paths are de-duplicated by ifindex and ordered by it.
 * @throws {Error} for several IPv6 paths when one lacks `podIP`.
 */
export function anycastRoute(address: IP, paths: AnycastPath[]): Route | undefined {
  const byOif = new Map<number, AnycastPath>();
  for (const p of paths) if (!byOif.has(p.oif)) byOif.set(p.oif, p);
  const sorted = [...byOif.values()].sort((a, b) => a.oif - b.oif);
  if (sorted.length === 0) return undefined;
  const dst = hostPrefix(address);
  const protocol = FLOCK_ROUTE_PROTOCOL;
  if (sorted.length === 1) return { dst, oif: sorted[0].oif, scope: RT_SCOPE_LINK, protocol };
  if (address.family === AF_INET) {
    return { dst, scope: RT_SCOPE_LINK, protocol, multipath: sorted.map((p) => ({ oif: p.oif })) };
  }
  const multipath: NextHop[] = sorted.map((p) => {
    if (!p.podIP || p.podIP.family !== AF_INET6) {
      throw new Error(`anycast ${formatIP(address)}: path via #${p.oif} has no pod IPv6 address`);
    }
    return { oif: p.oif, gateway: p.podIP, flags: RTNH_F_ONLINK };
  });
  return { dst, protocol, multipath };
}

/** A route's paths as sorted comparable keys (`"<oif>"` or `"<oif> via <gw>"`). */
export function pathKeys(r: Route): string[] {
  const hops: NextHop[] = r.multipath?.length
    ? r.multipath
    : [{ oif: r.oif ?? 0, gateway: r.gateway }];
  return hops.map((h) => h.gateway ? `${h.oif} via ${formatIP(h.gateway)}` : `${h.oif}`).sort();
}

/** Whether the kernel's flock routes to one address already are exactly `want`. */
export function routesMatch(current: Route[], want: Route | undefined): boolean {
  if (!want) return current.length === 0;
  if (current.length !== 1) return false;
  const have = pathKeys(current[0]);
  const need = pathKeys(want);
  return have.length === need.length && have.every((k, i) => k === need[i]);
}

/** What one {@link AnycastRoutes.sync} did. */
export interface AnycastSyncReport {
  /** Addresses whose route was installed, replaced or removed. */
  changed: string[];
  /**
   * Holders left out of a route (missing or down veth, no pod address of that family), and in a
   * resync round the addresses whose sync failed.
   */
  problems: string[];
}

/** Options of {@link AnycastRoutes}. */
export interface AnycastRoutesOptions {
  node: Handle;
  store: Store;
  log?: (fields: Record<string, unknown>) => void;
}

/** Default period of {@link AnycastRoutes.startResync}. */
export const ANYCAST_RESYNC_MS = 10_000;

/** Keeps the node's anycast routes equal to the store's committed holders. */
export class AnycastRoutes {
  readonly #node: Handle;
  readonly #store: Store;
  readonly #log?: (fields: Record<string, unknown>) => void;
  /**
   * Host veth name → ifindex, of veths seen up. A veth made again gets a new index (the kernel
   * allocates them cyclically), so a stale entry names no link, and a veth that went down since
   * is no longer a possible path: the kernel refuses the route (ENODEV, ENETDOWN), the cache is
   * dropped and the route computed again. A down veth is never cached, so the sync that follows
   * its coming up (the host side repair's) looks at it afresh.
   */
  readonly #ifindex = new Map<string, number>();
  #timer?: ReturnType<typeof setInterval>;
  /** Failed resync rounds in a row: logged when they start and end, not every 10 s. */
  readonly #resyncFailures: FailureStreak;
  /** Address → the cause last logged of its failing resync syncs, and how many failed in a row. */
  readonly #failing = new Map<string, { cause: string; failures: number }>();
  #syncFailures = 0;

  constructor(o: AnycastRoutesOptions) {
    this.#node = o.node;
    this.#store = o.store;
    this.#log = o.log;
    this.#resyncFailures = new FailureStreak("anycast resync", o.log);
  }

  /**
   * Recomputes the routes of `addresses` from the committed holders in the store and programs
   * the kernel. `without` leaves one attachment out although its record is still there: DEL
   * drops its path before deleting its veth, because the kernel flushes a whole IPv4 multipath
   * route when one of its devices goes, which would cut the other holders off for a moment.
   *
   * Holders whose veth is down are left out (see the module's notes). Every address is tried;
   * the first failure is thrown after the others were synced.
   *
   * Cost per address: one indexed store query, one FIB lookup and at most one route change,
   * whatever the number of pods on the node, plus one link request per holder not known up.
   */
  sync(addresses: Iterable<string>, opts: { without?: AttachmentKey } = {}): AnycastSyncReport {
    const report: AnycastSyncReport = { changed: [], problems: [] };
    let failure: { error: unknown } | undefined;
    for (const text of new Set(addresses)) {
      // One address the kernel refuses must not leave the others of this pod unsynced.
      try {
        const holders = this.#store.listAnycastHolders(text).filter((h) =>
          !(opts.without && h.containerId === opts.without.containerId &&
            h.ifname === opts.without.ifname)
        );
        const address = parseIP(text);
        this.#converge(address, holders, this.#lookup(address), report);
      } catch (e) {
        failure ??= { error: e };
      }
    }
    if (failure) throw failure.error;
    return report;
  }

  /**
   * Failed syncs of single addresses in resync rounds so far (each address each round), for a
   * metric; a down holder is no failure.
   */
  get syncFailures(): number {
    return this.#syncFailures;
  }

  /**
   * Re-checks every held address now and then. The kernel flushes a whole IPv4 multipath route
   * when one of its veths disappears without a DEL (the runtime destroyed the pod's namespace
   * first), which would leave the other holders without a route until their next ADD or DEL.
   * Each round costs one store query and one FIB lookup per held address, and the holders' link
   * states: one link dump, or one request per holder when they are few among the node's pods.
   * Idempotent.
   */
  startResync(intervalMs: number = ANYCAST_RESYNC_MS): void {
    this.stopResync();
    this.#timer = setInterval(() => this.resync(), intervalMs);
  }

  /** Stops {@link startResync}. */
  stopResync(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * One resync round: every address a committed record holds, over its holders whose veth is up
   * now. A failure to read them (a busy kernel, a store error) leaves the round to the
   * next, which tries again; a run of failed rounds is logged when it starts and when it ends.
   * A failure of one address costs that address only: it is logged when it starts, when its
   * cause changes and when it recovers, not every round, and counted in {@link syncFailures}.
   */
  resync(): AnycastSyncReport {
    const report: AnycastSyncReport = { changed: [], problems: [] };
    let held: Map<string, AnycastHolder[]>;
    let links: LinkSnapshot | undefined;
    try {
      held = new Map(
        this.#store.listAnycastAddresses().map((a) => [a, this.#store.listAnycastHolders(a)]),
      );
      links = this.#dumpWorthIt(held) ? this.#linkSnapshot() : undefined;
      this.#resyncFailures.succeeded();
    } catch (e) {
      this.#resyncFailures.failed(e);
      return { changed: [], problems: [String(e)] };
    }
    // Every veth is looked at afresh (the dump, or one request each): a vanished or downed one
    // must not linger in the cache.
    this.#ifindex.clear();
    for (const [name, link] of links ?? []) if (link.up) this.#ifindex.set(name, link.index);
    for (const [text, holders] of held) {
      try {
        const address = parseIP(text);
        this.#converge(address, holders, this.#lookup(address), report, links);
        this.#recovered(text);
      } catch (e) {
        report.problems.push(`anycast ${text}: route not synced: ${(e as Error).message}`);
        this.#failed(text, e);
      }
    }
    // Records gone since: their addresses are no longer anyone's to report on.
    for (const text of this.#failing.keys()) if (!held.has(text)) this.#failing.delete(text);
    return report;
  }

  /**
   * Whether one link dump is cheaper than one request per holder: a dump decodes every link of
   * the node (about one per attachment), a request costs about two dumped links
   * (bench/anycast_bench.ts), so it pays once the holders are half the attachments or more.
   */
  #dumpWorthIt(held: Map<string, AnycastHolder[]>): boolean {
    const veths = new Set<string>();
    for (const holders of held.values()) for (const h of holders) veths.add(h.hostIface);
    return veths.size > 0 && veths.size * LINK_REQUEST_COST_IN_DUMPED_LINKS >= this.#store.count();
  }

  #failed(address: string, e: unknown): void {
    this.#syncFailures++;
    const cause = e instanceof Error ? e.message : String(e);
    const before = this.#failing.get(address);
    this.#failing.set(address, { cause, failures: (before?.failures ?? 0) + 1 });
    if (before?.cause === cause) return;
    this.#log?.({
      level: "warn",
      msg: "anycast route sync failed",
      address,
      error: cause,
      note: "retried every round, logged again when the cause changes or it recovers",
    });
  }

  #recovered(address: string): void {
    const before = this.#failing.get(address);
    if (!before) return;
    this.#failing.delete(address);
    this.#log?.({ msg: "anycast route sync recovered", address, failures: before.failures });
  }

  /** One link dump: every link of the node by name. */
  #linkSnapshot(): LinkSnapshot {
    const links: LinkSnapshot = new Map();
    for (const l of listLinks(this.#node)) links.set(l.name, { index: l.index, up: l.up });
    return links;
  }

  /** {@link sync} for clean-up paths: logs a failure instead of throwing it. */
  trySync(addresses: Iterable<string>): void {
    try {
      this.sync(addresses);
    } catch (e) {
      this.#log?.({ level: "warn", msg: "anycast route sync failed", error: String(e) });
    }
  }

  /**
   * Rebuilds the route of every anycast address a committed record holds (start-up), comparing
   * against a full dump so duplicate routes are found too. Returns the held addresses so the
   * caller can remove flock routes to any other address. A dump the kernel interrupts is read
   * again after an awaited pause (the agent keeps answering meanwhile).
   */
  async syncAll(): Promise<AnycastSyncReport & { held: Set<string> }> {
    const held = new Set<string>();
    for (const rec of this.#store.listByState("committed")) {
      for (const a of rec.anycast) held.add(a);
    }
    const report: AnycastSyncReport = { changed: [], problems: [] };
    const routes = new Map<string, Route[]>();
    // Whole or not at all (a busy node interrupts dumps): the routes are compared against it.
    const [present, links] = await retryWhileKernelBusy(
      "anycast: list flock's routes and the links",
      () =>
        [
          ([AF_INET6, AF_INET] as const).flatMap((family) =>
            listRoutes(this.#node, { family, protocol: FLOCK_ROUTE_PROTOCOL })
          ),
          held.size ? this.#linkSnapshot() : new Map(),
        ] as const,
    );
    // After the awaited read: a sync meanwhile may have cached a veth that is gone since.
    this.#ifindex.clear();
    for (const r of present) {
      if (r.table !== RT_TABLE_MAIN) continue;
      const key = formatPrefix(r.dst);
      routes.set(key, [...routes.get(key) ?? [], r]);
    }
    for (const text of held) {
      // One address the kernel refuses must not leave the others unbuilt (or stop a start).
      try {
        const address = parseIP(text);
        const current = routes.get(formatPrefix(hostPrefix(address))) ?? [];
        this.#converge(address, this.#store.listAnycastHolders(text), current, report, links);
      } catch (e) {
        report.problems.push(`anycast ${text}: route not rebuilt: ${(e as Error).message}`);
      }
    }
    return { ...report, held };
  }

  /**
   * CHECK for one attachment: every anycast address it holds has a flock route with a path via
   * its veth, and that route has exactly the paths of the committed holders. Empty when right.
   */
  check(rec: Attachment): string[] {
    const problems: string[] = [];
    if (rec.anycast.length === 0) return problems;
    this.#ifindex.clear(); // CHECK is rare: resolve every veth afresh
    const link = getLinkByName(this.#node, rec.hostIface);
    if (!link) return [`host interface ${rec.hostIface} is missing, so are its anycast routes`];
    for (const text of rec.anycast) {
      const address = parseIP(text);
      const current = this.#lookup(address);
      if (current.length === 0) {
        problems.push(`node lacks the flock anycast route for ${text}`);
        continue;
      }
      const mine = current.some((r) =>
        r.oif === link.index || r.multipath?.some((h) => h.oif === link.index)
      );
      if (!mine) {
        problems.push(`the anycast route for ${text} has no path via ${rec.hostIface}`);
        continue;
      }
      const holders = this.#store.listAnycastHolders(text);
      const want = anycastRoute(address, this.#paths(address, holders, []));
      if (!routesMatch(current, want)) {
        problems.push(
          `the anycast route for ${text} has paths [${current.flatMap(pathKeys).join(", ")}], ` +
            `its holders need [${want ? pathKeys(want).join(", ") : ""}]`,
        );
      }
    }
    return problems;
  }

  /**
   * Makes the kernel's route to `address` the one these holders need: over those whose veth is
   * up (as `links` saw them, else as the cache or a fresh look says).
   */
  #converge(
    address: IP,
    holders: AnycastHolder[],
    current: Route[],
    report: AnycastSyncReport,
    links?: LinkSnapshot,
  ): void {
    const problems: string[] = [];
    let want = anycastRoute(address, this.#paths(address, holders, problems, links));
    if (routesMatch(current, want)) {
      report.problems.push(...problems);
      return;
    }
    try {
      this.#program(address, current, want);
    } catch (e) {
      if (!want || !(isNotFound(e) || (e instanceof NetlinkError && e.errno === ENETDOWN))) {
        throw e;
      }
      // A veth went or went down since it was looked at (the cache, the round's dump): look at
      // every holder afresh and retry once.
      this.#ifindex.clear();
      problems.length = 0;
      want = anycastRoute(address, this.#paths(address, holders, problems));
      const now = this.#lookup(address);
      if (!routesMatch(now, want)) this.#program(address, now, want);
    }
    report.problems.push(...problems);
    report.changed.push(formatIP(address));
    this.#log?.({
      msg: want ? "anycast route set" : "anycast route removed",
      address: formatIP(address),
      paths: want ? pathKeys(want) : [],
      leftOut: problems.length ? problems : undefined,
    });
  }

  #program(address: IP, current: Route[], want: Route | undefined): void {
    // One route is swapped atomically by replace; strays (other metrics) go first.
    if (want && current.length > 1) { for (const r of current) deleteRoute(this.#node, r); }
    if (want) return replaceRoute(this.#node, want);
    // No holder left: delete by destination, which also finds routes the lookup did not show
    // (shadowed by a rule or another table's match).
    deleteRoutesTo(this.#node, hostPrefix(address), FLOCK_ROUTE_PROTOCOL);
  }

  /** flock's route to exactly `address` in the main table, as the FIB has it (0 or 1 route). */
  #lookup(address: IP): Route[] {
    let r: ReturnType<typeof lookupRoute>;
    try {
      r = lookupRoute(this.#node, address);
    } catch (e) {
      // The lookup's answer is one page: an ECMP route of more than ~130 IPv6 (~450 IPv4)
      // paths does not fit (EMSGSIZE). A dump's messages are larger; it costs more, but only
      // for such an address.
      if (!isTooLarge(e)) throw e;
      const dst = hostPrefix(address);
      return listRoutes(this.#node, {
        family: address.family,
        protocol: FLOCK_ROUTE_PROTOCOL,
        table: RT_TABLE_MAIN,
      }).filter((x) => routeMatches(x, dst));
    }
    const ours = r && r.protocol === FLOCK_ROUTE_PROTOCOL && r.table === RT_TABLE_MAIN &&
      routeMatches(r, hostPrefix(address));
    return r && ours ? [r] : [];
  }

  /**
   * The usable paths of these holders (veth present and up); the ones left out are explained in
   * `problems`. Link states come from `links` when given, else from {@link #resolve}.
   */
  #paths(
    address: IP,
    holders: AnycastHolder[],
    problems: string[],
    links?: LinkSnapshot,
  ): AnycastPath[] {
    const text = formatIP(address);
    const paths: AnycastPath[] = [];
    for (const h of holders) {
      let link: Pick<Link, "index" | "up"> | undefined;
      try {
        link = links ? links.get(h.hostIface) : this.#resolve(h.hostIface);
      } catch (e) {
        // A record naming no possible link (a bad host interface name) costs only its own path.
        problems.push(`anycast ${text}: ${h.containerId} left out: ${(e as Error).message}`);
        continue;
      }
      if (link === undefined) {
        problems.push(`anycast ${text}: ${h.containerId} left out, ${h.hostIface} is missing`);
        continue;
      }
      if (!link.up) {
        problems.push(`anycast ${text}: ${h.containerId} left out, ${h.hostIface} is down`);
        continue;
      }
      const oif = link.index;
      const own = address.family === AF_INET6 ? h.ipv6 : h.ipv4;
      paths.push({ oif, podIP: own ? parseIP(own) : undefined });
    }
    if (address.family === AF_INET6 && paths.length > 1) {
      const usable = paths.filter((p) => p.podIP);
      if (usable.length < paths.length) {
        problems.push(
          `anycast ${text}: holders without an IPv6 address left out of the ECMP route`,
        );
      }
      return usable;
    }
    return paths;
  }

  /** The veth called `name`: cached as up, or looked at now (and cached when up). */
  #resolve(name: string): Pick<Link, "index" | "up"> | undefined {
    const cached = this.#ifindex.get(name);
    if (cached !== undefined) return { index: cached, up: true };
    const link = getLinkByName(this.#node, name);
    if (link?.up) this.#ifindex.set(name, link.index);
    return link;
  }
}
