/**
 * Addresses withheld from IPAM because the node still routes them through another pod's host
 * veth. A release whose record named that veth wrongly (a store restored from a backup, edited
 * by hand or written by a bug: see veth_owner.ts) leaves the veth and its routes alone, and an
 * address routed through it may be in use by that pod: handing it to a new pod would route one
 * address to two pods. The store keeps such an address (table `withheld`, schema 5), so a
 * restart does not hand it out either; it is given back, cooling down like any release, once
 * that veth no longer routes it: its pod's DEL deleted it, or the route went while the veth is
 * up. A veth that is down keeps it: its pod's DEL takes it down (and its routes with it) before
 * deleting it, and an address given back then would cool from that moment while the veth still
 * exists (with `cooldownMs: 0` a new pod could get it at once).
 *
 * A veth that went down and up again (a flap: the kernel flushed its routes) has not given the
 * address up either: the host side repair routes it there again (host_side_repair.ts,
 * {@link rerouteWithheld}), and until it has, the sweep does not judge that veth
 * ({@link WithheldDeps.unsettled}). So only a route that goes while the agent runs and sees no
 * flap (an operator's `ip route del`) gives an address back from an up veth. The start-up
 * reconcile cannot tell a flap it did not see from such a deletion: it gives back only the
 * addresses whose veth is gone, and routes the others through their veth again when it is up
 * (reconcile.ts, with {@link rerouteWithheld} too).
 *
 * @module
 */

import {
  AF_INET6,
  type Family,
  formatIP,
  formatPrefix,
  getLinkByName,
  type Handle,
  hostPrefix,
  type IP,
  type Link,
  listLinks,
  listRoutes,
  parseIP,
  type Prefix,
  replaceRoute,
} from "../netlink/mod.ts";
import { FLOCK_ROUTE_PROTOCOL, type ForeignVeth, hostRoute } from "./datapath.ts";
import type { AddressPool } from "./ipam.ts";
import type { Store, WithheldAddress } from "./store.ts";

/** The store entries of the addresses a release left routed through another pod's veth. */
export function withheldThrough(foreign: ForeignVeth | undefined): Omit<WithheldAddress, "at">[] {
  return (foreign?.addressesInUse ?? []).map((ip) => ({
    ip: formatIP(ip),
    hostIface: foreign!.hostIface,
    owner: foreign!.owner,
  }));
}

/**
 * Whether an address withheld through a host veth stays withheld: the veth (`link`, undefined
 * when it is gone) is down (a release in progress: wait for the veth to go), or up and still
 * routes the address (`routed`, asked only then).
 */
function staysWithheld(link: Link | undefined, routed: (link: Link) => boolean): boolean {
  if (!link) return false;
  return !link.up || routed(link);
}

/** A flock host route's key in {@link withheldRoutedNow}'s dump. */
function hostRouteKey(dst: Prefix, oif: number): string {
  return `${formatPrefix(dst)}%${oif}`;
}

/**
 * {@link WithheldDeps.routed} from the kernel, for one sweep: the node's links and its flock
 * routes are each dumped once (routes once per family asked about), when first needed, however
 * many addresses are withheld.
 */
export function withheldRoutedNow(node: Handle): (ip: IP, hostIface: string) => boolean {
  let links: Map<string, Link> | undefined;
  const hostRoutes = new Map<Family, Set<string>>();
  const routesOf = (family: Family) => {
    let keys = hostRoutes.get(family);
    if (!keys) {
      keys = new Set();
      for (const r of listRoutes(node, { family, protocol: FLOCK_ROUTE_PROTOCOL })) {
        if (r.oif !== undefined) keys.add(hostRouteKey(r.dst, r.oif));
      }
      hostRoutes.set(family, keys);
    }
    return keys;
  };
  return (ip, hostIface) => {
    links ??= new Map(listLinks(node).map((l) => [l.name, l]));
    return staysWithheld(
      links.get(hostIface),
      (link) => routesOf(ip.family).has(hostRouteKey(hostPrefix(ip), link.index)),
    );
  };
}

