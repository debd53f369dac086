/**
 * The node's routing (BRIEF §4): the flock-tagged blackhole summary routes BIRD learns and
 * announces, and bird.conf rendered from the NodeConfig (plus, with the node mesh, the other
 * nodes) and applied through {@link BirdControl}.
 *
 * Anycast and per-pod routes never go through here: BIRD's kernel protocol learns anycast host
 * routes from netlink on its own, so a pod ADD never waits for a reload.
 *
 * @module
 */

import {
  type Address,
  AddressEvents,
  AF_INET,
  AF_INET6,
  deleteRoute,
  formatIP,
  formatPrefix,
  type Handle,
  IFA_F_TENTATIVE,
  type IP,
  ipEqual,
  listAddresses,
  listRoutes,
  type Prefix,
  prefixContains,
  replaceRoute,
  routeMatches,
  RT_SCOPE_UNIVERSE,
  RTN_BLACKHOLE,
  tryParseIP,
} from "../netlink/mod.ts";
import {
  type BirdConfigInput,
  type BirdMeshPeer,
  peersWithoutIpv6,
  renderBirdConfig,
} from "../bird/config.ts";
import { BirdControl, type BirdReloadStatus } from "../bird/control.ts";
import { type NodeConfig, secretKeyId } from "./config.ts";
import { FLOCK_ROUTE_PROTOCOL } from "./datapath.ts";
import { fnv1a32 } from "./fnv.ts";
import { FailureStreak } from "./failure_streak.ts";
import { type KernelRetryOptions, retryWhileKernelBusy } from "./kernel_busy.ts";
import { backoffMs } from "./backoff.ts";

/** Where BIRD is, when the agent drives one. */
export interface BirdTarget {
  configPath: string;
  socketPath: string;
  birdcPath?: string;
  birdPath?: string;
  coalesceMs?: number;
  /** Bound on one birdc call (default 10 s): past it the reload is `failed` and retried. */
  commandTimeoutMs?: number;
  /** First pause before a failed or unreachable reload is retried (default 2 s, doubling to 30 s). */
  retryMs?: number;
  /**
   * Period of the check that BIRD has not stopped or restarted since it took the config
   * (default {@link BIRD_WATCH_MS}; 0: off). A restarted BIRD runs whatever bird.conf it
   * found (a stale or bootstrap one): the agent applies its config again.
   */
  watchMs?: number;
  /**
   * Period of the read of the node's address change notifications (default
   * {@link ADDRESS_POLL_MS}; 0: off). A global address added or removed (lo, an uplink) can
   * change the IPv6 next hop bird.conf gives; the config is rendered again and BIRD reloads only
   * when the text changed.
   */
  addressPollMs?: number;
}

/** Default period of the BIRD restart check (one lstat and one connect per round). */
export const BIRD_WATCH_MS = 3_000;

/** Default period of the address change read (one non-blocking recv per round). */
export const ADDRESS_POLL_MS = 500;

/**
 * How long after an address change bird.conf is rendered again: the changes of one operation
 * (an address and its route, both families) land in one render.
 */
const ADDRESS_SETTLE_MS = 200;

/**
 * Pause before a failed bird.conf render (the address dump it needs interrupted by a busy
 * kernel, say) is tried again, doubled per failure in a row up to {@link RENDER_RETRY_MAX_MS}:
 * without a retry the config reached BIRD only at the next event, in standalone mode maybe never.
 */
const RENDER_RETRY_MIN_MS = 200;
/** Longest pause between two tries of a failed render. */
const RENDER_RETRY_MAX_MS = 30_000;

/**
 * The name of the summary routes' dump of flock's routes, in its errors: the same request as the
 * other readers of flock's routes (the host side repair, anycast, withheld addresses), told apart
 * in a log and by a test that interrupts this read alone.
 */
export const SUMMARY_ROUTES_DUMP = "list flock's routes for the summaries";

/** Another node of the mesh, as the cluster (or a file) describes it. */
export interface MeshPeer {
  /** The node's name (a comment in bird.conf). */
  name: string;
  /** The address this node peers with. */
  address: string;
  asn: number;
  /** Its summary CIDRs: the only prefixes it may announce besides anycast host routes. */
  cidrs: string[];
  anycastCIDRs?: string[];
  password?: string;
  bfd?: boolean;
}

/** Options of {@link NodeRouting}. */
export interface NodeRoutingOptions {
  handle: Handle;
  nodeName: string;
  /** The node's own addresses (cluster mode: its Node's InternalIPs), for the router id. */
  nodeAddresses?: readonly string[];
  /** Passwords of the peers' `passwordSecretRef`s, by {@link secretKeyId} (cluster mode). */
  secretPasswords?: ReadonlyMap<string, string>;
  bird?: BirdTarget;
  log: (fields: Record<string, unknown>) => void;
  /**
   * Called after every BIRD reload attempt, including the retries of a failed or unreachable
   * one that no caller awaits (`flock status` must see a retry succeed).
   */
  onBirdReload?: (status: BirdReloadStatus) => void;
}

