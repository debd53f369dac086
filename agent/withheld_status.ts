/**
 * The withheld addresses (withheld.ts) as `flock status` and the `flock_withheld_addresses` gauge
 * show them. Apart from withheld.ts, so that `flock status` loads no netlink code.
 *
 * @module
 */

import type { WithheldAddress } from "./store.ts";

/** How many withheld addresses `flock status` lists (its counts cover them all). */
export const WITHHELD_LISTED = 20;

/** One withheld address as `flock status` shows it. */
export interface WithheldEntryStatus {
  address: string;
  /** The host veth that routes it. */
  hostIface: string;
  /** The pod whose netns holds that veth's other end (`<containerId>/<ifname>`). */
  owner: string;
  /** When a release withheld it (ISO 8601). */
  since: string;
}

/** The withheld addresses in `flock status` and the `flock_withheld_addresses` gauge. */
export interface WithheldStatus {
  /** How many are withheld, per family. */
  ipv6: number;
  ipv4: number;
  /** The oldest first, at most {@link WITHHELD_LISTED} of them. */
  addresses: WithheldEntryStatus[];
}

/**
 * Counts `withheld` (the store's list, oldest first) per family and keeps the first `limit`:
 * bounded, so a node with many of them still answers `flock status` quickly and compactly.
 */
export function summarizeWithheld(
  withheld: readonly WithheldAddress[],
  limit = WITHHELD_LISTED,
): WithheldStatus {
  // The store keeps canonical text: an IPv6 address always has a colon, an IPv4 one never.
  const ipv6 = withheld.filter((w) => w.ip.includes(":")).length;
  return {
    ipv6,
    ipv4: withheld.length - ipv6,
    addresses: withheld.slice(0, limit).map((w) => ({
      address: w.ip,
      hostIface: w.hostIface,
      owner: w.owner,
      since: new Date(w.at).toISOString(),
    })),
  };
}
