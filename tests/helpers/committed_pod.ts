/**
 * A pod set up through a real {@link Datapath} and recorded committed in a real {@link Store},
 * as an ADD leaves it, for tests and benchmarks of what runs beside the pods (the host side
 * repair, withheld addresses).
 *
 * @module
 */

import type { Datapath, PodNetwork } from "../../agent/datapath.ts";
import type { Store } from "../../agent/store.ts";
import { formatIP } from "../../netlink/mod.ts";

/** Sets `net` up through `datapath` and commits its record in `store`; returns its host veth. */
export function setUpCommitted(datapath: Datapath, store: Store, net: PodNetwork): string {
  const { hostIface } = datapath.setup(net);
  store.insertPending({
    containerId: net.containerId,
    ifname: net.ifname,
    netns: net.netns,
    hostIface,
    ipv6: net.ipv6 && formatIP(net.ipv6),
    ipv4: net.ipv4 && formatIP(net.ipv4),
    anycast: (net.anycast ?? []).map(formatIP),
  });
  store.commit(net.containerId, net.ifname);
  return hostIface;
}
