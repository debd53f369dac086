/**
 * Start-up reconciliation: make the node's kernel state and the store agree
 * before the agent serves a single request (BRIEF §3).
 *
 * - committed records go back into IPAM, and their datapath is set up again when their host
 *   veth is missing or down or one of their host routes is missing, and their namespace still
 *   exists (whole pods cost no request);
 * - records sharing one host veth name (a store from before schema 3) are first given names of
 *   their own, the live pod keeping its veth (shared_host_iface.ts);
 * - pending records (an ADD that died half-way) are torn down and released;
 * - releasing records (a DEL that answered but died before the veth was gone) are torn down
 *   and released, their addresses cooling down like any other release; the veths of both go
 *   off the event loop, {@link VETH_DELETIONS_IN_FLIGHT} at a time as GC's (a crash during a GC of
 *   100 pods leaves 100), and each record's addresses are released only once its veth is gone;
 * - flock-named links and flock-tagged routes that no record explains are removed;
 * - anycast routes are rebuilt from the committed records (after the orphan links went, since
 *   deleting a link can take a whole IPv4 multipath route with it).
 *
 * A record that cannot be handled (its teardown or repair throws) goes into the report's
 * `problems` and the rest goes on: one bad record must not keep the agent from starting. What
 * was found broken goes there too (a repaired pod, an orphan of a pod without a record); the
 * expected housekeeping (leftovers finished, an old CIDR's summary route removed, the withheld
 * addresses) goes into `notes` (reconcile_findings.ts).
 *
 * The dumps everything is decided on are read whole or not at all: a dump the kernel
 * interrupts (a busy node: DAD on many new addresses, routes churning) is read again after a
 * short awaited pause, a few times over a few seconds (kernel_busy.ts), so a transient interruption
 * neither stops the start nor makes the agent act on a partial view. Only a node that stays
 * too busy for that long fails the start, with an error naming the read.
 */

import {
  AF_INET,
  AF_INET6,
  deleteLink,
  deleteRoute,
  formatIP,
  formatPrefix,
  hostPrefix,
  type IP,
  ipEqual,
  type Link,
  listLinks,
  listRoutes,
  parseIP,
  RT_TABLE_MAIN,
} from "../netlink/mod.ts";
import {
  type Datapath,
  FLOCK_ROUTE_PROTOCOL,
  type ForeignVeth,
  GATEWAY4,
  isFlockIfaceName,
  type PodAddresses,
  type SetupOptions,
  VETH_DELETIONS_IN_FLIGHT,
} from "./datapath.ts";
import { forEachBounded } from "./bounded.ts";
import type { Attachment, Store } from "./store.ts";
import { type AddressPool, unusableReason } from "./ipam.ts";
import type { AnycastRoutes } from "./anycast.ts";
import { separateSharedHostIfaces } from "./shared_host_iface.ts";
import { isNetnsGone } from "./netns_path.ts";
import { isKernelBusy, type KernelRetryOptions, retryWhileKernelBusy } from "./kernel_busy.ts";
import { otherPodSides, setupOwnershipChecks } from "./veth_owner.ts";
import { freeUnroutedWithheld, rerouteWithheld, withheldThrough } from "./withheld.ts";
import {
  addFinding,
  hostRouteKey,
  leftoversNote,
  missingHostState,
  type ReconcileFindings,
  removedLinkProblem,
  removedRouteFinding,
  repairedProblem,
} from "./reconcile_findings.ts";

/** What reconciliation did, for logs, metrics and `flock status`. */
export interface ReconcileReport extends ReconcileFindings {
  restored: number;
  repaired: number;
  released: number;
  orphanLinks: number;
  /** Flock-tagged routes removed that nothing in force explains (old summary routes included). */
  orphanRoutes: number;
  /** Anycast routes installed, replaced or removed to match the committed holders. */
  anycastChanged: number;
  /** Set by the agent: the configure that ran it, the agent's first or a later one. */
  trigger?: "start-up" | "reconfigure";
  /** Set by the agent: when it finished (ISO 8601). */
  at?: string;
}

