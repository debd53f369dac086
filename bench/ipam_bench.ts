/**
 * IPAM allocation cost on an empty node and with 1,000 addresses in use.
 *
 * Each iteration allocates one address and releases it again (cooldown 0), so the pool stays at
 * its starting fill.
 */

import { parsePrefix } from "../netlink/ip.ts";
import { AddressPool, type AlgoName } from "../agent/ipam.ts";

const CIDRS = { ipv6: "fd00:f10c:0:1::/64", ipv4: "10.244.0.0/20" };

function filledPool(cidr: string, inUse: number): AddressPool {
  const pool = new AddressPool(parsePrefix(cidr), { cooldownMs: 0 });
  for (let i = 0; i < inUse; i++) pool.allocate({ algo: "random" });
  return pool;
}

for (const [family, cidr] of Object.entries(CIDRS)) {
  for (const inUse of [0, 1_000]) {
    for (const algo of ["next", "lowest", "random", "hash"] as AlgoName[]) {
      const pool = filledPool(cidr, inUse);
      let n = 0;
      Deno.bench({
        name: `allocate ${family} ${algo}, ${inUse} in use`,
        group: `${family} ${algo}`,
        baseline: inUse === 0,
        fn() {
          const ip = pool.allocate({ algo, key: `default/pod-${n++}` });
          pool.release(ip);
        },
      });
    }
  }
}
