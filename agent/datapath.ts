/**
 * The per-pod datapath (BRIEF §2): a routed veth with a /128 (and /32), host
 * routes tagged with flock's route protocol, and link-local gateways that need
 * no DAD and no IPv4 default route on the node.
 *
 * `setup` is idempotent and repairs whatever a crash left half-made; `teardown`
 * of something already gone succeeds; `check` lists every difference.
 */

import {
  addAddress,
  type Address,
  addVeth,
  AF_INET,
  AF_INET6,
  deleteAddress,
  deleteLink,
  deleteLinkOffThread,
  deleteRoute,
  deleteRoutesTo,
  familyName,
  formatIP,
  formatMac,
  getLinkByIndex,
  getLinkByName,
  Handle,
  hostPrefix,
  IFA_F_NOPREFIXROUTE,
  IFA_F_TENTATIVE,
  IN6_ADDR_GEN_MODE_NONE,
  type IP,
  ipEqual,
  isExists,
  isNotFound,
  type Link,
  listAddresses,
  listLinks,
  listRoutes,
  netnsIdOf,
  netnsIdOfFd,
  parseIP,
  parsePrefix,
  type Prefix,
  replaceRoute,
  RequestBatch,
  type Requester,
  type Route,
  routeMatches,
  RT_SCOPE_LINK,
  setLinkFamilySettings,
  setLinkMtu,
  setLinkNetns,
  setLinkUp,
  setNeighTableParams,
  validateIfname,
} from "../netlink/mod.ts";
import { closeFd, O_CLOEXEC, O_NONBLOCK, O_RDONLY, openPathOrNone } from "../netlink/ffi.ts";
import { fnv1a32 } from "./fnv.ts";
import { type NetnsIdentity, netnsIdentityOfFd } from "./netns_identity.ts";
import { vethMacs } from "./veth_mac.ts";
import type { LogFn } from "./logger.ts";

/** The route protocol number on every route flock installs (`ip route show proto 201`). */
export const FLOCK_ROUTE_PROTOCOL = 201;

/**
 * Veth deletions ({@link Datapath.removeVeth}) GC, the agent's stuck-release sweep and the
 * start-up reconcile run at once. The kernel overlaps them (bench/veth_delete_bench.ts, 24 veths
 * on 2 cpus: 4 in flight take 0.31 of the time of one at a time, 8 take 0.16); the bound keeps
 * the worker threads, netlink sockets and rtnl contention of a large GC small.
 */
export const VETH_DELETIONS_IN_FLIGHT = 8;
/** Prefix of every host-side interface flock creates. */
export const HOST_IFACE_PREFIX = "flock";
/** The pods' IPv6 gateway, on every host veth. */
export const GATEWAY6: IP = parseIP("fe80::1");
/** The pods' IPv4 gateway, answered by proxy ARP on every host veth. */
export const GATEWAY4: IP = parseIP("169.254.1.1");
const GATEWAY6_PREFIX: Prefix = parsePrefix("fe80::1/64");
const DEFAULT6: Prefix = parsePrefix("::/0");
const DEFAULT4: Prefix = parsePrefix("0.0.0.0/0");
/** Below this MTU the kernel runs no IPv6 on a link (no addr_gen_mode, no fe80::1 to add). */
const IPV6_MIN_MTU = 1280;

/** A bad argument to the datapath (nothing was changed). */
export class DatapathInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DatapathInputError";
  }
}

/** The pod's interface name is taken by something flock did not make. */
export class InterfaceConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InterfaceConflictError";
  }
}

/** What one pod's network looks like. */
export interface PodNetwork {
  containerId: string;
  /** Path of the pod's network namespace. */
  netns: string;
  /** Interface name inside the pod (CNI_IFNAME). */
  ifname: string;
  ipv6?: IP;
  ipv4?: IP;
  /** Anycast addresses the pod also answers on (/128 or /32, no DAD); see anycast.ts. */
  anycast?: IP[];
  mtu?: number;
  /**
   * The host-side veth's name, as the pod's record holds it; default
   * {@link hostIfaceName}(containerId). Another name only when that one is taken (a hash
   * collision with another container).
   */
  hostIface?: string;
}

/** Which pod's veth `teardown`, `detach` and `removeVeth` act on, and its host routes. */
export interface PodAddresses {
  ipv6?: IP;
  ipv4?: IP;
  /** The host-side veth's name when it is not {@link hostIfaceName}(containerId). */
  hostIface?: string;
  /** The pod's netns as its record knows it: a veth whose other end is there is this pod's. */
  netns?: string;
  /**
   * The other pods that may own the host veth (see {@link PodSide}). With it, a veth whose other
   * end is in one of their netns is left alone (not deleted, not set down, its routes kept).
   */
  others?: () => Iterable<PodSide>;
}

/**
 * Another pod's side as its record knows it. Asked only when the host veth's other end is in a
 * netns and not in this pod's: a store restored from a backup, edited by hand or written by a bug
 * can give one pod's record the name of the veth another live pod uses, and a release or repair
 * by name would take that pod off the network without an error anywhere.
 */
export interface PodSide {
  /** Who it is, for messages (`<containerId>/<ifname>`). */
  label: string;
  /** Path of its network namespace. */
  netns: string;
  /** Its interface there: when given, the veth's other end must be it, not any interface. */
  ifname?: string;
}

/** A host veth a release left in place, since its other end is in another pod's netns. */
export interface ForeignVeth {
  hostIface: string;
  /** The {@link PodSide.label} of the pod whose netns holds the other end. */
  owner: string;
  /** This record's addresses the node routes through that veth: not free for another pod. */
  addressesInUse: IP[];
}

