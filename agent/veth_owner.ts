/**
 * Whose a host veth is, as the store tells it: the questions a release, a repair and an ADD ask
 * before they act on a veth by its name.
 *
 * Host veth names are unique per record in a store this schema wrote (an ADD picks a free one,
 * start-up separates shared ones from before schema 3), but a store restored from a backup,
 * edited by hand or written by a bug can give one record the name of the veth another live pod
 * uses. The datapath then asks the kernel which pod's netns holds the veth's other end
 * (Datapath's `others`): these functions name the candidates.
 *
 * @module
 */

import type { PodSide, SetupOptions } from "./datapath.ts";
import type { Attachment, HostIfaceHolder, Store } from "./store.ts";

/** One attachment's key. */
export type AttachmentKey = Pick<Attachment, "containerId" | "ifname">;

function sameKey(a: AttachmentKey, b: AttachmentKey): boolean {
  return a.containerId === b.containerId && a.ifname === b.ifname;
}

function sideOf(a: AttachmentKey & { netns: string }): PodSide {
  return { label: `${a.containerId}/${a.ifname}`, netns: a.netns };
}

/**
 * The pods other than `self` that may own the host veth `hostIface`, lazily: the other records
 * holding that name first (the likely owner), then every other record (one whose own name was
 * changed). Read only when the veth's other end is not in `self`'s netns, which a store this
 * schema wrote never shows: the normal release reads nothing here.
 */
export function otherPodSides(
  store: Store,
  self: AttachmentKey,
  hostIface: string,
): () => Iterable<PodSide> {
  return function* () {
    for (const h of store.hostIfaceHolders(hostIface)) {
      if (!sameKey(h, self)) yield sideOf(h);
    }
    for (const a of store.list()) {
      if (!sameKey(a, self) && a.hostIface !== hostIface) yield sideOf(a);
    }
  };
}

/**
 * The first attachment of another container, not releasing, that holds one of `hostIfaces` (the
 * flock veths whose other end already lives in a pod's netns): that netns is taken, a second
 * flock interface there would take over its default routes. Every holder of each name is
 * looked at, so a name two records hold (a store from before schema 3, edited by hand) cannot
 * hide the live one behind this container's own record.
 */
export function otherNetnsHolder(
  store: Store,
  containerId: string,
  hostIfaces: string[],
): (HostIfaceHolder & { hostIface: string }) | undefined {
  for (const hostIface of hostIfaces) {
    for (const holder of store.hostIfaceHolders(hostIface)) {
      if (holder.containerId === containerId || holder.state === "releasing") continue;
      return { ...holder, hostIface };
    }
  }
  return undefined;
}

/**
 * A setup's guards for the attachment `self` whose host veth is `hostIface`, as an ADD and the
 * start-up repair both need them: refuses a netns where another container's flock interface
 * already lives (`refuse` makes the caller's error), and names the pods whose veth a stale one
 * of this name may be.
 */
export function setupOwnershipChecks(
  store: Store,
  self: AttachmentKey,
  hostIface: string,
  refuse: (holder: HostIfaceHolder & { hostIface: string }) => Error,
): Pick<SetupOptions, "checkNetnsPeers" | "others"> {
  return {
    checkNetnsPeers: (hostIfaces) => {
      const holder = otherNetnsHolder(store, self.containerId, hostIfaces);
      if (holder) throw refuse(holder);
    },
    others: otherPodSides(store, self, hostIface),
  };
}
