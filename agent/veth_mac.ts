/**
 * The MAC addresses of a pod's veth pair, derived from the attachment (container ID, interface
 * name) instead of chosen at random: a pair the start-up repair or a retried ADD rebuilds gets
 * the MACs it had, so the runtime's cached ADD result (prevResult, which CHECK compares) and the
 * neighbour entries on both sides (the node's for the pod, the pod's for fe80::1 and
 * 169.254.1.1) stay right.
 *
 * Two attachments may well get the same MACs (46 bits of a hash), and that is harmless: every
 * veth pair is an L2 segment of its own, two ends and nothing else, and flock's host ends are
 * routed, never bridged, so no frame of one pod ever meets another pod's MAC. Only the two ends
 * of one pair must differ, and {@link vethMacs} makes sure they do.
 *
 * @module
 */

import { fnv1a32 } from "./fnv.ts";

/** The MAC addresses of one attachment's veth ends, 6 bytes each. */
export interface VethMacs {
  /** The pod's interface (CNI_IFNAME). */
  pod: Uint8Array;
  /** The host end on the node (`flock<8 hex>`). */
  host: Uint8Array;
}

/**
 * The MACs of the veth pair of `containerId`'s interface `ifname`: unicast, locally administered
 * (as the kernel's random ones are), the same on every call, and the pod's and the host's distinct.
 */
export function vethMacs(containerId: string, ifname: string): VethMacs {
  const pod = sideMac("pod", containerId, ifname);
  const host = sideMac("host", containerId, ifname);
  // 2^-46 odds, but a pair whose ends share a MAC would confuse `ip neigh` and the reader.
  if (host.every((byte, i) => byte === pod[i])) host[5] ^= 1;
  return { pod, host };
}

/**
 * 46 hash bits in a locally administered unicast MAC. The two 32-bit hashes read the attachment
 * in different orders: a hash over a suffix of the other's text would be a function of the other
 * hash (FNV carries one 32-bit state), and give 32 bits of spread, not 46. An interface name has
 * no `/` and no `:` (the kernel refuses them), so the texts are unambiguous.
 */
function sideMac(side: "pod" | "host", containerId: string, ifname: string): Uint8Array {
  const first = fnv1a32(`${side}:${ifname}/${containerId}`);
  const second = fnv1a32(`${containerId}/${ifname}:${side}`);
  return new Uint8Array([
    // Bit 0 clear: unicast; bit 1 set: locally administered. The other 6 bits are hash bits.
    ((first >>> 24) & 0xfc) | 0x02,
    (first >>> 16) & 0xff,
    (first >>> 8) & 0xff,
    first & 0xff,
    // FNV-1a's high bits are its best mixed.
    (second >>> 24) & 0xff,
    (second >>> 16) & 0xff,
  ]);
}