/** The BGP graceful restart time when the NodeConfig does not set one. */
export const DEFAULT_RESTART_TIME = 120;

/** Where a node's BGP router id came from (`flock status --json` shows it). */
export type RouterIdSource = "bgp.routerID" | "nodeInternalIP" | "nodeNameHash";

/** A BGP router id and where it came from. */
export interface RouterId {
  id: string;
  source: RouterIdSource;
}

/**
 * The router id: `bgp.routerID` when set; else the node's first IPv4 address among
 * `nodeAddresses` (cluster mode: its Node's InternalIPs), unique within a cluster; else a hash
 * of the node name (FNV-1a-32), stable across restarts and needing no IPv4 address (IPv6-only
 * nodes have none to offer), but two of a large cluster's nodes may share it and then cannot
 * keep a session with each other.
 */
export function routerIdFor(
  node: NodeConfig,
  nodeName: string,
  nodeAddresses: readonly string[] = [],
): RouterId {
  if (node.spec.bgp?.routerID) return { id: node.spec.bgp.routerID, source: "bgp.routerID" };
  for (const text of nodeAddresses) {
    const ip = tryParseIP(text);
    // 0.0.0.0 is not a valid router id.
    if (ip?.family === AF_INET && ip.bytes.some((b) => b !== 0)) {
      return { id: formatIP(ip), source: "nodeInternalIP" };
    }
  }
  let hash = fnv1a32(nodeName);
  if (hash === 0) hash = 1; // 0.0.0.0 is not a valid router id
  return {
    id: [hash >>> 24, (hash >>> 16) & 255, (hash >>> 8) & 255, hash & 255].join("."),
    source: "nodeNameHash",
  };
}

/** IFA_F_DADFAILED: a duplicate address the kernel will not use. */
const IFA_F_DADFAILED = 0x08;
/** IFA_F_TEMPORARY (RFC 4941 privacy address, replaced every few hours) and IFA_F_DEPRECATED. */
const IFA_F_TEMPORARY = 0x01;
const IFA_F_DEPRECATED = 0x20;

/**
 * Whether `ip` can be the node's IPv6 next hop: global unicast, not link-local, loopback,
 * IPv4-mapped or multicast, and not inside the node's own pod or anycast ranges.
 */
function usableNextHop6(node: NodeConfig, ip: IP): boolean {
  const b = ip.bytes;
  if (ip.family !== AF_INET6) return false;
  if (b[0] === 0xff || (b[0] === 0xfe && (b[1] & 0xc0) === 0x80)) return false;
  // ::/8 holds ::, ::1 and ::ffff:a.b.c.d (IPv4-mapped, what a peer cannot route to).
  if (b[0] === 0) return false;
  return ![node.cidr6, ...node.anycast6].some((p) => p && prefixContains(p, ip));
}

/**
 * The node's addresses, each family dumped at most once: one bird.conf render asks half a dozen
 * questions of them (next-hop candidates, each peer's link, links without IPv6, …), which were as
 * many address dumps. Made per render, so it never outlives the addresses it read.
 */
export class NodeAddressSnapshot {
  readonly #byFamily = new Map<number, Address[]>();
  constructor(readonly handle: Handle) {}

  /** The node's addresses of `family`, from one dump. */
  list(family: typeof AF_INET | typeof AF_INET6): Address[] {
    let addresses = this.#byFamily.get(family);
    if (!addresses) this.#byFamily.set(family, addresses = listAddresses(this.handle, { family }));
    return addresses;
  }
}

/** Where the functions below read the node's addresses: a handle (one dump each) or a snapshot. */
export type NodeAddressSource = Handle | NodeAddressSnapshot;

function addressesOf(
  source: NodeAddressSource,
  family: typeof AF_INET | typeof AF_INET6,
): Address[] {
  return source instanceof NodeAddressSnapshot
    ? source.list(family)
    : listAddresses(source, { family });
}

/**
 * The node's global IPv6 addresses that passed duplicate address detection, in the kernel's
 * order except that temporary (privacy) and deprecated ones come last: a next hop picked from
 * them should not be one the kernel is about to retire, which would change bird.conf again.
 */
function settledGlobalIpv6(h: NodeAddressSource) {
  const settled = addressesOf(h, AF_INET6)
    .filter((a) => a.scope === RT_SCOPE_UNIVERSE)
    .filter((a) => (a.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)) === 0);
  const shortLived = (a: { flags: number }) =>
    (a.flags & (IFA_F_TEMPORARY | IFA_F_DEPRECATED)) !== 0;
  return [...settled.filter((a) => !shortLived(a)), ...settled.filter(shortLived)];
}

