/**
 * NodeConfig objects from the API server, turned into what the agent acts on: its own config,
 * the fallback from `Node.spec.podCIDRs`, a description of what a change means for the pods
 * already running, and the other nodes' configs (the BGP node mesh).
 *
 * Pure logic.
 *
 * @module
 */

import {
  AF_INET,
  AF_INET6,
  formatPrefix,
  parsePrefix,
  type Prefix,
  prefixCovers,
} from "../../netlink/ip.ts";
import { type NodeConfig, parseNodeConfig } from "../config.ts";
import type { KubeObject } from "./api.ts";
import type { CacheChange } from "./object_cache.ts";
import { publishedRouterId } from "./router_ids.ts";
import { type MeshPeer, summaryPrefixes } from "../routing.ts";

/** What the agent keeps of one NodeConfig object. */
export interface NodeConfigObject {
  name: string;
  generation: number;
  spec: unknown;
  status: unknown;
}

/** Projects a NodeConfig object to the fields the agent reads. */
export function projectNodeConfig(obj: KubeObject): NodeConfigObject {
  return {
    name: obj.metadata?.name ?? "",
    generation: obj.metadata?.generation ?? 0,
    spec: obj.spec,
    status: obj.status,
  };
}

/**
 * Validates the spec of a NodeConfig object with the same rules as a config file, except that a
 * BGP peer may name its password's Secret (`passwordSecretRef`): the agent can read it here.
 */
export function parseNodeConfigObject(obj: NodeConfigObject): NodeConfig {
  const config = parseNodeConfig(obj.spec ?? {}, `NodeConfig ${obj.name}`, { secretRefs: true });
  config.name = obj.name;
  return config;
}

/** JSON with object keys sorted, so two equal values always print the same. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      return Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    }
    return v;
  });
}

/**
 * A NodeConfig built from `Node.spec.podCIDRs` for a cluster without NodeConfig objects:
 * the first IPv6 and the first IPv4 CIDR, default MTU, no anycast, no BGP. Undefined when the
 * node has no pod CIDR (yet).
 */
export function nodeConfigFromPodCIDRs(
  nodeName: string,
  podCIDRs: string[],
): NodeConfig | undefined {
  const spec: { cidr6?: string; cidr4?: string } = {};
  for (const text of podCIDRs) {
    let p: Prefix;
    try {
      p = parsePrefix(text, true);
    } catch {
      continue;
    }
    if (p.ip.family === AF_INET6) spec.cidr6 ??= formatPrefix(p);
    if (p.ip.family === AF_INET) spec.cidr4 ??= formatPrefix(p);
  }
  if (!spec.cidr6 && !spec.cidr4) return undefined;
  const config = parseNodeConfig(spec, `Node ${nodeName} spec.podCIDRs`);
  config.name = nodeName;
  return config;
}

function prefixText(p: Prefix | undefined): string {
  return p ? formatPrefix(p) : "none";
}

/**
 * What changing the node's config from `old` to `next` means, one sentence per changed field,
 * for the log. Running pods are never touched: they keep their addresses, MTU and routes; new
 * pods get the new settings.
 */
export function describeConfigChange(old: NodeConfig, next: NodeConfig): string[] {
  const out: string[] = [];
  for (
    const [label, a, b] of [
      ["cidr6", old.cidr6, next.cidr6],
      ["cidr4", old.cidr4, next.cidr4],
    ] as const
  ) {
    if (prefixText(a) === prefixText(b)) continue;
    out.push(
      `${label} changed from ${prefixText(a)} to ${prefixText(b)}: running pods keep their ` +
        `addresses (those outside the new range are named in status.reason until they ` +
        `are deleted); new pods get addresses from ${prefixText(b)}`,
    );
  }
  if (old.mtu !== next.mtu) {
    out.push(
      `mtu changed from ${old.mtu} to ${next.mtu}: applies to new pods; running pods keep theirs`,
    );
  }
  const anycast = (c: NodeConfig) => [...c.anycast6, ...c.anycast4].map(formatPrefix).join(",");
  if (anycast(old) !== anycast(next)) {
    out.push(
      `anycastCIDRs changed from [${anycast(old)}] to [${anycast(next)}]: checked for new pods; ` +
        `running pods keep the anycast addresses they hold`,
    );
  }
  if (canonicalJson(old.spec.bgp ?? null) !== canonicalJson(next.spec.bgp ?? null)) {
    out.push("bgp changed: the routing daemon is reconfigured");
  }
  return out;
}

/**
 * The valid NodeConfigs of every node but `self`, sorted by name; invalid ones are reported.
 * Each object is parsed once per `metadata.generation` (the API server bumps it on every spec
 * change, never on a status write): the mesh is recomputed whenever any node's config or
 * address changes, and at 1,000 nodes re-parsing them all each time would cost every agent
 * tens of milliseconds per event. An invalid one is reported once per generation, and a node
 * whose new spec is invalid is taken with its last valid one: its agent rejects the new spec
 * and keeps running on that one too.
 */
