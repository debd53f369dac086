/**
 * Mesh peers whose Node or NodeConfig object was deleted, kept in the mesh for a grace period.
 *
 * An API object going away does not mean the node went away: kubelet registers a deleted Node
 * again within seconds (on its next status sync, or when it restarts), and an operator may
 * delete and re-apply a NodeConfig. Dropping such a peer at once would tear down every other
 * node's session with it and withdraw the routes to its pods, for a node that is still running.
 * So a peer that leaves the mesh because one of its objects is gone stays, at the address and
 * with the CIDRs it had, for {@link DEFAULT_DELETED_PEER_GRACE_MS}; if the objects come back
 * within that time, nothing changed for BIRD at all. After it, the peer is dropped: a node
 * that was removed for good must not be kept forever (its session would stay down, reported in
 * the status, and its CIDRs could be given to another node).
 *
 * A peer that leaves the mesh while its objects are still there (its NodeConfig turned the mesh
 * off, its address family no longer matches) is dropped at once: that is what its spec says. A
 * kept peer is dropped early when another node of the mesh takes its address or overlaps its
 * CIDRs (a replacement node), and when its objects are back but say it is no mesh peer. The
 * memory is this agent's: after an agent restart a peer whose objects are gone is not in the
 * mesh.
 *
 * Pure logic; the caller supplies the clock and recomputes the mesh at {@link KeptPeers.nextExpiry}.
 *
 * @module
 */

import { parsePrefix, type Prefix, prefixCovers } from "../../netlink/ip.ts";
import type { MeshPeer } from "../routing.ts";

/**
 * How long a mesh peer whose Node or NodeConfig was deleted is kept (kubelet registers a deleted
 * Node again within seconds).
 */
export const DEFAULT_DELETED_PEER_GRACE_MS = 60_000;

/** The longest grace an operator may set: a deleted peer is never kept for good. */
export const MAX_DELETED_PEER_GRACE_MS = 3_600_000;

/** What became of the kept peers in one {@link KeptPeers.apply}, for the log. */
export interface KeptPeerEvents {
  /** Left the mesh now because an object is gone: kept. */
  kept: { name: string; address: string; gone: string }[];
  /** Kept ones whose objects are back: in the mesh on their own again. */
  returned: string[];
  /** Kept ones dropped, and why. */
  dropped: { name: string; reason: string }[];
}

interface KeptPeer {
  peer: MeshPeer;
  /** When it left the mesh (the caller's clock, ms). */
  since: number;
}

/** The mesh peers kept after their objects were deleted; see the module doc. */
export class KeptPeers {
  readonly #kept = new Map<string, KeptPeer>();
  #last: MeshPeer[] = [];

  constructor(readonly graceMs: number = DEFAULT_DELETED_PEER_GRACE_MS) {}

  /** The names of the peers kept now. */
  get names(): string[] {
    return [...this.#kept.keys()].sort();
  }

  /** When the next kept peer's grace ends (the caller's clock), undefined when none is kept. */
  get nextExpiry(): number | undefined {
    let next: number | undefined;
    for (const { since } of this.#kept.values()) {
      const end = since + this.graceMs;
      if (next === undefined || end < next) next = end;
    }
    return next;
  }

  /**
   * The mesh to render: `fresh` (computed from the API objects) and the kept peers, sorted by
   * name. `missingObject(name)` names the object of that node that is gone ("Node",
   * "NodeConfig"), undefined when both are there. `ownCIDRs` are this node's: a kept peer that
   * overlaps them is dropped too.
   */
  apply(
    fresh: readonly MeshPeer[],
    missingObject: (name: string) => string | undefined,
    now: number,
    ownCIDRs: readonly Prefix[] = [],
  ): { mesh: MeshPeer[]; events: KeptPeerEvents } {
    const events: KeptPeerEvents = { kept: [], returned: [], dropped: [] };
    const freshNames = new Set(fresh.map((p) => p.name));
    for (const name of this.#kept.keys()) {
      if (freshNames.has(name)) {
        this.#kept.delete(name);
        events.returned.push(name);
      }
    }
    if (this.graceMs > 0) {
      for (const peer of this.#last) {
        if (freshNames.has(peer.name) || this.#kept.has(peer.name)) continue;
        const gone = missingObject(peer.name);
        if (gone === undefined) continue;
        this.#kept.set(peer.name, { peer, since: now });
        events.kept.push({ name: peer.name, address: peer.address, gone });
      }
    }
    const addresses = new Set(fresh.map((p) => p.address));
    const taken = [...ownCIDRs, ...fresh.flatMap((p) => p.cidrs.map(parseCidr))];
    for (const [name, { peer, since }] of this.#kept) {
      const reason = now - since >= this.graceMs
        ? `its Node or NodeConfig stayed deleted for ${Math.round(this.graceMs / 1000)} s`
        : missingObject(name) === undefined
        ? "its Node and NodeConfig are back but make it no mesh peer"
        : addresses.has(peer.address)
        ? `another node now peers at ${peer.address}`
        : peer.cidrs.map(parseCidr).some((c) => taken.some((t) => overlaps(c, t)))
        ? "another node now holds its CIDRs"
        : undefined;
      if (reason === undefined) continue;
      this.#kept.delete(name);
      events.dropped.push({ name, reason });
    }
    const mesh = [...fresh, ...[...this.#kept.values()].map((k) => k.peer)]
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    this.#last = mesh;
    return { mesh, events };
  }
}

/** parsePrefix with its default strictness (as a `map` callback it would get the index). */
function parseCidr(text: string): Prefix {
  return parsePrefix(text);
}

function overlaps(a: Prefix, b: Prefix): boolean {
  return a.ip.family === b.ip.family && (prefixCovers(a, b) || prefixCovers(b, a));
}
