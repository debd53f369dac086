/** Neighbour-table parameters per device (what `ip ntable change` does). */

import type { Requester } from "./handle.ts";
import { AF_INET, type Family } from "./ip.ts";

const RTM_SETNEIGHTBL = 67;
const NDTA_NAME = 1;
const NDTA_PARMS = 6;
const NDTPA_IFINDEX = 1;
const NDTPA_PROXY_DELAY = 13;

/** Parameters flock sets on a device's neighbour table. */
export interface NeighTableParams {
  /** Milliseconds the kernel waits before answering a proxied ARP/ND request (default 800). */
  proxyDelayMs?: number;
}

/**
 * Sets neighbour-table parameters of one device. A proxy delay of 0 makes
 * proxy ARP answer at once instead of after up to 0.8 s.
 */
export function setNeighTableParams(
  h: Requester,
  family: Family,
  index: number,
  p: NeighTableParams,
): void {
  const msg = h.message(RTM_SETNEIGHTBL).raw(Uint8Array.of(family, 0, 0, 0))
    .str(NDTA_NAME, family === AF_INET ? "arp_cache" : "ndisc_cache");
  const parms = msg.beginNested(NDTA_PARMS);
  msg.u32(NDTPA_IFINDEX, index);
  if (p.proxyDelayMs !== undefined) {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(p.proxyDelayMs), true);
    msg.attr(NDTPA_PROXY_DELAY, b);
  }
  msg.endNested(parms);
  h.execute(msg, `set neighbour table parameters of link #${index}`);
}
