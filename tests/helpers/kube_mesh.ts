/**
 * What the cluster-mode BGP mesh tests share: the API objects of a lab node and the routes BIRD
 * put into a node's kernel.
 *
 * @module
 */

import type { BgpLabNode, BgpNodePlan } from "./bgp_lab.ts";

/**
 * The NodeConfig and Node objects of a lab node: its spec, and its underlay addresses as
 * InternalIPs (IPv4 first unless `v6First`).
 */
export function meshObjects(p: BgpNodePlan, v6First = false): Record<string, unknown>[] {
  const ips = [p.ipv4, p.ipv6].filter((a): a is string => a !== undefined);
  if (v6First) ips.reverse();
  return [
    {
      apiVersion: "flock.fritzlab.net/v1alpha1",
      kind: "NodeConfig",
      metadata: { name: p.name },
      spec: p.spec,
    },
    {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: p.name },
      status: { addresses: ips.map((address) => ({ type: "InternalIP", address })) },
    },
  ];
}

/** Destinations of the routes BIRD installed in a node's kernel, both families, sorted. */
export async function birdRoutes(n: BgpLabNode): Promise<string[]> {
  const out: string[] = [];
  for (const family of ["-6", "-4"]) {
    const routes = await n.flock.ns.ipJson<{ dst: string }[]>([
      family,
      "route",
      "show",
      "proto",
      "bird",
    ]);
    out.push(...routes.map((r) => r.dst));
  }
  return out.sort();
}
