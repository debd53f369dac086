/**
 * Which devices the flock routes (protocol 201) of a node go over, as `ip route` shows them: for
 * tests that take pods' host veths down and up and check the kernel's routes and the agent's
 * repairs (anycast holders, veth flaps).
 *
 * @module
 */

import type { NodeConfigSpec } from "../../agent/config.ts";
import type { FlockNode } from "./flock.ts";
import type { IpRoute } from "./iproute.ts";

/** A dual-stack node config with anycast ranges, lab `n` (1 to 9) its own addresses. */
export function anycastNodeConfig(n: number): NodeConfigSpec {
  return {
    cidr6: `fd00:f${n}::/64`,
    cidr4: `10.7${n}.0.0/24`,
    anycastCIDRs: [`fd00:fff${n}::/64`, `10.255.7${n}.0/24`],
  };
}

/** The node's flock routes of one family (`-6`, `-4`), each with the devices of its paths. */
async function flockRouteDevs(
  node: FlockNode,
  family: "-6" | "-4",
): Promise<{ dst: string; devs: string[] }[]> {
  const routes = await node.ns.ipJson<IpRoute[]>([family, "route", "show", "proto", "201"]);
  return routes.map((r) => ({ dst: r.dst, devs: r.nexthops?.map((h) => h.dev) ?? [r.dev ?? ""] }));
}

/** The devices of the flock route to each address (`address dev,dev`), in `addresses` order. */
export async function routeDevsTo(node: FlockNode, addresses: string[]): Promise<string[]> {
  // One dump per family for all the addresses, not one per address.
  const routes = [...await flockRouteDevs(node, "-6"), ...await flockRouteDevs(node, "-4")];
  return addresses.map((a) => {
    const devs = routes.filter((r) => r.dst === a).flatMap((r) => r.devs);
    return `${a} ${devs.sort().join(",")}`;
  });
}

/** What {@link routeDevsTo} gives when `addresses` go via exactly `devs`. */
export function goingVia(addresses: string[], devs: string[]): string[] {
  return addresses.map((a) => `${a} ${[...devs].sort().join(",")}`);
}

/** The node's flock routes (both families) as `dst dev`, sorted; `dev` keeps those over it. */
export async function flockRoutesVia(node: FlockNode, dev?: string): Promise<string[]> {
  const out: string[] = [];
  for (const family of ["-6", "-4"] as const) {
    for (const r of await flockRouteDevs(node, family)) {
      if (dev === undefined || r.devs.includes(dev)) out.push(`${r.dst} ${r.devs.join(",")}`);
    }
  }
  return out.sort();
}

/** The host side a pod's veth carries: its routes (own and anycast) and fe80::1. */
export async function hostSide(node: FlockNode, dev: string): Promise<string[]> {
  const addrs = await node.ns.ipJson<{ addr_info: { local: string; prefixlen: number }[] }[]>([
    "addr",
    "show",
    "dev",
    dev,
  ]);
  return [
    ...await flockRoutesVia(node, dev),
    ...addrs[0].addr_info.map((a) => `addr ${a.local}/${a.prefixlen}`),
  ].sort();
}

/** Whether two lists are the same, in order. */
export function sameList(a: string[], b: string[]): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