/** What {@link Datapath.detach} found. */
export interface Detached {
  /** Set when the host veth is another pod's: nothing was changed. */
  foreign?: ForeignVeth;
  /**
   * Without `foreign`: the pod's own host veth, now down, or null when there is none (gone
   * already). Handed to {@link Datapath.removeVeth}, it spares that a look-up.
   */
  veth?: Link | null;
}

/** Options of {@link Datapath.setup}. */
export interface SetupOptions {
  /**
   * Called before anything changes with the host veths (by name) whose other end already lives in
   * the pod's netns, this pod's own excepted; throws to refuse the setup. The kernel is asked, not
   * the netns path: two paths can name one netns, and a path can be reused by a new one.
   */
  checkNetnsPeers?: (hostIfaces: string[]) => void;
  /**
   * Called with the pod netns's identity once it is open, before anything changes: false when no
   * other pod can have a flock interface there (see netns_identity.ts), and `checkNetnsPeers` is
   * then skipped with the link dump it needs. Without it the kernel is always asked.
   */
  netnsOpened?: (identity: NetnsIdentity) => boolean;
  /**
   * The other pods that may own a veth of this pod's name (see {@link PodSide}): a stale veth of
   * the name is remade only if its other end is in none of their netns; otherwise the setup is
   * refused with an {@link InterfaceConflictError}.
   */
  others?: () => Iterable<PodSide>;
}

/** What `setup` made, for the CNI Result. */
export interface PodInterfaces {
  hostIface: string;
  hostIndex: number;
  hostMac: string;
  podIndex: number;
  podMac: string;
}

/**
 * What `check` compares beyond the contract: the MAC addresses the result of the ADD reported
 * (a prevResult's interfaces), when it lists them.
 */
export interface CheckExpectations {
  /** The pod interface's MAC, as `aa:bb:cc:dd:ee:ff` (any case). */
  podMac?: string;
  /** The host veth's MAC, as `aa:bb:cc:dd:ee:ff` (any case). */
  hostMac?: string;
}

/** FNV-1a-32 of the container ID as `flock<8 hex>` (13 bytes, fits IFNAMSIZ). */
export function hostIfaceName(containerId: string): string {
  return hostIfaceCandidate(containerId, 0);
}

/**
 * The host veth names a container can have: {@link hostIfaceName} first (`attempt` 0), then,
 * for when another container's ID has the same 32-bit hash, FNV-1a-32 of `<containerId>/<attempt>`.
 */
export function hostIfaceCandidate(containerId: string, attempt: number): string {
  const text = attempt === 0 ? containerId : `${containerId}/${attempt}`;
  return HOST_IFACE_PREFIX + fnv1a32(text).toString(16).padStart(8, "0");
}

/** Whether an interface name is one flock creates on the node. */
export function isFlockIfaceName(name: string): boolean {
  return /^flock[0-9a-f]{8}$/.test(name);
}

const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.\-]*$/;

/** Throws DatapathInputError unless the pod description is usable. */
export function validatePodNetwork(pod: PodNetwork): void {
  if (typeof pod.containerId !== "string" || !CONTAINER_ID.test(pod.containerId)) {
    throw new DatapathInputError(
      `invalid container ID ${JSON.stringify(pod.containerId)}: ` +
        "must be non-empty and contain only letters, digits, '_', '.', '-'",
    );
  }
  try {
    validateIfname(pod.ifname, "pod interface name");
  } catch (e) {
    throw new DatapathInputError((e as Error).message);
  }
  if (pod.ipv6 && pod.ipv6.family !== AF_INET6) {
    throw new DatapathInputError(`ipv6 address ${formatIP(pod.ipv6)} is not an IPv6 address`);
  }
  if (pod.ipv4 && pod.ipv4.family !== AF_INET) {
    throw new DatapathInputError(`ipv4 address ${formatIP(pod.ipv4)} is not an IPv4 address`);
  }
  if (!pod.ipv6 && !pod.ipv4) throw new DatapathInputError("the pod has no address");
  hostIfaceOf(pod.containerId, pod);
  for (const ip of pod.anycast ?? []) {
    // The pod answers anycast traffic over its default route, which needs an address of that family.
    if (!(ip.family === AF_INET6 ? pod.ipv6 : pod.ipv4)) {
      throw new DatapathInputError(
        `anycast ${formatIP(ip)} needs a pod ${familyName(ip.family)} address`,
      );
    }
  }
  if (pod.mtu !== undefined && (!Number.isInteger(pod.mtu) || pod.mtu < 576 || pod.mtu > 65535)) {
    throw new DatapathInputError(`mtu ${pod.mtu} is out of range (576..65535)`);
  }
  if (pod.ipv6 && !carriesIPv6(pod)) {
    throw new DatapathInputError(`mtu ${pod.mtu} is below 1280, the minimum for IPv6`);
  }
}

/**
 * Whether the pod's veth runs IPv6. An IPv4-only pod may have an MTU below 1280, and then the
 * kernel gives neither end any IPv6 state: IPv6 settings are refused (EAFNOSUPPORT) there.
 */
function carriesIPv6(pod: PodNetwork): boolean {
  return pod.mtu === undefined || pod.mtu >= IPV6_MIN_MTU;
}

/** Every address the pod's interface carries: its own, then its anycast addresses. */
function podAddresses(pod: PodNetwork): IP[] {
  return [pod.ipv6, pod.ipv4, ...(pod.anycast ?? [])].filter((ip): ip is IP => ip !== undefined);
}

