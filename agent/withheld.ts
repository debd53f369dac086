/**
 * Addresses withheld from IPAM because the node still routes them through another pod's host
 * veth. A release whose record named that veth wrongly (a store restored from a backup, edited
 * by hand or written by a bug: see veth_owner.ts) leaves the veth and its routes alone, and an
 * address routed through it may be in use by that pod: handing it to a new pod would route one
 * address to two pods. The store keeps such an address (table `withheld`, schema 5), so a
 * restart does not hand it out either; it is given back, cooling down like any release, once
 * that veth no longer routes it (its pod's DEL deleted it, or the route went).
 *
 * @module
 */

import {
  AF_INET6,
  formatIP,
  getLinkByName,
  type Handle,
  hostPrefix,
  type IP,
  listRoutes,
  parseIP,
  routeMatches,
} from "../netlink/mod.ts";
import { FLOCK_ROUTE_PROTOCOL, type ForeignVeth } from "./datapath.ts";
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

/** Whether the node has a flock host route to `ip` through the link named `hostIface`. */
export function routesThrough(node: Handle, ip: IP, hostIface: string): boolean {
  const link = getLinkByName(node, hostIface);
  if (!link) return false;
  return listRoutes(node, { family: ip.family, protocol: FLOCK_ROUTE_PROTOCOL })
    .some((r) => r.oif === link.index && routeMatches(r, hostPrefix(ip)));
}

/** What {@link freeUnroutedWithheld} needs. */
export interface WithheldDeps {
  store: Store;
  /** The node's netns, where the host veths and their routes are. */
  node: Handle;
  pool6?: AddressPool;
  pool4?: AddressPool;
  now: number;
  /** Whether `ip` is still routed through `hostIface` (default: asks the kernel). */
  routed?: (ip: IP, hostIface: string) => boolean;
}

/**
 * Gives back the withheld addresses (all, or those withheld through the veth `hostIface`) that
 * the node no longer routes through their veth: each is recorded released at `now` and cools
 * down from then, as any release, across restarts too. Returns the ones given back. Costs one
 * read of an empty table on a node whose store never named another pod's veth.
 */
export function freeUnroutedWithheld(d: WithheldDeps, hostIface?: string): WithheldAddress[] {
  const routed = d.routed ?? ((ip, iface) => routesThrough(d.node, ip, iface));
  const unrouted = d.store.withheld().filter((w) =>
    (hostIface === undefined || w.hostIface === hostIface) && !routed(parseIP(w.ip), w.hostIface)
  );
  if (unrouted.length === 0) return [];
  d.store.freeWithheld(unrouted.map((w) => w.ip), d.now);
  for (const w of unrouted) {
    const ip = parseIP(w.ip);
    (ip.family === AF_INET6 ? d.pool6 : d.pool4)?.release(ip, d.now);
  }
  return unrouted;
}

/** Why an address in use is withheld, for the refusal of a pinned ADD, or "" when it is not. */
export function withheldReason(store: Store, ip: IP): string {
  const w = store.withheldAddress(formatIP(ip));
  return w
    ? ` (withheld: the node still routes it through host veth ${w.hostIface}, whose other end ` +
      `is in ${w.owner}'s netns)`
    : "";
}