/**
 * The global IPv6 addresses of the node's interfaces, lowest interface index first (a loopback
 * address, where fabrics put a node's routable one, before the uplinks'); addresses still in
 * duplicate address detection, failed it, or in the node's own pod ranges are left out.
 */
export function kernelNextHop6Candidates(h: NodeAddressSource, node: NodeConfig): string[] {
  return settledGlobalIpv6(h)
    .filter((a) => usableNextHop6(node, a.prefix.ip))
    .sort((a, b) => a.index - b.index)
    .map((a) => formatIP(a.prefix.ip));
}

/**
 * The single-hop IPv4 peers among `peers` whose link has no global IPv6 address: the interface
 * with an IPv4 subnet holding the peer (BIRD's neighbour lookup for a direct session) carries
 * none, so BIRD would announce `::` as next hop of IPv6 routes there. A peer on no connected
 * subnet is not named (its direct session does not come up at all).
 */
export function peersOnLinksWithoutIpv6(
  h: NodeAddressSource,
  peers: readonly string[],
): Set<string> {
  const links = ipv4PeerLinks(h, peers);
  if (!links.size) return new Set();
  const linksWithIpv6 = new Set(settledGlobalIpv6(h).map((a) => a.index));
  return new Set(
    [...links].filter(([, link]) => link !== undefined && !linksWithIpv6.has(link)).map(([p]) => p),
  );
}

/**
 * The global IPv6 address of each single-hop IPv4 peer's link, by peer (the first the kernel
 * lists there that can be a next hop); peers whose link has none, or that no link holds, are not
 * in it. bird.conf gives it as the next hop of IPv6 routes on that session: BIRD's own pick is
 * fixed when the session comes up, so a link that got its address later (SLAAC, DHCPv6 after
 * boot) would be announced `::` and every IPv6 route withdrawn.
 */
export function linkNextHop6ByPeer(
  h: NodeAddressSource,
  node: NodeConfig,
  peers: readonly string[],
): Map<string, string> {
  const links = ipv4PeerLinks(h, peers);
  const out = new Map<string, string>();
  if (!links.size) return out;
  const usable = settledGlobalIpv6(h).filter((a) => usableNextHop6(node, a.prefix.ip));
  for (const [peer, link] of links) {
    const address = usable.find((a) => a.index === link);
    if (link !== undefined && address) out.set(peer, formatIP(address.prefix.ip));
  }
  return out;
}

/**
 * The IPv4 peers among `peers` (single-hop ones: pass only those) on no link where the node has
 * an IPv4 address: no interface has an IPv4 subnet holding the peer (an unnumbered link, the
 * node's IPv4 a /32 on lo, or the peer's address mistyped). BIRD has no IPv4 source address to
 * run the direct session from, nor one to give as the next hop of IPv4 routes: it waits for the
 * peer to become a neighbour and announces nothing. The config stays as it is (the session
 * comes up, with a usable next hop, as soon as the link gets an address); the log and
 * `flock status` name such peers instead of leaving a session silently idle.
 */
export function peersWithoutIpv4Link(h: NodeAddressSource, peers: readonly string[]): string[] {
  return [...ipv4PeerLinks(h, peers)].filter(([, link]) => link === undefined).map(([p]) => p)
    .sort();
}

/**
 * The IPv4 peers among `peers`, each with the index of the interface that has it as a neighbour,
 * or undefined. As BIRD's neighbour lookup for a direct session (nest/neighbor.c): an IPv4
 * subnet of the node holding the peer (a /32 holds no neighbour), or a point-to-point address
 * (`ip addr add A peer B`) whose other end is the peer.
 */
function ipv4PeerLinks(
  h: NodeAddressSource,
  peers: readonly string[],
): Map<string, number | undefined> {
  const out = new Map<string, number | undefined>();
  const v4 = peers.filter((p) => tryParseIP(p)?.family === AF_INET);
  if (!v4.length) return out;
  const addresses = addressesOf(h, AF_INET);
  const holds = (a: (typeof addresses)[number], ip: IP) =>
    (a.peer !== undefined && ipEqual(a.peer, ip)) ||
    (a.prefix.len < 32 && prefixContains(a.prefix, ip));
  for (const peer of v4) {
    const ip = tryParseIP(peer)!;
    out.set(peer, addresses.find((a) => holds(a, ip))?.index);
  }
  return out;
}

/**
 * Whether `ip` can be the source of an IPv4 BGP session: not 0.0.0.0/8, loopback (127/8) or
 * link-local (169.254/16, the pods' gateway lives there).
 */
function usableSource4(ip: IP): boolean {
  const [a, b] = ip.bytes;
  return a !== 0 && a !== 127 && !(a === 169 && b === 254);
}