/**
 * The source the pod's default route pins: its own address when it also holds anycast addresses
 * of that family. Otherwise the kernel may pick an anycast address as the source (IPv6: longest
 * match toward another anycast address of the same range; IPv4: whichever /32 comes first), and
 * the replies would go to the nearest holder of that address instead of back to this pod.
 */
function sourceFor(pod: PodNetwork, own: IP): IP | undefined {
  return pod.anycast?.some((a) => a.family === own.family) ? own : undefined;
}

/** The host veth's name of the pod `containerId` whose record says `addresses.hostIface`. */
function hostIfaceOf(containerId: string, addresses: PodAddresses): string {
  checkedContainerId(containerId);
  if (addresses.hostIface === undefined) return hostIfaceName(containerId);
  if (!isFlockIfaceName(addresses.hostIface)) {
    throw new DatapathInputError(
      `invalid host interface name ${JSON.stringify(addresses.hostIface)}`,
    );
  }
  return addresses.hostIface;
}

function checkedContainerId(containerId: string): string {
  if (typeof containerId !== "string" || !CONTAINER_ID.test(containerId)) {
    throw new DatapathInputError(`invalid container ID ${JSON.stringify(containerId)}`);
  }
  return containerId;
}

/** flock's host route to `ip` through the device `oif` (a pod's, or a withheld address's). */
export function hostRoute(ip: IP, oif: number): Route {
  return { dst: hostPrefix(ip), oif, scope: RT_SCOPE_LINK, protocol: FLOCK_ROUTE_PROTOCOL };
}

/** Node-wide choices of a {@link Datapath}. */
export interface DatapathOptions {
  /**
   * The node hands out IPv4 addresses (it has a `cidr4`): {@link Datapath.ensureNode} then
   * turns IPv4 forwarding on for the whole node namespace, so traffic between the uplink and
   * the pods' veths is routed. An IPv6-only node leaves IPv4 forwarding as it found it.
   */
  routesIPv4?: boolean;
  /** Where the datapath says what it fell back to (see {@link Datapath.nodeLinksOrNone}). */
  log?: LogFn;
  /**
   * Told the index of every host veth this datapath created and set up, once the request was
   * answered, so that a link watch can tell these ups from others' (agent/own_link_ups.ts). A
   * failed batch tells nothing, even if its up went through: a token too few costs one check,
   * one too many would hide a flap. Nor does the up of a veth found down (a repeated ADD or a
   * reconcile after an operator's down): that down flushed the routes of the addresses withheld
   * through it (withheld.ts), which setup does not put back, so its up is looked at like an
   * operator's (agent/host_side_repair.ts).
   */
  onHostVethUp?: (index: number) => void;
}

/** The pod datapath of one node, bound to the node's namespace. */
export class Datapath {
  #nodeReady = false;

  constructor(readonly node: Handle, readonly options: DatapathOptions = {}) {}