/** Inputs of {@link reconcile}. */
export interface ReconcileDeps {
  store: Store;
  datapath: Datapath;
  pool6?: AddressPool;
  pool4?: AddressPool;
  /** Routes flock owns that no pod record explains (summary blackholes, anycast). */
  keepRoute?: (dst: { ip: IP; len: number }) => boolean;
  /** Rebuilds the anycast routes; without it, every anycast route counts as an orphan. */
  anycast?: AnycastRoutes;
  /** The node's pod MTU (NodeConfig `mtu`), which a repaired veth gets as ADD gives it. */
  mtu?: number;
  cooldownMs: number;
  now?: () => number;
  /** How dumps the kernel interrupts are retried (tests shorten the pauses). */
  retry?: KernelRetryOptions;
}

/** Tries of a committed pod's repair that the kernel was too busy to read for. */
const REPAIR_ATTEMPTS = 3;

function poolFor(ip: IP, d: ReconcileDeps): AddressPool | undefined {
  return ip.family === AF_INET6 ? d.pool6 : d.pool4;
}

/**
 * Brings the store, IPAM and the kernel into agreement; see the module doc. Resolves once all
 * is done (the agent serves only then); the leftovers' veth deletions (on worker threads) and
 * the pauses before reading again what a busy kernel interrupted are awaited, everything else
 * runs synchronously. STATUS and metrics are answered meanwhile; CNI requests are not, since
 * the agent serves them only afterwards (start) or holds them back (a reconfigure).
 */