/**
 * The IPv4 multihop peers among `peers` (pass only those) when the node has no usable IPv4
 * address at all (an IPv6-only node): the kernel has no source address for the session's
 * connection, so BIRD never reaches the peer and announces it nothing. Empty when the node has
 * one (a /32 on lo will do) or no peer is IPv4.
 */
export function peersWithoutIpv4Address(h: NodeAddressSource, peers: readonly string[]): string[] {
  const v4 = peers.filter((p) => tryParseIP(p)?.family === AF_INET);
  if (!v4.length) return [];
  const hasSource = addressesOf(h, AF_INET)
    .some((a) => a.scope === RT_SCOPE_UNIVERSE && usableSource4(a.prefix.ip));
  return hasSource ? [] : v4.sort();
}

/**
 * The IPv6 next hop for IPv6 routes on IPv4 multihop sessions: the node's first global IPv6
 * address among `nodeAddresses` (cluster mode: its Node's InternalIPs), else among
 * `localIpv6` (its interfaces' addresses, {@link kernelNextHop6Candidates}). `null` when both
 * are known and hold none (such sessions then carry no IPv6 routes); `undefined` when
 * `localIpv6` is not known (BIRD picks one of the session interface's addresses).
 */
export function nextHop6For(
  node: NodeConfig,
  nodeAddresses: readonly string[],
  localIpv6?: readonly string[],
): string | null | undefined {
  for (const text of [...nodeAddresses, ...localIpv6 ?? []]) {
    const ip = tryParseIP(text);
    if (ip && usableNextHop6(node, ip)) return formatIP(ip);
  }
  return localIpv6 === undefined ? undefined : null;
}

/** The node's summary CIDRs (IPv6 first). */
export function summaryPrefixes(node: NodeConfig): Prefix[] {
  return [node.cidr6, node.cidr4].filter((p): p is Prefix => p !== undefined);
}

/**
 * What {@link renderBirdConfig} gets for a node and its mesh peers. A peer whose password is in
 * a Secret gets it from `secretPasswords` (by {@link secretKeyId}); one whose Secret could not be
 * read is left out: rendered without its password it would run an unprotected session, or none.
 */
export function birdInputFor(
  node: NodeConfig,
  nodeName: string,
  meshPeers: MeshPeer[],
  nodeAddresses: readonly string[] = [],
  secretPasswords: ReadonlyMap<string, string> = new Map(),
  localIpv6?: readonly string[],
  linksWithoutIpv6: ReadonlySet<string> = new Set(),
  linkNextHops6: ReadonlyMap<string, string> = new Map(),
): BirdConfigInput {
  const bgp = node.spec.bgp ?? {};
  // Only single-hop sessions: a multihop one gets the node's global IPv6 anyway.
  const bareLink = (p: { address: string; multihop?: number }) => {
    if (p.multihop !== undefined) return {};
    if (linksWithoutIpv6.has(p.address)) return { linkWithoutIpv6: true };
    const linkNextHop6 = linkNextHops6.get(p.address);
    return linkNextHop6 === undefined ? {} : { linkNextHop6 };
  };
  const mesh: BirdMeshPeer[] = bgp.nodeMesh
    ? meshPeers.map((p) => ({
      ...bareLink(p),
      address: p.address,
      asn: p.asn,
      cidrs: p.cidrs,
      anycastCIDRs: p.anycastCIDRs,
      password: p.password,
      bfd: p.bfd,
      description: p.name,
    }))
    : [];
  return {
    routerId: routerIdFor(node, nodeName, nodeAddresses).id,
    cidrs: summaryPrefixes(node).map(formatPrefix),
    anycastCIDRs: [...node.anycast6, ...node.anycast4].map(formatPrefix),
    routeProtocol: FLOCK_ROUTE_PROTOCOL,
    asn: bgp.asn,
    peers: (bgp.peers ?? []).flatMap(({ passwordSecretRef: ref, ...peer }) => {
      if (!ref) return [{ ...peer, ...bareLink(peer) }];
      const password = secretPasswords.get(secretKeyId(ref));
      return password === undefined ? [] : [{ ...peer, ...bareLink(peer), password }];
    }),
    meshPeers: mesh,
    gracefulRestart: {
      enabled: bgp.gracefulRestart?.enabled ?? true,
      restartTime: bgp.gracefulRestart?.restartTime ?? DEFAULT_RESTART_TIME,
    },
    nextHop6: nextHop6For(node, nodeAddresses, localIpv6),
  };
}

/** Render failures NodeRouting counted (its failure streak logs them) and retries itself. */
const handledRenderFailures = new WeakSet<object>();