  /**
   * Node-wide settings the pods rely on, applied once: IPv6 (and, with
   * `routesIPv4`, IPv4) forwarding, loopback up, and a flock route to
   * 169.254.1.1 so proxy ARP answers for the IPv4 gateway even when the node has
   * no IPv4 default route. The sysctls are written through the handle, so they
   * change only the node namespace this datapath is bound to.
   */
  ensureNode(): void {
    if (this.#nodeReady) return;
    const forwarding = ["net.ipv6.conf.all.forwarding"];
    // IPv4 forwarding is per receiving interface: "all" sets it on the uplink and every veth.
    if (this.options.routesIPv4) forwarding.push("net.ipv4.conf.all.forwarding");
    for (const key of forwarding) {
      if (this.node.readSysctl(key) !== "1") this.node.writeSysctl(key, "1");
    }
    const lo = getLinkByName(this.node, "lo");
    if (lo && !lo.up) setLinkUp(this.node, lo.index);
    if (lo) replaceRoute(this.node, hostRoute(GATEWAY4, lo.index));
    this.#nodeReady = true;
  }

  /** Creates or repairs the pod's datapath; returns its interfaces. */
  setup(pod: PodNetwork, options: SetupOptions = {}): PodInterfaces {
    validatePodNetwork(pod);
    // Open the pod's namespace first: a bad path must fail before anything changes.
    const podNs = Handle.forNetns(pod.netns);
    try {
      const mayHavePeers = options.netnsOpened?.(netnsIdentityOfFd(podNs.netnsFd)) ?? true;
      if (mayHavePeers && options.checkNetnsPeers) {
        options.checkNetnsPeers(this.#flockPeersIn(podNs, hostIfaceOf(pod.containerId, pod)));
      }
      this.ensureNode();
      const { host, peer, created } = this.#ensurePair(pod, podNs, options.others);
      if (!created) removeStrayAddresses(pod, podNs, peer);
      // One batch per side (3 round trips for a new pod, the veth's creation included), the
      // pod's first: a new pair's host side is still down then, so the carrier comes up only
      // with the host side's batch, and the link-up work the kernel defers to its own threads
      // (a walk over every IPv6 route of the node, under the RTNL lock) cannot hold up the pod
      // side's requests.
      const podSide = new RequestBatch(podNs);
      this.#configurePodSide(podSide, pod, peer);
      podSide.flush();
      const hostSide = new RequestBatch(this.node);
      const setUp = this.#configureHostSide(hostSide, pod, host);
      hostSide.flush();
      if (setUp && created) this.options.onHostVethUp?.(host.index);
      return {
        hostIface: host.name,
        hostIndex: host.index,
        hostMac: host.mac,
        podIndex: peer.index,
        podMac: peer.mac,
      };
    } finally {
      podNs.close();
    }
  }

  /**
   * Where the other end of the host veth `hostIface` lives, as the netns at `path` tells it (for
   * rebuilding netns identities at start): `identity` when that netns holds it, `unknown` when it
   * lives in another netns (the path gone or reused), neither when the veth is gone or its other
   * end is in no other netns. The identity and the kernel's id are read from one open fd, so a
   * path replaced meanwhile cannot pair one netns's identity with another's id. With `nodeLinks`
   * (one {@link nodeLinksByName} dump for many records) the veth is looked up there, not asked for.
   */
  locatePeerNetns(
    hostIface: string,
    path: string,
    nodeLinks?: ReadonlyMap<string, Link>,
  ): { identity?: NetnsIdentity; unknown: boolean } {
    const host = nodeLinks ? nodeLinks.get(hostIface) : getLinkByName(this.node, hostIface);
    if (!host || host.kind !== "veth" || !host.peerIndex || host.peerNetnsId === undefined) {
      return { unknown: false };
    }
    // Non-blocking: a FIFO at `path` would otherwise block the only JS thread for good. No
    // exception when it fails: after a restart, most paths may be gone.
    const fd = openPathOrNone(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd === undefined) return { unknown: true };
    try {
      const identity = netnsIdentityOfFd(fd);
      const held = netnsIdOfFd(this.node, fd, path) === host.peerNetnsId;
      return held ? { identity, unknown: false } : { unknown: true };
    } catch {
      return { unknown: true };
    } finally {
      closeFd(fd);
    }
  }

  /** The node's links by name, from one dump (for {@link locatePeerNetns} of many records). */
  nodeLinksByName(): Map<string, Link> {
    return new Map(listLinks(this.node).map((link) => [link.name, link]));
  }

  /**
   * {@link nodeLinksByName} for work over many records (`purpose` names it), or undefined when
   * the dump fails (a busy kernel interrupts it): each record then looks its own veth up, which
   * is slower but as correct. The fallback is logged once here, not per record.
   */
  nodeLinksOrNone(purpose: string): Map<string, Link> | undefined {
    try {
      return this.nodeLinksByName();
    } catch (e) {
      this.options.log?.({
        level: "warn",
        msg: `dumping the node's links failed: ${purpose} looks each veth up on its own`,
        error: String(e),
      });
      return undefined;
    }
  }

  /**
   * The node's flock veths (by name) whose other end is an interface of `podNs`, `ownName`
   * excepted: one link dump of the pod's netns (a new pod's has only `lo`), and a lookup on the
   * node only for a veth in it.
   */
  #flockPeersIn(podNs: Handle, ownName: string): string[] {
    const names: string[] = [];
    for (const link of listLinks(podNs)) {
      if (link.kind !== "veth" || !link.peerIndex) continue;
      const host = getLinkByIndex(this.node, link.peerIndex);
      // The index is the node's only if the node's link of that index pairs back to this one,
      // in this netns (another node namespace's pod can have the same indexes).
      if (!host || !isFlockIfaceName(host.name) || host.name === ownName) continue;
      if (host.peerIndex === link.index && this.#peerIsIn(host, podNs)) names.push(host.name);
    }
    return names;
  }

  /** Finds or makes the veth pair; repairs a peer left on the node. */
  #ensurePair(
    pod: PodNetwork,
    podNs: Handle,
    others: SetupOptions["others"],
  ): { host: Link; peer: Link; created: boolean } {
    const name = hostIfaceOf(pod.containerId, pod);
    // A new pod, nearly every call: create at once. An existing name (a retry, a crash's
    // leftovers, a foreign interface in the pod) fails it and takes the careful path below.
    const made = this.#createPair(pod, podNs, name);
    if (made) return { ...made, created: true };
    let host = getLinkByName(this.node, name);
    let peer = getLinkByName(podNs, pod.ifname);
    let created = false;
    if (host && host.kind !== "veth") {
      throw new InterfaceConflictError(`${name} exists on the node and is not a veth`);
    }
    if (host && host.peerNetnsId === undefined && host.peerIndex) {
      // A pair made in two steps whose peer never left the node: move it now.
      const stray = getLinkByIndex(this.node, host.peerIndex);
      if (stray && !peer) {
        setLinkNetns(this.node, stray.index, podNs.netnsFd, pod.ifname);
        peer = getLinkByName(podNs, pod.ifname);
        // The move may renumber the peer (its ifindex taken in the pod): re-read IFLA_LINK.
        host = getLinkByName(this.node, name);
      }
    }
    if (host && !(peer && paired(host, peer) && this.#peerIsIn(host, podNs))) {
      // Our name, but not joined to this pod's interface: stale, remake it, unless it is the veth
      // of another pod that a record knows (its other end in that pod's netns).
      const owner = others && this.#otherOwner(host, undefined, others);
      if (owner) {
        throw new InterfaceConflictError(
          `${name} is the host veth of ${owner} (its other end is in that pod's netns)`,
        );
      }
      // A pod interface of that name which is not the stale veth's other end would survive its
      // deletion: refused before anything changes (the stale veth may be the pod's old netns's).
      if (peer) throw notMadeByFlock(pod);
      deleteLink(this.node, host.index);
      host = undefined;
    }
    if (!host) {
      if (peer) throw notMadeByFlock(pod);
      const again = this.#createPair(pod, podNs, name);
      if (!again) throw new InterfaceConflictError(`${name} appeared while it was being repaired`);
      ({ host, peer } = again);
      created = true;
    }
    return { host, peer: peer!, created };
  }

  /**
   * Creates the pair; undefined if the host name or the pod's interface name exists. Both ends'
   * MACs are chosen here, derived from the attachment (veth_mac.ts), so a pair remade by a repair
   * has the MACs the runtime's cached result lists; they travel in the creating request, and the
   * kernel echoes the new host end with the peer's index, so a new pair needs one round trip.
   */
  #createPair(
    pod: PodNetwork,
    podNs: Handle,
    name: string,
  ): { host: Link; peer: Link } | undefined {
    const macs = vethMacs(pod.containerId, pod.ifname);
    let host: Link | undefined;
    try {
      host = addVeth(this.node, {
        name,
        peerName: pod.ifname,
        peerNetnsFd: podNs.netnsFd,
        mtu: pod.mtu,
        mac: macs.host,
        peerMac: macs.pod,
      });
    } catch (e) {
      if (isExists(e)) return undefined;
      throw e;
    }
    if (host?.peerIndex) {
      // Both ends were made with the same MTU, down, with the settings below still to apply.
      const peer: Link = {
        index: host.peerIndex,
        name: pod.ifname,
        flags: 0,
        up: false,
        mtu: host.mtu,
        mac: formatMac(macs.pod),
        kind: "veth",
      };
      return { host, peer };
    }
    // A kernel without the echo (before 6.3): look both ends up.
    host = getLinkByName(this.node, name);
    const peer = getLinkByName(podNs, pod.ifname);
    if (!host || !peer) throw new Error(`veth ${name} vanished right after creation`);
    return { host, peer };
  }

  /** Adds the host side's requests to `b`; returns whether one of them sets the veth up. */
  #configureHostSide(b: RequestBatch, pod: PodNetwork, host: Link): boolean {
    if (pod.mtu && host.mtu !== pod.mtu) setLinkMtu(b, host.index, pod.mtu);
    const ipv6 = carriesIPv6(pod);
    if (
      (ipv6 && host.ipv6AddrGenMode !== IN6_ADDR_GEN_MODE_NONE) || !host.ipv4?.forwarding ||
      !host.ipv4?.proxyArp
    ) {
      setLinkFamilySettings(b, host.index, {
        ipv6AddrGenMode: ipv6 ? IN6_ADDR_GEN_MODE_NONE : undefined,
        ipv4Forwarding: true,
        ipv4ProxyArp: true,
      });
      // Proxy ARP otherwise waits up to 0.8 s before answering for 169.254.1.1.
      setNeighTableParams(b, AF_INET, host.index, { proxyDelayMs: 0 });
    }
    // No fe80::/64 route per veth: the node never sends to a pod's link-local address (pods
    // have none), and every such route is one more entry the kernel walks on each link change.
    if (ipv6) {
      addAddress(b, {
        index: host.index,
        prefix: GATEWAY6_PREFIX,
        noDad: true,
        replace: true,
        flags: IFA_F_NOPREFIXROUTE,
      });
    }
    if (!host.up) setLinkUp(b, host.index);
    for (const ip of [pod.ipv6, pod.ipv4]) {
      if (ip) replaceRoute(b, hostRoute(ip, host.index));
    }
    return !host.up;
  }