export async function reconcile(d: ReconcileDeps): Promise<ReconcileReport> {
  const report: ReconcileReport = {
    restored: 0,
    repaired: 0,
    released: 0,
    orphanLinks: 0,
    orphanRoutes: 0,
    anycastChanged: 0,
    problems: [],
    notes: [],
  };
  const node = d.datapath.node;
  d.datapath.ensureNode();

  const now = (d.now ?? Date.now)();
  // Before any teardown or repair: either would act on the name a live pod's veth has.
  const separated = separateSharedHostIfaces({ store: d.store, datapath: d.datapath, now });
  report.released += separated.released;
  report.problems.push(...separated.problems);
  report.notes.push(...separated.notes);
  await releaseLeftovers(d, now, report);

  // One dump each of links and flock routes, taken once the leftovers are gone: enough to find
  // the committed pods whose datapath lost something, and the orphans.
  // Orphans are deleted by what these say is missing from the store: never from a partial read.
  const readLinks = () =>
    retryWhileKernelBusy(
      "start-up reconcile: list the node's links",
      () => listLinks(node),
      d.retry,
    );
  const links = new Map((await readLinks()).map((l) => [l.name, l]));
  const routes = await retryWhileKernelBusy(
    "start-up reconcile: list flock's routes",
    () =>
      ([AF_INET6, AF_INET] as const).flatMap((family) =>
        listRoutes(node, { family, protocol: FLOCK_ROUTE_PROTOCOL })
      ),
    d.retry,
  );
  const hostRoutes = new Set(
    routes.filter((r) => r.table === RT_TABLE_MAIN && r.oif !== undefined)
      .map((r) => hostRouteKey(formatIP(r.dst.ip), r.dst.len, r.oif!)),
  );

  const committed = d.store.listByState("committed");
  /** Addresses of committed pods, canonical text (a set: one lookup per route, not per pod). */
  const held = new Set<string>();
  /** Anycast addresses of committed pods: their routes are the anycast sync's to keep. */
  const anycastHeld = new Set(committed.flatMap((r) => r.anycast));
  for (const rec of committed) {
    restoreAddresses(d, rec, held, report);
    report.restored++;
    try {
      const missing = missingHostState(rec, links, hostRoutes);
      if (missing !== undefined && !isNetnsGone(rec.netns)) {
        // setup reads the pod's links and addresses: a busy kernel gets a few short retries.
        await retryWhileKernelBusy(`repair of ${rec.containerId}`, () =>
          d.datapath.setup({
            containerId: rec.containerId,
            hostIface: rec.hostIface,
            netns: rec.netns,
            ifname: rec.ifname,
            ipv6: rec.ipv6 ? parseIP(rec.ipv6) : undefined,
            ipv4: rec.ipv4 ? parseIP(rec.ipv4) : undefined,
            anycast: rec.anycast.map(parseIP),
            mtu: d.mtu,
          }, repairChecks(d.store, rec)), { ...d.retry, attempts: REPAIR_ATTEMPTS });
        report.repaired++;
        report.problems.push(repairedProblem(rec.containerId, missing));
      }
    } catch (e) {
      report.problems.push(`${rec.containerId}: repair failed: ${(e as Error).message}`);
    }
  }

  await restoreWithheld(d, links, held, now, report);

  // Addresses released shortly before the restart stay cooling, from their stored release time:
  // a restart neither shortens a cooldown nor starts it afresh. A release stamped in the future
  // (the clock stepped back) cools from now, never longer than one cooldown. After a CIDR change
  // one may be outside the new CIDR or its network or broadcast address: the pool never hands
  // those out.
  for (const r of d.store.recentReleases(now - d.cooldownMs)) {
    const ip = parseIP(r.ip);
    const pool = poolFor(ip, d);
    if (!pool || pool.isAllocated(ip) || unusableReason(pool.cidr, ip)) continue;
    pool.reserve(ip);
    pool.release(ip, Math.min(r.at, now));
  }
  d.store.pruneReleases(now - d.cooldownMs);

  const known = new Set(committed.map((r) => r.hostIface));
  // A repair may have remade a veth (a new index): look again rather than trust the dump.
  const linksNow = report.repaired ? await readLinks() : links.values();
  const committedPods = () =>
    committed.map((r) => ({
      label: `${r.containerId}/${r.ifname}`,
      netns: r.netns,
      ifname: r.ifname,
    }));
  for (const link of linksNow) {
    if (!isFlockIfaceName(link.name) || known.has(link.name)) continue;
    try {
      // No record names it, but it may be a committed pod's interface (its other end is the
      // record's ifname in the record's netns) whose record names another veth (a store edited
      // or restored): the pod keeps its network.
      const owner = d.datapath.podOwning(link, committedPods);
      if (owner) {
        report.problems.push(
          `link ${link.name} is named by no record, but its other end is in ${owner}'s netns: ` +
            "left in place",
        );
        continue;
      }
      if (!deleteLink(node, link.index)) continue;
      report.orphanLinks++;
      report.problems.push(removedLinkProblem(link.name));
    } catch (e) {
      report.problems.push(`cannot remove orphan link ${link.name}: ${(e as Error).message}`);
    }
  }
  try {
    const anycast = await d.anycast?.syncAll();
    if (anycast) {
      report.anycastChanged = anycast.changed.length;
      report.problems.push(...anycast.problems);
    }
  } catch (e) {
    // The anycast resync puts them right once the kernel answers again.
    report.problems.push(
      `anycast routes not rebuilt${isKernelBusy(e) ? " (resync retries)" : ""}: ` +
        (e as Error).message,
    );
  }
  // The dump from before the repairs still names every orphan: repairs and the anycast sync
  // touch only held addresses' routes, and a route that went with an orphan link is skipped.
  for (const r of routes) {
    if (r.dst.len === 32 && ipEqual(r.dst.ip, GATEWAY4)) continue;
    if (d.keepRoute?.(r.dst)) continue;
    const full = r.dst.len === hostPrefix(r.dst.ip).len;
    const dstText = formatIP(r.dst.ip);
    if (full && (held.has(dstText) || (d.anycast && anycastHeld.has(dstText)))) continue;
    try {
      if (!deleteRoute(node, r)) continue;
      report.orphanRoutes++;
      addFinding(report, removedRouteFinding(r.dst));
    } catch (e) {
      report.problems.push(
        `cannot remove orphan route ${formatPrefix(r.dst)}: ${(e as Error).message}`,
      );
    }
  }
  return report;
}