/**
 * Whether `e`, thrown by a NodeRouting method, is a bird.conf render failure that NodeRouting
 * logs and retries itself: a caller logging it too would log each failure twice.
 */
export function isHandledRenderFailure(e: unknown): boolean {
  return typeof e === "object" && e !== null && handledRenderFailures.has(e);
}

/** Installs summary blackholes and keeps BIRD's config in step with the node. */
export class NodeRouting {
  readonly #o: NodeRoutingOptions;
  readonly control?: BirdControl;
  #node?: NodeConfig;
  #mesh: MeshPeer[] = [];
  #nodeAddresses: readonly string[];
  #secretPasswords: ReadonlyMap<string, string>;
  /** Summaries of an earlier NodeConfig that still hold pods: kept until their last pod goes. */
  #draining: Prefix[] = [];
  #holdsPods: (dst: Prefix) => boolean = () => false;
  /** Failed {@link pruneDraining} rounds in a row (logged when they start and end). */
  readonly #pruneFailures: FailureStreak;
  /** Peers whose sessions carry no IPv6 routes (no global IPv6 next hop), as last logged. */
  #withoutIpv6: readonly string[] = [];
  /** Single-hop IPv4 peers without an IPv4 address of the node on their link, as last logged. */
  #withoutIpv4Link: readonly string[] = [];
  /** IPv4 multihop peers on a node without any usable IPv4 address, as last logged. */
  #withoutIpv4Address: readonly string[] = [];

  /** The node's address notifications, while BIRD is driven and the poll is on. */
  #addressEvents?: AddressEvents;
  #addressPoll?: ReturnType<typeof setInterval>;
  #addressSettle?: ReturnType<typeof setTimeout>;
  /** Failed reads of the address notifications in a row (logged when they start and end). */
  readonly #addressReadFailures: FailureStreak;
  /**
   * The bird.conf text last handed to BIRD; cleared when BIRD neither took nor judged it
   * (failed, unreachable), so that the next address change hands it over again. A text BIRD
   * rejected stays: the address path does not hand it over again, and BirdControl does not
   * re-send it from the other paths either (it owns "which text BIRD has or refused").
   */
  #renderedText?: string;
  /** The next try of a render that failed; cancelled by any newer render and by close. */
  #renderRetry?: ReturnType<typeof setTimeout>;
  /** Failed renders in a row (the retry's backoff; logged when they start and end). */
  readonly #renderFailures: FailureStreak;
  #closed = false;