  #configurePodSide(b: RequestBatch, pod: PodNetwork, peer: Link): void {
    if (pod.mtu && peer.mtu !== pod.mtu) setLinkMtu(b, peer.index, pod.mtu);
    if (carriesIPv6(pod) && peer.ipv6AddrGenMode !== IN6_ADDR_GEN_MODE_NONE) {
      setLinkFamilySettings(b, peer.index, { ipv6AddrGenMode: IN6_ADDR_GEN_MODE_NONE });
    }
    if (!peer.up) setLinkUp(b, peer.index);
    if (pod.ipv6) {
      ensureAddress(b, peer.index, hostPrefix(pod.ipv6));
      replaceRoute(b, {
        dst: DEFAULT6,
        gateway: GATEWAY6,
        oif: peer.index,
        prefsrc: sourceFor(pod, pod.ipv6),
      });
    }
    if (pod.ipv4) {
      ensureAddress(b, peer.index, hostPrefix(pod.ipv4));
      replaceRoute(b, { dst: hostPrefix(GATEWAY4), oif: peer.index, scope: RT_SCOPE_LINK });
      replaceRoute(b, {
        dst: DEFAULT4,
        gateway: GATEWAY4,
        oif: peer.index,
        prefsrc: sourceFor(pod, pod.ipv4),
      });
    }
    // After the pod's own addresses, so those stay the first (primary) ones of each family.
    for (const ip of pod.anycast ?? []) ensureAddress(b, peer.index, hostPrefix(ip));
  }

  /**
   * Removes the pod's veth (both ends) and its host routes. Everything already
   * gone is fine; the pod's namespace need not exist.
   */
  teardown(containerId: string, addresses: PodAddresses = {}): ForeignVeth | undefined {
    const host = getLinkByName(this.node, hostIfaceOf(containerId, addresses));
    const foreign = host && this.#foreignVeth(host, addresses);
    if (host && !foreign) deleteLink(this.node, host.index);
    this.#deleteLeftoverRoutes(addresses, foreign ? host : undefined);
    return foreign;
  }

  /**
   * The first half of a {@link teardown} that does not wait for the kernel: takes the pod off
   * the network at once (its host veth goes down, and with it every route through it), leaving
   * the veth's deletion, which waits tens of ms for RCU grace periods, to {@link removeVeth}.
   * Everything already gone is fine. With `nodeLinks` (one {@link nodeLinksByName} dump for many
   * pods, as GC and the start-up take it) the veth is looked up there, not asked for.
   *
   * The result's `veth` (the pod's own veth, or null when there is none) is what
   * {@link removeVeth} needs to skip its own look-up: 3 requests for a dual-stack pod here (link
   * down, one leftover-route delete per family) and 1 there, where there were 5 and 4.
   */
  detach(
    containerId: string,
    addresses: PodAddresses = {},
    nodeLinks?: ReadonlyMap<string, Link>,
  ): Detached {
    const name = hostIfaceOf(containerId, addresses);
    let host = nodeLinks ? nodeLinks.get(name) : getLinkByName(this.node, name);
    if (host) {
      const foreign = this.#foreignVeth(host, addresses);
      if (foreign) return { foreign };
      // Down takes every route through the veth with it (the kernel flushes a device's routes
      // on NETDEV_DOWN and refuses new ones through a down device, both families:
      // datapath_release_test.ts), so its host routes need no delete of their own.
      if (host.up) host = this.#setDownUnlessGone(host);
    }
    // A flock route to the pod's addresses through another link (one that outlived its device,
    // as a crash can leave it) goes by exact prefix: one request per family, no dump.
    this.#deleteLeftoverRoutes(addresses);
    return { veth: host ?? null };
  }

  /** Sets `host` down; undefined when it is gone (its pod's netns went with it, say). */
  #setDownUnlessGone(host: Link): Link | undefined {
    try {
      setLinkUp(this.node, host.index, false);
      return host;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /**
   * The second half: deletes the pod's veth (both ends) with the kernel's wait on a worker
   * thread, so the event loop keeps serving; resolves once it is gone (and any host route
   * that outlived it is removed).
   *
   * With `detached`, the {@link detach} of this pod (its container held since, so no one made
   * a veth of its name meanwhile): its veth is deleted by index without another look-up or
   * ownership check, and no route is deleted (those through the veth went with it, the others
   * went in detach); null: nothing is left to do. An ifindex is not reused while the kernel
   * has indexes it never handed out (it allocates them cyclically), so a veth that vanished
   * meanwhile cannot make this delete another link.
   */
  async removeVeth(
    containerId: string,
    addresses: PodAddresses = {},
    detached?: Link | null,
  ): Promise<ForeignVeth | undefined> {
    if (detached === null) return undefined;
    if (detached) {
      await deleteLinkOffThread(this.node, detached.index);
      return undefined;
    }
    const host = getLinkByName(this.node, hostIfaceOf(containerId, addresses));
    const foreign = host && this.#foreignVeth(host, addresses);
    if (host && !foreign) await deleteLinkOffThread(this.node, host.index);
    this.#deleteLeftoverRoutes(addresses, foreign ? host : undefined);
    return foreign;
  }

  /**
   * Host routes die with the link; these catch routes that outlived a lost link. Deleted by
   * exact prefix and flock's protocol, whatever their interface, so no route dump per pod;
   * with `spare` (another pod's veth), one dump, and the routes through it stay.
   */
  #deleteLeftoverRoutes(addresses: PodAddresses, spare?: Link): void {
    for (const ip of [addresses.ipv6, addresses.ipv4]) {
      if (!ip) continue;
      if (!spare) {
        deleteRoutesTo(this.node, hostPrefix(ip), FLOCK_ROUTE_PROTOCOL);
        continue;
      }
      for (const r of this.#flockRoutesTo(ip)) {
        if (r.oif !== spare.index) deleteRoute(this.node, r);
      }
    }
  }

  #flockRoutesTo(ip: IP): Route[] {
    return listRoutes(this.node, { family: ip.family, protocol: FLOCK_ROUTE_PROTOCOL })
      .filter((r) => routeMatches(r, hostPrefix(ip)));
  }

  /**
   * The host veth as another pod's, when its other end is in the netns of one of
   * `addresses.others` and not in `addresses.netns`; undefined when it is this pod's (or no
   * record's: an orphan of this pod's name). Costs one netns open when the veth is this pod's.
   */
  #foreignVeth(host: Link, addresses: PodAddresses): ForeignVeth | undefined {
    if (!addresses.others) return undefined;
    const owner = this.#otherOwner(host, addresses.netns, addresses.others);
    if (!owner) return undefined;
    const addressesInUse = [addresses.ipv6, addresses.ipv4].filter((ip): ip is IP =>
      ip !== undefined && this.#flockRoutesTo(ip).some((r) => r.oif === host.index)
    );
    return { hostIface: host.name, owner, addressesInUse };
  }

  /**
   * Which of `pods` holds the other end of the node's veth `host` (its label), if any: for a
   * flock veth no record names, which may still be a live pod's whose record names another.
   */
  podOwning(host: Link, pods: () => Iterable<PodSide>): string | undefined {
    return this.#otherOwner(host, undefined, pods);
  }

  /**
   * Which of `others` holds the other end of the host veth `host`, unless `ownNetns` does. A
   * peer on the node itself (a pair made in two steps) or no peer is nobody else's.
   */
  #otherOwner(
    host: Link,
    ownNetns: string | undefined,
    others: () => Iterable<PodSide>,
  ): string | undefined {
    if (host.kind !== "veth" || !host.peerIndex || host.peerNetnsId === undefined) return undefined;
    if (ownNetns !== undefined && this.#isPeerNetns(ownNetns, host)) return undefined;
    const tried = new Set([ownNetns]);
    for (const other of others()) {
      if (tried.has(other.netns)) continue;
      if (other.ifname === undefined) tried.add(other.netns);
      const holds = other.ifname === undefined
        ? this.#isPeerNetns(other.netns, host)
        : this.#holdsPeerOf(other.netns, host, other.ifname);
      if (holds) return other.label;
    }
    return undefined;
  }

  /**
   * Whether the netns at `path` is the one of `host`'s other end: the id the node knows it by is
   * the veth's IFLA_LINK_NETNSID (bench/veth_owner_bench.ts: ~20 µs, a quarter of opening the
   * netns). A path that is no netns (any more) is not.
   */
  #isPeerNetns(path: string, host: Link): boolean {
    try {
      return netnsIdOf(this.node, path) === host.peerNetnsId;
    } catch {
      return false;
    }
  }

  /**
   * Whether the netns at `path` holds the other end of `host`: its link of the peer's index
   * names `host` back (ifindexes are per netns; the pair check is what makes it the same veth).
   * A path that is no netns (any more) holds nothing. With `ifname`, the other end must be it.
   */
  #holdsPeerOf(path: string, host: Link, ifname?: string): boolean {
    let ns: Handle;
    try {
      ns = Handle.forNetns(path);
    } catch {
      return false;
    }
    try {
      const peer = getLinkByIndex(ns, host.peerIndex!);
      return peer?.kind === "veth" && peer.peerIndex === host.index &&
        (ifname === undefined || peer.name === ifname) && this.#peerIsIn(host, ns);
    } finally {
      ns.close();
    }
  }

  /**
   * Whether the other end of the node's veth `host` lives in the netns of `ns`: the id the node
   * knows that netns by is the veth's IFLA_LINK_NETNSID. Matching ifindexes alone cannot tell,
   * as ifindexes are per netns: two node namespaces on one kernel number their veths alike, and
   * every pod's eth0 has the same small index. One request (~20 µs), asked only once the
   * indexes match, never for a new pod's pair (its creation tells which netns it is in).
   */
  #peerIsIn(host: Link, ns: Handle): boolean {
    if (host.peerNetnsId === undefined) return false;
    return netnsIdOfFd(this.node, ns.netnsFd) === host.peerNetnsId;
  }

  /**
   * Puts back what the host veth's way down took and its way up does not restore: the kernel
   * flushes a device's routes and its IPv6 addresses when it goes down (`ip link set … down`),
   * so an up again veth lacks the pod's host routes and fe80::1. Restored by the requests of
   * setup's own host side, nothing else changed. Only on a veth that is up and whose other end
   * is in the pod's netns (`pod.netns`); undefined otherwise, with nothing changed: a veth left
   * down stays down (a route needs its device up, and an operator's down is not undone), a
   * missing one is the start-up's or an ADD's to remake, and another pod's veth is not routed
   * to this pod. Returns what was missing and is back (empty: nothing was).
   *
   * Cost when nothing is missing: 4 small requests (the link, its IPv6 addresses, its routes of
   * each family, filtered by the kernel); the ownership check (a netns open) only before a change.
   */
  restoreHostSide(pod: PodNetwork): string[] | undefined {
    validatePodNetwork(pod);
    const host = getLinkByName(this.node, hostIfaceOf(pod.containerId, pod));
    if (!host?.up || host.kind !== "veth") return undefined;
    const missing: string[] = [];
    if (carriesIPv6(pod) && !hasAddress(this.node, host.index, GATEWAY6_PREFIX)) {
      missing.push(`address ${formatIP(GATEWAY6_PREFIX.ip)}/${GATEWAY6_PREFIX.len}`);
    }
    for (const ip of [pod.ipv6, pod.ipv4]) {
      if (ip && !this.#hasHostRoute(ip, host)) missing.push(`route ${formatIP(ip)}`);
    }
    if (missing.length === 0) return missing;
    if (!this.#isPeerNetns(pod.netns, host)) return undefined;
    const hostSide = new RequestBatch(this.node);
    // Never sets the veth up (it is up: checked above), so a repair makes no up of its own.
    this.#configureHostSide(hostSide, pod, host);
    hostSide.flush();
    return missing;
  }

  /** Whether the node has flock's host route to `ip` through `host` (filtered by the kernel). */
  #hasHostRoute(ip: IP, host: Link): boolean {
    const routes = listRoutes(this.node, {
      family: ip.family,
      protocol: FLOCK_ROUTE_PROTOCOL,
      oif: host.index,
    });
    return routes.some((r) => routeMatches(r, hostPrefix(ip)));
  }

  /**
   * Lists every way the pod's datapath differs from the contract and from `expected`; empty when
   * it matches. The MACs are compared on the links read for the contract anyway (no extra
   * netlink call). `peerFound` is told the pod netns's identity when the host veth's other end
   * is its interface, whatever else differs.
   */
  check(
    pod: PodNetwork,
    expected: CheckExpectations = {},
    peerFound?: (identity: NetnsIdentity) => void,
  ): string[] {
    validatePodNetwork(pod);
    const problems: string[] = [];
    const name = hostIfaceOf(pod.containerId, pod);
    const host = getLinkByName(this.node, name);
    if (!host) return [`host interface ${name} is missing`];
    if (host.kind !== "veth") problems.push(`host interface ${name} is a ${host.kind}, not a veth`);
    if (!host.up) problems.push(`host interface ${name} is down`);
    if (pod.mtu && host.mtu !== pod.mtu) {
      problems.push(`host interface ${name} has mtu ${host.mtu}, want ${pod.mtu}`);
    }
    const hostMacProblem = macMismatch(`host interface ${name}`, host, expected.hostMac);
    if (hostMacProblem) problems.push(hostMacProblem);
    if (carriesIPv6(pod) && host.ipv6AddrGenMode !== IN6_ADDR_GEN_MODE_NONE) {
      problems.push(
        `host interface ${name} has IPv6 addr_gen_mode ${host.ipv6AddrGenMode}, not none`,
      );
    }
    if (!host.ipv4?.forwarding) problems.push(`host interface ${name} has IPv4 forwarding off`);
    if (!host.ipv4?.proxyArp) problems.push(`host interface ${name} has proxy_arp off`);
    if (carriesIPv6(pod) && !hasAddress(this.node, host.index, GATEWAY6_PREFIX)) {
      problems.push(`host interface ${name} lacks fe80::1/64`);
    }
    let podNs: Handle;
    try {
      podNs = Handle.forNetns(pod.netns);
    } catch (e) {
      problems.push((e as Error).message);
      return problems;
    }
    try {
      const peer = getLinkByName(podNs, pod.ifname);
      if (!peer) {
        problems.push(`pod interface ${pod.ifname} is missing in ${pod.netns}`);
      } else {
        if (!paired(host, peer) || !this.#peerIsIn(host, podNs)) {
          problems.push(`${pod.ifname} is not the peer of ${name}`);
        } else {
          peerFound?.(netnsIdentityOfFd(podNs.netnsFd));
        }
        if (!peer.up) problems.push(`pod interface ${pod.ifname} is down`);
        if (pod.mtu && peer.mtu !== pod.mtu) {
          problems.push(`pod interface ${pod.ifname} has mtu ${peer.mtu}, want ${pod.mtu}`);
        }
        const podMacProblem = macMismatch(`pod interface ${pod.ifname}`, peer, expected.podMac);
        if (podMacProblem) problems.push(podMacProblem);
        const podAddrs = listAddresses(podNs, { index: peer.index });
        const wanted = podAddresses(pod);
        const extra = podAddrs.filter((a) => !wanted.some((ip) => isHostAddress(a, ip)));
        for (const a of extra) {
          problems.push(
            `pod interface has unexpected address ${formatIP(a.prefix.ip)}/${a.prefix.len}`,
          );
        }
        for (const ip of pod.anycast ?? []) {
          const a = podAddrs.find((x) => isHostAddress(x, ip));
          if (!a) problems.push(`pod interface lacks anycast address ${formatIP(ip)}`);
          else if (a.flags & IFA_F_TENTATIVE) {
            problems.push(`pod anycast address ${formatIP(ip)} is tentative`);
          }
        }
        for (const ip of [pod.ipv6, pod.ipv4]) {
          if (!ip) continue;
          const a = podAddrs.find((x) => isHostAddress(x, ip));
          if (!a) {
            problems.push(`pod interface lacks ${familyName(ip.family)} address ${formatIP(ip)}`);
          } else if (a.flags & IFA_F_TENTATIVE) {
            problems.push(`pod address ${formatIP(ip)} is tentative`);
          }
          const gw = ip.family === AF_INET6 ? GATEWAY6 : GATEWAY4;
          const def = ip.family === AF_INET6 ? DEFAULT6 : DEFAULT4;
          const defaults = listRoutes(podNs, { family: ip.family }).filter((r) =>
            routeMatches(r, def) && r.gateway && ipEqual(r.gateway, gw) && r.oif === peer.index
          );
          if (defaults.length === 0) {
            problems.push(
              `pod lacks the ${familyName(ip.family)} default route via ${formatIP(gw)}`,
            );
          }
          const src = sourceFor(pod, ip);
          if (src && !defaults.some((r) => r.prefsrc && ipEqual(r.prefsrc, src))) {
            problems.push(`pod default route via ${formatIP(gw)} lacks src ${formatIP(src)}`);
          }
          if (!this.#hasHostRoute(ip, host)) {
            problems.push(`node lacks the flock route ${formatIP(ip)} dev ${name}`);
          }
        }
      }
    } finally {
      podNs.close();
    }
    return problems;
  }
}