/**
 * The checks an ADD makes, for a repair: the pod's netns must not hold another record's flock
 * interface (a second one there would take over that pod's default routes), and a stale veth of
 * the record's name must not be another record's pod's. Either refuses the repair (a problem in
 * the report); the live pod keeps its network.
 */
function repairChecks(store: Store, rec: Attachment): SetupOptions {
  return setupOwnershipChecks(store, rec, rec.hostIface, (holder) =>
    new Error(
      `its netns ${rec.netns} already has ${holder.containerId}/${holder.ifname}'s flock ` +
        `interface (host veth ${holder.hostIface}); one flock interface per netns, so it is ` +
        "not set up again",
    ));
}

/**
 * Tears down the pending and releasing records' datapaths and removes the records, as GC does:
 * all go off the network first (one link dump for all, not a look-up each), then their veths
 * are deleted off the event loop, {@link VETH_DELETIONS_IN_FLIGHT} at a time, each record removed
 * and its addresses released once its own veth is gone. A record that cannot be handled stays as
 * it is, its addresses held, for a retried ADD or DEL, the stuck-release sweep or the next
 * start: one bad record must not stop the agent (a crash loop).
 */
async function releaseLeftovers(
  d: ReconcileDeps,
  now: number,
  report: ReconcileReport,
): Promise<void> {
  const leftovers = [...d.store.listByState("pending"), ...d.store.listByState("releasing")];
  if (leftovers.length === 0) return;
  const failed = (rec: Attachment, e: unknown) => {
    report.problems.push(
      `${rec.containerId}: cannot release the ${rec.state} attachment: ${(e as Error).message}`,
    );
    restoreAddresses(d, rec, new Set(), report);
  };
  const nodeLinks = leftovers.length > 1
    ? d.datapath.nodeLinksOrNone("releasing the leftover attachments")
    : undefined;
  const detached: { rec: Attachment; addresses: PodAddresses; veth?: Link | null }[] = [];
  for (const rec of leftovers) {
    const addresses: PodAddresses = {
      ipv6: rec.ipv6 ? parseIP(rec.ipv6) : undefined,
      ipv4: rec.ipv4 ? parseIP(rec.ipv4) : undefined,
      hostIface: rec.hostIface,
      netns: rec.netns,
      others: otherPodSides(d.store, rec, rec.hostIface),
    };
    try {
      const { foreign, veth } = d.datapath.detach(rec.containerId, addresses, nodeLinks);
      // Another pod's veth: removeVeth without `veth` asks again and keeps its routes.
      detached.push({ rec, addresses, veth: foreign ? undefined : veth });
    } catch (e) {
      failed(rec, e);
    }
  }
  const finished = { pending: 0, releasing: 0 };
  const outcomes = await forEachBounded(detached, VETH_DELETIONS_IN_FLIGHT, async (x) => {
    const foreign = await d.datapath.removeVeth(x.rec.containerId, x.addresses, x.veth);
    finishLeftover(d, x.rec, foreign, now, report);
    report.released++;
    if (x.rec.state === "pending" || x.rec.state === "releasing") finished[x.rec.state]++;
  });
  outcomes.forEach((o, i) => {
    if (o.status === "rejected") failed(detached[i].rec, o.reason);
  });
  const note = leftoversNote(finished);
  if (note) report.notes.push(note);
}

/**
 * Removes a pending or releasing record whose veth is gone, or is another pod's (a problem in the
 * report: that veth stays, as an address routed through it).
 */