  constructor(options: NodeRoutingOptions) {
    this.#o = options;
    this.#pruneFailures = new FailureStreak("pruning draining summary routes", options.log);
    this.#addressReadFailures = new FailureStreak("reading address changes", options.log);
    this.#renderFailures = new FailureStreak(
      "rendering bird.conf",
      options.log,
      "retrying with backoff",
    );
    this.#nodeAddresses = [...options.nodeAddresses ?? []];
    this.#secretPasswords = options.secretPasswords ?? new Map();
    if (options.bird) {
      this.control = new BirdControl({
        configPath: options.bird.configPath,
        socketPath: options.bird.socketPath,
        birdcPath: options.bird.birdcPath,
        birdPath: options.bird.birdPath,
        coalesceMs: options.bird.coalesceMs,
        commandTimeoutMs: options.bird.commandTimeoutMs,
        retryMs: options.bird.retryMs,
        watchMs: options.bird.watchMs ?? BIRD_WATCH_MS,
        log: options.log,
        onAttempt: options.onBirdReload,
      });
    }
  }

  /** Whether a flock-tagged route to `dst` is one of this node's summaries (reconcile keeps it). */
  ownsRoute(dst: Prefix): boolean {
    return !!this.#node && isSummaryRoute(this.#node, dst);
  }

  /**
   * Takes a (new) NodeConfig: installs its summary blackholes, removes flock blackholes that
   * are no longer summaries, and has BIRD reload if its config changed. The promise settles
   * when BIRD has answered: {@link applyConfig} then {@link reloadBird}, the two halves, for a
   * caller that waits for the kernel part only.
   */
  async configure(
    node: NodeConfig,
    holdsPods: (dst: Prefix) => boolean = () => false,
  ): Promise<BirdReloadStatus | undefined> {
    await this.applyConfig(node, holdsPods);
    return this.reloadBird();
  }

  /**
   * The kernel half of {@link configure}: the summary blackholes of `node` are in place (and
   * stale ones gone) once this resolves. A dump a busy kernel interrupts is read again after an
   * awaited pause (kernel_busy.ts): requests and STATUS are answered meanwhile.
   *
   * With `keepOnSummaryFailure` (an agent reconfigure, which applies its config whole whatever
   * its summary routes do), `node` stays in force when they fail: every later render, and the
   * {@link reloadBird} the caller then asks for, hands BIRD its BGP part.
   *
   * @throws {KernelBusyError} when the kernel stays too busy to list flock's routes
   */
  async applyConfig(
    node: NodeConfig,
    holdsPods: (dst: Prefix) => boolean = () => false,
    { keepOnSummaryFailure = false }: { keepOnSummaryFailure?: boolean } = {},
  ): Promise<void> {
    const before = { node: this.#node, holdsPods: this.#holdsPods };
    this.#node = node;
    this.#holdsPods = holdsPods;
    try {
      await this.#syncSummaries();
    } catch (e) {
      // Otherwise not in force, as the caller reports: a later render (an address change, a mesh
      // or Secret update) must not hand BIRD the BGP part of a config the agent says it did not
      // apply. A failed first config goes too: "nothing applied yet" renders nothing.
      if (keepOnSummaryFailure) this.#watchAddresses();
      else if (this.#node === node) {
        [this.#node, this.#holdsPods] = [before.node, before.holdsPods];
      }
      throw e;
    }
    this.#watchAddresses();
  }

  /** Hands the current bird.conf to BIRD (when driven); settles when BIRD has answered. */
  reloadBird(): Promise<BirdReloadStatus | undefined> {
    return this.#render();
  }

  /**
   * Subscribes to the node's address changes (once): the next hops bird.conf gives come from
   * the addresses the node has, in standalone mode as in cluster mode.
   */
  #watchAddresses(): void {
    const pollMs = this.#o.bird?.addressPollMs ?? ADDRESS_POLL_MS;
    if (!this.control || this.#addressEvents || pollMs <= 0) return;
    this.#addressEvents = AddressEvents.open(this.#o.handle);
    this.#addressPoll = setInterval(() => this.#pollAddresses(), pollMs);
    Deno.unrefTimer(this.#addressPoll);
  }

  #pollAddresses(): void {
    let changed: boolean;
    try {
      changed = this.#addressEvents?.globalAddressChanged() ?? false;
      this.#addressReadFailures.succeeded();
    } catch (e) {
      this.#addressReadFailures.failed(e);
      return;
    }
    if (!changed || this.#addressSettle !== undefined) return;
    this.#addressSettle = setTimeout(() => {
      this.#addressSettle = undefined;
      this.#render({ onlyIfChanged: "the node's addresses changed" }).catch((e) => {
        if (!isHandledRenderFailure(e)) {
          this.#o.log({ level: "error", msg: "bird config failed", error: String(e) });
        }
      });
    }, ADDRESS_SETTLE_MS);
  }

  /**
   * Drops draining summaries (CIDRs of an earlier NodeConfig) whose last pod has gone; call
   * after DEL and GC. Cheap when nothing drains.
   */
  async pruneDraining(): Promise<BirdReloadStatus | undefined> {
    if (this.#draining.length === 0 || !this.#node) return undefined;
    const before = this.#draining.length;
    try {
      // One try: every DEL and GC calls this, and the next one retries; no need to wait here.
      await this.#syncSummaries({ attempts: 1 });
      this.#pruneFailures.succeeded();
    } catch (e) {
      // Called after a DEL or GC that succeeded: that answer must stand. The draining routes
      // stay as they are (announcing a little longer is harmless); the next DEL or GC retries.
      this.#pruneFailures.failed(e);
      return undefined;
    }
    return this.#draining.length === before ? undefined : this.#render();
  }

  /** Summaries of an earlier NodeConfig still announced because pods hold addresses in them. */
  get draining(): readonly Prefix[] {
    return this.#draining;
  }

  /** Replaces the list of other nodes (cluster mode's NodeConfig watch calls this). */
  setMeshPeers(peers: MeshPeer[]): Promise<BirdReloadStatus | undefined> {
    this.#mesh = [...peers];
    return this.#render();
  }

  /**
   * Replaces the node's own addresses (its Node's InternalIPs changed); BIRD reloads if that
   * changes the router id.
   */
  setNodeAddresses(addresses: readonly string[]): Promise<BirdReloadStatus | undefined> {
    this.#nodeAddresses = [...addresses];
    return this.#render();
  }

  /**
   * Replaces the passwords read from the peers' Secrets (cluster mode); BIRD reloads if that
   * changes bird.conf (a peer comes back, a password rotated).
   */
  setSecretPasswords(
    passwords: ReadonlyMap<string, string>,
  ): Promise<BirdReloadStatus | undefined> {
    this.#secretPasswords = passwords;
    return this.#render();
  }

  /** The router id bird.conf has, when the agent drives BIRD and has a config. */
  routerId(): RouterId | undefined {
    if (!this.control || !this.#node) return undefined;
    return routerIdFor(this.#node, this.#o.nodeName, this.#nodeAddresses);
  }

  /** The last reload's status, when the agent drives BIRD. */
  birdStatus(): BirdReloadStatus | undefined {
    return this.control ? { ...this.control.status } : undefined;
  }

  /** Stops BIRD retries; the kernel routes stay (BIRD keeps announcing them). */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#renderRetry);
    clearInterval(this.#addressPoll);
    clearTimeout(this.#addressSettle);
    this.#addressSettle = undefined;
    this.#addressEvents?.close();
    await this.control?.close();
  }

  /** Makes flock's blackholes the summaries of the NodeConfig in force; see {@link configure}. */
  async #syncSummaries(retry?: KernelRetryOptions): Promise<void> {
    const h = this.#o.handle;
    const draining: Prefix[] = [];
    for (const family of [AF_INET6, AF_INET] as const) {
      // Whole or not at all: a summary missing from a partial dump would count as stale.
      const present = (await retryWhileKernelBusy(
        "summary routes: list flock's routes",
        () => listRoutes(h, { family, protocol: FLOCK_ROUTE_PROTOCOL }, SUMMARY_ROUTES_DUMP),
        retry,
      )).filter((r) => r.type === RTN_BLACKHOLE);
      // The config in force now, not when the call began: a newer one may have come during the
      // pauses (a second SIGHUP), and this older call, done last, must not bring its CIDRs back.
      const wanted = summaryPrefixes(this.#node!);
      for (const r of present) {
        if (wanted.some((p) => routeMatches(r, p))) continue;
        if (this.#holdsPods(r.dst)) {
          // The node moved to another CIDR: its pods there stay reachable from other nodes
          // until they are gone (an operator drains the node to finish the move).
          draining.push(r.dst);
          continue;
        }
        deleteRoute(h, r);
        this.#o.log({ msg: "removed stale summary route", dst: formatPrefix(r.dst) });
      }
      for (const p of wanted.filter((w) => w.ip.family === family)) {
        // Only when missing: a replace is a netlink event BIRD would process for nothing.
        if (present.some((r) => routeMatches(r, p))) continue;
        replaceRoute(h, { dst: p, type: RTN_BLACKHOLE, protocol: FLOCK_ROUTE_PROTOCOL });
        this.#o.log({ msg: "installed summary route", dst: formatPrefix(p) });
      }
    }
    for (const p of draining) {
      if (!this.#draining.some((d) => routeMatches({ dst: d }, p))) {
        this.#o.log({
          msg: "keeping the summary of an earlier CIDR while pods hold addresses in it",
          dst: formatPrefix(p),
        });
      }
    }
    this.#draining = draining;
  }

  /** The peers {@link peersWithoutIpv6} names; logged when that list changes. */
  get peersWithoutIpv6(): readonly string[] {
    return this.#withoutIpv6;
  }

  /** The single-hop IPv4 peers {@link peersWithoutIpv4Link} names; logged when that changes. */
  get peersWithoutIpv4Link(): readonly string[] {
    return this.#withoutIpv4Link;
  }

  /** The IPv4 multihop peers {@link peersWithoutIpv4Address} names; logged when that changes. */
  get peersWithoutIpv4Address(): readonly string[] {
    return this.#withoutIpv4Address;
  }

  #logPeersWithoutIpv6(peers: string[]): void {
    if (peers.join(",") === this.#withoutIpv6.join(",")) return;
    this.#withoutIpv6 = peers;
    this.#o.log(
      peers.length
        ? {
          msg: "IPv6 routes not announced to IPv4 multihop peers or peers on links without " +
            "IPv6: the node has no global IPv6 address to give as their next hop",
          peers,
        }
        : { msg: "IPv6 routes announced to every peer again" },
    );
  }

  /**
   * Renders bird.conf and hands it to BIRD. `onlyIfChanged` (the reason, logged): a text equal
   * to the last one is not handed over at all (no reload, no reload status).
   */
  async #render(
    { onlyIfChanged }: { onlyIfChanged?: string } = {},
  ): Promise<BirdReloadStatus | undefined> {
    if (!this.control || !this.#node) return undefined;
    // The newest render decides: a retry of an earlier one that failed is moot.
    clearTimeout(this.#renderRetry);
    this.#renderRetry = undefined;
    let text: string;
    try {
      text = this.#renderText(this.#node);
    } catch (e) {
      this.#retryRender(e);
      throw e;
    }
    this.#renderFailures.succeeded();
    if (onlyIfChanged !== undefined) {
      // Also a text BIRD rejected: an address change that renders it again would otherwise log
      // a reload each time.
      if (text === this.#renderedText) return undefined;
      this.#o.log({ msg: "bird.conf changed: reloading BIRD", reason: onlyIfChanged });
    }
    this.#renderedText = text;
    const status = await this.control.update(text);
    // Another render may have taken over while this one waited: its text stays. A text BIRD
    // neither took nor judged (failed, unreachable) is forgotten: the control retries it itself,
    // and the next address change hands it over too (as before that retry existed for all).
    if (this.#renderedText === text && status.result !== "ok" && status.result !== "rejected") {
      this.#renderedText = undefined;
    }
    return status;
  }

  /**
   * A render failed (its caller hears of it too): tried again after a pause that grows with
   * every failure in a row, until a render works, a newer one takes over or routing closes. The
   * retry hands BIRD its text only when it differs from the last one handed over.
   */
  #retryRender(error: unknown): void {
    if (this.#closed) return;
    const delayMs = backoffMs(
      this.#renderFailures.failures + 1,
      RENDER_RETRY_MIN_MS,
      RENDER_RETRY_MAX_MS,
    );
    this.#renderFailures.failed(error, { level: "error", retryInMs: delayMs });
    if (typeof error === "object" && error !== null) handledRenderFailures.add(error);
    this.#renderRetry = setTimeout(() => {
      this.#renderRetry = undefined;
      // A failure here scheduled the next try and was counted (and logged) above.
      this.#render({ onlyIfChanged: "retrying a bird.conf render that failed" }).catch(() => {});
    }, delayMs);
    Deno.unrefTimer(this.#renderRetry);
  }

  /** bird.conf for `node` and the node's addresses now; notes the peer problems it finds. */
  #renderText(node: NodeConfig): string {
    const addresses = new NodeAddressSnapshot(this.#o.handle);
    const peers = [...node.spec.bgp?.peers ?? [], ...this.#mesh].map((p) => p.address);
    const bgp = node.spec.bgp;
    const sessions = [...bgp?.peers ?? [], ...bgp?.nodeMesh ? this.#mesh : []];
    const singleHop = sessions.filter((p) => !("multihop" in p) || p.multihop === undefined);
    // Only with an AS: without one bird.conf has no sessions at all.
    const withoutLink = bgp?.asn === undefined
      ? []
      : peersWithoutIpv4Link(addresses, singleHop.map((p) => p.address));
    const multihop = sessions.filter((p) => !singleHop.includes(p)).map((p) => p.address);
    const withoutAddress = bgp?.asn === undefined
      ? []
      : peersWithoutIpv4Address(addresses, multihop);
    const input = birdInputFor(
      node,
      this.#o.nodeName,
      this.#mesh,
      this.#nodeAddresses,
      this.#secretPasswords,
      kernelNextHop6Candidates(addresses, node),
      peersOnLinksWithoutIpv6(addresses, peers),
      linkNextHop6ByPeer(addresses, node, peers),
    );
    input.cidrs.push(...this.#draining.map(formatPrefix));
    this.#logPeersWithoutIpv6(peersWithoutIpv6(input));
    this.#withoutIpv4Link = notePeerList(
      this.#o.log,
      this.#withoutIpv4Link,
      withoutLink,
      "IPv4 peers on no link where the node has an IPv4 address: BIRD waits for them as " +
        "direct neighbours and announces them nothing (address the link, or set multihop)",
      "every single-hop IPv4 peer is on a link with an IPv4 address again",
    );
    this.#withoutIpv4Address = notePeerList(
      this.#o.log,
      this.#withoutIpv4Address,
      withoutAddress,
      "IPv4 multihop peers, but the node has no IPv4 address: BIRD has no source address to " +
        "reach them and announces them nothing (give the node one, e.g. a /32 on lo, or peer " +
        "over IPv6)",
      "the node has an IPv4 address for its IPv4 multihop peers again",
    );
    return renderBirdConfig(input);
  }
}

/**
 * A list of peers a problem names, as {@link NodeRouting} keeps it: when it changed, logs
 * `problem` (a warning, with the peers) or, once it is empty again, `cleared`. Returns the list
 * to keep.
 */
function notePeerList(
  log: (fields: Record<string, unknown>) => void,
  before: readonly string[],
  peers: string[],
  problem: string,
  cleared: string,
): readonly string[] {
  if (peers.join(",") === before.join(",")) return before;
  if (peers.length) log({ level: "warn", msg: problem, peers });
  else if (before.length) log({ msg: cleared });
  return peers;
}

/** Whether `dst` is one of the node's summary CIDRs (reconcile must keep those routes). */
export function isSummaryRoute(node: NodeConfig, dst: Prefix): boolean {
  return summaryPrefixes(node).some((p) => routeMatches({ dst }, p));
}

/** The reload status in the shape `flock status` shows. */
export function reloadSummary(s: BirdReloadStatus): { at: string; ok: boolean; message?: string } {
  return {
    at: s.lastAttempt ?? new Date().toISOString(),
    ok: s.result === "ok",
    message: s.result === "ok" ? s.reply : `${s.result}: ${s.error ?? ""}`.trim(),
  };
}