/**
 * Why `link`'s MAC is not `want`, or undefined when it is or nothing is wanted. Compared without
 * case: a result written by another tool may spell the hex digits in capitals.
 */
function macMismatch(what: string, link: Link, want: string | undefined): string | undefined {
  if (want === undefined || link.mac.toLowerCase() === want.toLowerCase()) return undefined;
  return `${what} has mac ${link.mac}, want ${want}`;
}

function notMadeByFlock(pod: PodNetwork): InterfaceConflictError {
  return new InterfaceConflictError(
    `interface ${pod.ifname} already exists in ${pod.netns} and was not made by flock`,
  );
}

/**
 * Whether the two links name each other as their veth peer by index. Not enough alone: the
 * indexes are per netns (see Datapath's #peerIsIn).
 */
function paired(host: Link, peer: Link): boolean {
  return host.peerIndex === peer.index && peer.peerIndex === host.index;
}

function hasAddress(h: Handle, index: number, p: Prefix): boolean {
  return listAddresses(h, { family: p.ip.family, index }).some((a) =>
    a.prefix.len === p.len && ipEqual(a.prefix.ip, p.ip)
  );
}

/**
 * A reused pod interface may carry an address of an earlier attempt (a retry that got another
 * address from IPAM): removes what the pod should not have.
 */
function removeStrayAddresses(pod: PodNetwork, podNs: Handle, peer: Link): void {
  const wanted = podAddresses(pod);
  for (const a of listAddresses(podNs, { index: peer.index })) {
    if (!wanted.some((ip) => isHostAddress(a, ip))) deleteAddress(podNs, peer.index, a.prefix);
  }
}

/**
 * Whether `a` is `ip` as flock assigns it, a /128 or /32: the same address with a shorter prefix
 * (added by hand) also puts a connected route in the pod, so it is not the contract's.
 */
function isHostAddress(a: Address, ip: IP): boolean {
  return a.prefix.len === hostPrefix(ip).len && ipEqual(a.prefix.ip, ip);
}

function ensureAddress(h: Requester, index: number, p: Prefix): void {
  addAddress(h, { index, prefix: p, noDad: true, replace: true });
}