function finishLeftover(
  d: ReconcileDeps,
  rec: Attachment,
  foreign: ForeignVeth | undefined,
  now: number,
  report: ReconcileReport,
): void {
  const inUse = new Set(foreign?.addressesInUse.map(formatIP));
  if (foreign) {
    report.problems.push(
      `${rec.containerId}: host veth ${foreign.hostIface} is not this attachment's (its other ` +
        `end is in ${foreign.owner}'s netns): left in place` +
        (inUse.size ? `; ${[...inUse].join(", ")} routed through it, not released` : ""),
    );
  }
  // A pending pod never got its addresses; a releasing one did, so they cool down.
  const used = rec.state === "releasing" ? [rec.ipv6, rec.ipv4] : [];
  const released = used.filter((ip) => ip !== undefined && !inUse.has(formatIP(parseIP(ip))));
  d.store.finishRelease(
    rec.containerId,
    rec.ifname,
    released as string[],
    now,
    withheldThrough(foreign),
  );
}

/**
 * The addresses withheld before the restart (routed through another pod's veth, see
 * withheld.ts) stay out of IPAM (in `held`, so their routes are no orphans) as long as that veth
 * exists: one whose veth went while the agent was down is given back, cooling from now. The
 * routes of the others are made whole again through an up veth (after the repairs above, which
 * set a committed pod's veth up): at start-up "veth up, route missing" cannot tell a flap the
 * agent did not see (the kernel flushed the route) from an `ip route del` by hand, and keeping
 * an address that may be in use is the safe side (as the running agent does for a flap; a route
 * deleted by hand while it runs is what gives one back). Each restored route is a note.
 */
async function restoreWithheld(
  d: ReconcileDeps,
  links: Map<string, Link>,
  held: Set<string>,
  now: number,
  report: ReconcileReport,
): Promise<void> {
  // `links` was read before the repairs: a veth a repair made anew is not the one it went through.
  const veth = (_ip: IP, hostIface: string) => links.has(hostIface);
  const freed = freeUnroutedWithheld({ ...d, node: d.datapath.node, now, routed: veth });
  for (const w of freed) {
    report.notes.push(
      `${w.ip}, withheld since a release found it routed through ${w.owner}'s veth ` +
        `${w.hostIface}, is routed there no more (the veth is gone): released`,
    );
  }
  const owners = new Map(d.store.withheld().map((w) => [w.hostIface, w.owner]));
  for (const [hostIface, owner] of owners) {
    try {
      const restored = await retryWhileKernelBusy(
        `start-up reconcile: restore the withheld routes through ${hostIface}`,
        () => rerouteWithheld(d.store, d.datapath.node, hostIface),
        d.retry,
      );
      for (const ip of restored) {
        report.notes.push(
          `withheld route restored: ${ip} through ${owner}'s host veth ${hostIface} (its route ` +
            "was missing: a flap the agent did not see, or deleted by hand; to give it back, " +
            "delete the route while the agent runs)",
        );
      }
    } catch (e) {
      report.problems.push(
        `cannot restore the withheld routes through ${hostIface}: ${(e as Error).message}`,
      );
    }
  }
  for (const w of d.store.withheld()) {
    const ip = parseIP(w.ip);
    held.add(w.ip);
    const pool = poolFor(ip, d);
    try {
      if (pool && !pool.isAllocated(ip) && !unusableReason(pool.cidr, ip)) pool.reserve(ip);
    } catch (e) {
      report.problems.push(`cannot withhold ${w.ip}: ${(e as Error).message}`);
    }
    // As it was then: status's "Withheld addresses" shows the current state.
    report.notes.push(
      `${w.ip} withheld: routed through ${w.owner}'s host veth ${w.hostIface}, it is not handed ` +
        "out until that veth no longer routes it",
    );
  }
}

/** Takes the record's addresses back into IPAM and adds them to `held`, each on its own. */
function restoreAddresses(
  d: ReconcileDeps,
  rec: Attachment,
  held: Set<string>,
  report: ReconcileReport,
): void {
  for (const text of [rec.ipv6, rec.ipv4]) {
    if (!text) continue;
    try {
      const ip = parseIP(text);
      held.add(formatIP(ip));
      poolFor(ip, d)?.reserve(ip);
    } catch (e) {
      report.problems.push(`${rec.containerId}: cannot restore ${text}: ${(e as Error).message}`);
    }
  }
}