/** What {@link freeUnroutedWithheld} needs. */
export interface WithheldDeps {
  store: Store;
  /** The node's netns, where the host veths and their routes are. */
  node: Handle;
  pool6?: AddressPool;
  pool4?: AddressPool;
  now: number;
  /**
   * Whether `ip` stays withheld through `hostIface` (see {@link staysWithheld}; default:
   * {@link withheldRoutedNow}, one dump for all).
   */
  routed?: (ip: IP, hostIface: string) => boolean;
  /**
   * Asked once the routes were judged: whether a host veth's missing routes may come back (it
   * went down and up, and its repair has not run yet: HostSideRepair.unsettledVeths). An address
   * withheld through such a veth stays withheld.
   */
  unsettled?: () => (hostIface: string) => boolean;
}

/**
 * Gives back the withheld addresses (all, or those withheld through the veth `hostIface`) that
 * the node no longer routes through their veth (see {@link staysWithheld}): each is recorded
 * released at `now` and cools down from then, as any release, across restarts too. Returns the
 * ones given back. Costs one read of an empty table on a node whose store never named another
 * pod's veth, and no kernel request then.
 */
export function freeUnroutedWithheld(d: WithheldDeps, hostIface?: string): WithheldAddress[] {
  const routed = d.routed ?? withheldRoutedNow(d.node);
  let unrouted = d.store.withheld().filter((w) =>
    (hostIface === undefined || w.hostIface === hostIface) && !routed(parseIP(w.ip), w.hostIface)
  );
  if (unrouted.length === 0) return [];
  // After the routes were looked at: a flap that emptied a veth before that look is known now.
  const unsettled = d.unsettled?.();
  if (unsettled) unrouted = unrouted.filter((w) => !unsettled(w.hostIface));
  if (unrouted.length === 0) return [];
  d.store.freeWithheld(unrouted.map((w) => w.ip), d.now);
  for (const w of unrouted) {
    const ip = parseIP(w.ip);
    (ip.family === AF_INET6 ? d.pool6 : d.pool4)?.release(ip, d.now);
  }
  return unrouted;
}

/**
 * Routes the addresses withheld through the host veth `hostIface` there again, if it is up:
 * after it went down and up (the kernel flushed its routes), as the host side repair finds it,
 * or whatever took them while the agent was down, as the start-up reconcile finds it.
 * They stay withheld: the pod on its other end may use them as before. Returns the addresses
 * whose route was missing. No kernel request when nothing is withheld through that veth.
 */
export function rerouteWithheld(store: Store, node: Handle, hostIface: string): string[] {
  const through = store.withheld().filter((w) => w.hostIface === hostIface);
  if (through.length === 0) return [];
  const host = getLinkByName(node, hostIface);
  if (!host?.up) return [];
  // The veth's own flock routes, by the kernel's filter: a few, not the node's.
  const routed = new Set<string>();
  for (const family of new Set(through.map((w) => parseIP(w.ip).family))) {
    for (const r of listRoutes(node, { family, protocol: FLOCK_ROUTE_PROTOCOL, oif: host.index })) {
      routed.add(formatPrefix(r.dst));
    }
  }
  const missing = through.filter((w) => !routed.has(formatPrefix(hostPrefix(parseIP(w.ip)))));
  for (const w of missing) {
    replaceRoute(node, hostRoute(parseIP(w.ip), host.index));
  }
  return missing.map((w) => w.ip);
}

/** Why an address in use is withheld, for the refusal of a pinned ADD, or "" when it is not. */
export function withheldReason(store: Store, ip: IP): string {
  const w = store.withheldAddress(formatIP(ip));
  return w
    ? ` (withheld: the node still routes it through host veth ${w.hostIface}, whose other end ` +
      `is in ${w.owner}'s netns)`
    : "";
}