export class PeerConfigs {
  readonly #parsed = new Map<string, PeerEntry>();

  of(
    objects: NodeConfigObject[],
    self: string,
    onInvalid: (name: string, reason: string) => void,
  ): NodeConfig[] {
    const out: NodeConfig[] = [];
    const seen = new Set<string>();
    for (const obj of objects) {
      if (obj.name === self) continue;
      seen.add(obj.name);
      let entry = this.#parsed.get(obj.name);
      // Without a generation (not from an API server) nothing says the spec is unchanged.
      if (!entry || entry.generation !== obj.generation || obj.generation === 0) {
        const before = entry;
        entry = { generation: obj.generation, config: before?.config, previous: before?.previous };
        try {
          const config = parseNodeConfigObject(obj);
          if (before?.config && cidrsText(before.config) !== cidrsText(config)) {
            entry.previous = before.config;
          }
          entry.config = config;
        } catch (e) {
          onInvalid(obj.name, (e as Error).message);
        }
        this.#parsed.set(obj.name, entry);
      }
      // Its agent runs the current spec: the previous CIDRs are its own concern now (drainingCIDRs).
      if (entry.previous && specApplied(obj)) entry.previous = undefined;
      if (entry.config) out.push(entry.config);
    }
    for (const name of this.#parsed.keys()) if (!seen.has(name)) this.#parsed.delete(name);
    return out.sort((a, b) => (a.name! < b.name! ? -1 : a.name! > b.name! ? 1 : 0));
  }

  /**
   * The summary CIDRs of a node's valid spec before its CIDRs last changed (none if they never
   * did since this agent started watching).
   */
  previousCIDRs(name: string): string[] {
    const previous = this.#parsed.get(name)?.previous;
    return previous ? summaryPrefixes(previous).map(formatPrefix) : [];
  }
}

/** What {@link PeerConfigs} keeps of one node. */
interface PeerEntry {
  generation: number;
  /** The last valid spec (of this generation, or an earlier one if this one is invalid). */
  config?: NodeConfig;
  /** The valid spec before the CIDRs last changed. */
  previous?: NodeConfig;
}

function cidrsText(c: NodeConfig): string {
  return summaryPrefixes(c).map(formatPrefix).join();
}

/**
 * Whether a node's agent has applied its current spec: its status's `observedGeneration` has
 * caught up with `metadata.generation`. Until then it still runs (and announces) the CIDRs of
 * its previous spec, and its status does not yet say what it drains.
 */
export function specApplied(obj: NodeConfigObject): boolean {
  const observed = (obj.status as { observedGeneration?: unknown } | null | undefined)
    ?.observedGeneration;
  return typeof observed === "number" && observed >= obj.generation;
}

/**
 * Whether a change to another node's NodeConfig can change what this node derives from the
 * others (its BGP mesh, a router-id clash): one added or deleted, a new spec (generation), or a
 * new router id in its status. Not the status writes that only move counters: every node makes
 * one at most once a second while its pods change, and each would otherwise make every agent
 * recompute its whole mesh.
 */
export function peerChangeMatters(change: CacheChange<NodeConfigObject>): boolean {
  if (change.type === "delete" || !change.previous) return true;
  const { value, previous } = change;
  return value.generation !== previous.generation || value.generation === 0 ||
    publishedRouterId(value.status) !== publishedRouterId(previous.status) ||
    publishedDrainingCIDRs(value.status).join() !==
      publishedDrainingCIDRs(previous.status).join() ||
    specApplied(value) !== specApplied(previous);
}

/** Most draining CIDRs taken from one node's status (the CRD allows no more). */
export const MAX_DRAINING_CIDRS = 16;

/**
 * The CIDRs a NodeConfig `status` publishes as draining (`status.drainingCIDRs`): summaries of
 * an earlier spec that the node's running pods still hold addresses in. Only well-formed CIDRs
 * (no bits after the prefix length), canonical and sorted; anything else is ignored.
 */
export function publishedDrainingCIDRs(status: unknown): string[] {
  const list = (status as { drainingCIDRs?: unknown } | null | undefined)?.drainingCIDRs;
  if (!Array.isArray(list)) return [];
  const out = new Set<string>();
  for (const text of list.slice(0, MAX_DRAINING_CIDRS)) {
    if (typeof text !== "string") continue;
    try {
      out.add(formatPrefix(parsePrefix(text, true)));
    } catch {
      // Not a CIDR: nothing a route could be accepted for.
    }
  }
  return [...out].sort();
}

/** Where {@link meshPeersFor} learns which old CIDRs each peer still drains. */
export interface DrainingSource {
  /** The NodeConfig `status` of a node, as the API server holds it. */
  statusOf(nodeName: string): unknown;
  /**
   * The CIDRs of a node's previous spec while its agent has not applied the current one yet
   * (see {@link specApplied}, {@link PeerConfigs.previousCIDRs}): between an operator's spec
   * change and the node's first status after it, its old pods stay reachable too.
   */
  unappliedCIDRs?(nodeName: string): readonly string[];
  /** This node's own summary CIDRs: no peer may claim them. */
  ownCIDRs: readonly Prefix[];
}

/**
 * The draining CIDRs of each peer (see {@link publishedDrainingCIDRs}, and
 * {@link DrainingSource.unappliedCIDRs}) that the mesh accepts routes in, by node name: a status
 * is no spec, so a draining CIDR that overlaps a current CIDR
 * of any node (this one included) is refused: a node must never attract another's pods' traffic.
 * An operator moves a range between nodes only after its old owner has drained it.
 */
export function acceptedDrainingCIDRs(
  peers: NodeConfig[],
  source: DrainingSource,
): Map<string, string[]> {
  const current = [...source.ownCIDRs, ...peers.flatMap(summaryPrefixes)];
  const overlaps = (a: Prefix, b: Prefix) =>
    a.ip.family === b.ip.family && (prefixCovers(a, b) || prefixCovers(b, a));
  const out = new Map<string, string[]>();
  for (const p of peers) {
    const claimed = new Set([
      ...publishedDrainingCIDRs(source.statusOf(p.name!)),
      ...source.unappliedCIDRs?.(p.name!) ?? [],
    ]);
    const accepted = [...claimed].sort().filter((text) => {
      const cidr = parsePrefix(text, true);
      return !current.some((c) => overlaps(c, cidr));
    });
    if (accepted.length) out.set(p.name!, accepted);
  }
  return out;
}

/**
 * Whether a Node change moved its InternalIPs (the only part of a Node the mesh reads): kubelet
 * rewrites Node status on its own schedule, which must not recompute every agent's mesh.
 */
export function nodeAddressesChanged(change: CacheChange<string[]>): boolean {
  if (change.type === "delete" || !change.previous) return true;
  const a = change.value, b = change.previous;
  return a.length !== b.length || a.some((address, i) => address !== b[i]);
}

/** The InternalIP addresses of a Node object (kubelet lists the primary one first). */
export function projectNodeAddresses(obj: KubeObject): string[] {
  const status = obj.status as { addresses?: { type?: string; address?: string }[] } | undefined;
  return (status?.addresses ?? [])
    .filter((a) => a.type === "InternalIP" && typeof a.address === "string")
    .map((a) => a.address!);
}

/**
 * The BGP node mesh: one peer per other node whose NodeConfig has a `bgp.asn` and `nodeMesh` on
 * (a node with the mesh off would never answer, leaving a session down for good), at an InternalIP
 * of its Node object (see {@link meshAddress}); a node without a known address is left out until
 * it has one. `ownIPs` are this node's own InternalIPs (undefined when its Node is not known).
 * With `draining`, a peer's CIDRs include the old ones it still drains
 * (see {@link acceptedDrainingCIDRs}): its pods there stay reachable through a CIDR change.
 */
export function meshPeersFor(
  peers: NodeConfig[],
  internalIPs: (nodeName: string) => string[] | undefined,
  ownIPs?: string[],
  draining?: DrainingSource,
): MeshPeer[] {
  const held = draining ? acceptedDrainingCIDRs(peers, draining) : new Map<string, string[]>();
  const out: MeshPeer[] = [];
  for (const p of peers) {
    const asn = p.spec.bgp?.asn;
    if (asn === undefined || !p.spec.bgp?.nodeMesh) continue;
    const address = meshAddress(ownIPs, internalIPs(p.name!) ?? []);
    if (!address) continue;
    out.push({
      name: p.name!,
      address,
      asn,
      cidrs: [...summaryPrefixes(p).map(formatPrefix), ...held.get(p.name!) ?? []],
      ...(p.spec.anycastCIDRs?.length ? { anycastCIDRs: [...p.spec.anycastCIDRs] } : {}),
    });
  }
  return out;
}

/**
 * The address to peer with on another node. Both ends of a session must pick the same family,
 * or each dials an address the other does not expect and the session never comes up; so the
 * choice depends only on the pair, not on which end computes it (nor on the order kubelet lists
 * the addresses in): IPv6 when both nodes have an IPv6 InternalIP, else IPv4 when both have an
 * IPv4 one (the other family's routes ride along: extended next hop for IPv4 over IPv6), each
 * time the peer's first address of that family. Without this node's own addresses: the peer's
 * first InternalIP. Undefined when the two share no family (no session is possible).
 */
export function meshAddress(ownIPs: string[] | undefined, peerIPs: string[]): string | undefined {
  if (!ownIPs?.length) return peerIPs[0];
  const isV6 = (a: string) => a.includes(":");
  for (const v6 of [true, false]) {
    if (ownIPs.some((a) => isV6(a) === v6)) {
      const match = peerIPs.find((a) => isV6(a) === v6);
      if (match) return match;
    }
  }
  return undefined;
}
