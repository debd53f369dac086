/**
 * The addresses the store holds, for keeping the pools in force in step with it when a
 * reconfigure fails part-way: its reconcile may already have released leftovers in the store
 * (a stuck release finished, a withheld address freed) while the old pools, which stay in force,
 * still count them taken — leaked until the next start.
 *
 * @module
 */

import { formatIP, parseIP } from "../netlink/mod.ts";
import type { AddressPool } from "./ipam.ts";
import type { Store } from "./store.ts";

/** Every address the store holds (a record's in any state, or withheld), canonical text. */
export function storeHeldAddresses(store: Store): Set<string> {
  const held = new Set<string>();
  for (const rec of store.list()) {
    for (const ip of [rec.ipv6, rec.ipv4]) if (ip) held.add(formatIP(parseIP(ip)));
  }
  for (const w of store.withheld()) held.add(formatIP(parseIP(w.ip)));
  return held;
}

/**
 * Releases into `pools` (cooling from now, as the store's release does) the addresses of
 * `heldBefore` that the store no longer holds; returns them. A pool ignores an address that is
 * not its own or not taken in it.
 */
export function releaseNoLongerHeld(
  store: Store,
  heldBefore: ReadonlySet<string>,
  pools: readonly (AddressPool | undefined)[],
): string[] {
  const heldNow = storeHeldAddresses(store);
  const gone = [...heldBefore].filter((ip) => !heldNow.has(ip));
  for (const text of gone) {
    const ip = parseIP(text);
    for (const pool of pools) pool?.release(ip);
  }
  return gone;
}
