/**
 * What `flock status` shows and `/metrics` counts: one snapshot of the agent's state, built
 * from the store, the address pools and the optional BGP/BIRD providers.
 *
 * Providers are hooks for the components that know BGP: {@link StatusHooks.bgpSessions} reads
 * the sessions from BIRD (`birdc show protocols`), {@link StatusHooks.anycastRoutes} counts
 * the anycast routes installed. Without them the snapshot says BGP is not wired.
 *
 * @module
 */

import { formatPrefix } from "../netlink/ip.ts";
import type { NodeConfig } from "./config.ts";
import type { AddressPool } from "./ipam.ts";
import type { ReconcileReport } from "./reconcile.ts";
import type { Store } from "./store.ts";
import type { RouterId, RouterIdSource } from "./routing.ts";
import { summarizeWithheld, type WithheldStatus } from "./withheld_status.ts";

/**
 * Network-config key of a STATUS request that asks for the whole snapshot (what
 * `flock status` sends) rather than the CNI STATUS answer. Runtimes never set it.
 */
export const STATUS_DETAIL_KEY = "flock.fritzlab.net/status-detail";

/** One BGP session as BIRD reports it. */
export interface BgpSessionStatus {
  /** BIRD protocol name. */
  name: string;
  /** Neighbour address, when known. */
  peer?: string;
  /** Neighbour AS, when known. */
  asn?: number;
  /** BGP state as BIRD prints it: Established, Active, Connect, Idle, … */
  state: string;
  /** True when the session is Established. */
  up: boolean;
  /** When the session entered its state, as BIRD prints it. */
  since?: string;
  /** Seconds in the current state, when the provider can tell. */
  uptimeSeconds?: number;
  /** BIRD's info column (last error, "Received: …"). */
  info?: string;
}

/** The outcome of the last `birdc configure` (see `Agent.recordBirdReload`). */
export interface BirdReloadStatus {
  /** ISO 8601 time of the reload. */
  at: string;
  ok: boolean;
  /** BIRD's reply or the error. */
  message?: string;
}

/** Optional providers filled in by the components that own them. */
export interface StatusHooks {
  /** Reads the node's BGP sessions (e.g. the BIRD control socket); may reject. */
  bgpSessions?: () => Promise<BgpSessionStatus[]>;
  /** Number of anycast routes installed; default: distinct anycast addresses held by pods. */
  anycastRoutes?: () => number;
  /** Other nodes publishing this node's BGP router id (cluster mode; see kube/router_ids.ts). */
  routerIdConflicts?: () => readonly string[];
  /**
   * Why the config asked for is not the one in force while the node serves (cluster mode: a
   * NodeConfig change rejected, or failing and retried; see kube/cluster.ts); undefined: none.
   */
  configProblem?: () => string | undefined;
}

/** Use of one address family's node CIDR. */
export interface PoolStatus {
  family: "ipv6" | "ipv4";
  cidr: string;
  allocated: number;
  /** Addresses that can ever be handed out (a decimal string: an IPv6 /64 is 2^64). */
  capacity: string;
  /** Released addresses still cooling down before reuse. */
  cooling: number;
}

/** One pod interface on the node. */
export interface AttachmentStatus {
  namespace?: string;
  pod?: string;
  containerId: string;
  ifname: string;
  state: string;
  hostIface: string;
  ipv6?: string;
  ipv4?: string;
  anycast: string[];
  createdAt: string;
  /** The CNI network (config `name`) it was made for; absent on records from before schema 4. */
  network?: string;
}

/** Everything `flock status` prints. */
export interface StatusSnapshot {
  node: string;
  version: string;
  ready: boolean;
  /** Why the agent is not ready (absent when ready). */
  reason?: string;
  /** Why the config asked for is not in force while the node serves (absent: it is). */
  configProblem?: string;
  startedAt: string;
  uptimeSeconds: number;
  pools: PoolStatus[];
  attachments: AttachmentStatus[];
  /** Anycast address → number of local attachments holding it. */
  anycast: { address: string; holders: number }[];
  anycastRoutes: number;
  bgp: {
    /** False when no BGP provider is wired into this agent. */
    available: boolean;
    /** BIRD's router id, when the agent drives BIRD and has a config. */
    routerId?: string;
    /** Where it came from: `bgp.routerID`, the Node's IPv4 InternalIP, or a node name hash. */
    routerIdSource?: RouterIdSource;
    /** Other nodes whose NodeConfig status publishes the same router id (absent: none). */
    routerIdConflicts?: string[];
    /**
     * Peers whose sessions carry no IPv6 routes: IPv4 multihop sessions, or single-hop ones over
     * a link without a global IPv6 address, on a node without a global IPv6 address to give as
     * their next hop (absent: none).
     */
    peersWithoutIpv6?: string[];
    /**
     * Single-hop IPv4 peers on no link where the node has an IPv4 address (an unnumbered link):
     * BIRD waits for them as neighbours and announces them nothing (absent: none).
     */
    peersWithoutIpv4Link?: string[];
    /**
     * IPv4 multihop peers on a node without any usable IPv4 address (IPv6-only): BIRD has no
     * source address to reach them and announces them nothing (absent: none).
     */
    peersWithoutIpv4Address?: string[];
    sessions: BgpSessionStatus[];
    /** Why the sessions could not be read. */
    error?: string;
  };
  /** Absent before the first reload (or without BIRD). */
  lastBirdReload?: BirdReloadStatus;
  store: {
    path?: string;
    /** "ok", the problems found, or "not checked". */
    integrity: string;
  };
  /** What the last reconcile (start-up or reconfigure) did (the whole report; these at least). */
  reconcile?: ReconcileSummary;
  /**
   * Addresses kept out of IPAM because the node still routes them through another pod's host
   * veth (withheld.ts): counts per family and the oldest few. Absent before the store is open
   * (and from agents older than this field).
   */
  withheld?: WithheldStatus;
}

/** The counts and lines of the last reconcile that `flock status` prints. */
export interface ReconcileSummary {
  restored: number;
  repaired: number;
  released: number;
  orphanLinks: number;
  orphanRoutes: number;
  /**
   * What is wrong or was found broken and may need an operator (`flock_reconcile_problems`
   * counts these). Before `notes` existed this list held the notes too.
   */
  problems: string[];
  /** Expected housekeeping, as it was then (absent from agents older than this field). */
  notes?: string[];
  /** Which configure ran it (absent from agents older than this field). */
  trigger?: "start-up" | "reconfigure";
  /** When it finished, ISO 8601 (absent from agents older than this field). */
  at?: string;
}

/** What {@link buildStatusSnapshot} reads. */
export interface StatusSources {
  nodeName: string;
  version: string;
  startedAt: number;
  ready: boolean;
  reason?: string;
  node?: NodeConfig;
  pool6?: AddressPool;
  pool4?: AddressPool;
  store?: Store;
  reconcile?: ReconcileReport;
  hooks: StatusHooks;
  lastBirdReload?: BirdReloadStatus;
  /** The router id in bird.conf (undefined without BIRD). */
  routerId?: RouterId;
  /** Peers left without IPv6 routes (NodeRouting.peersWithoutIpv6; undefined without BIRD). */
  peersWithoutIpv6?: readonly string[];
  /** Single-hop IPv4 peers without an IPv4 link (NodeRouting.peersWithoutIpv4Link). */
  peersWithoutIpv4Link?: readonly string[];
  /** IPv4 multihop peers without an IPv4 address of the node (NodeRouting). */
  peersWithoutIpv4Address?: readonly string[];
  now?: () => number;
}

/** Options of {@link buildStatusSnapshot}. */
export interface SnapshotOptions {
  /** Run SQLite's integrity check (ms at thousands of pods; off for metric scrapes). */
  integrity?: boolean;
  /** Bound on the BGP provider, so a stuck BIRD cannot hang `flock status`. */
  bgpTimeoutMs?: number;
}

/** Default bound on reading the BGP sessions. */
export const DEFAULT_BGP_TIMEOUT_MS = 2_000;

/** Builds the snapshot; never throws for a failing provider (the error is in the result). */
export async function buildStatusSnapshot(
  src: StatusSources,
  opts: SnapshotOptions = {},
): Promise<StatusSnapshot> {
  const now = (src.now ?? Date.now)();
  const pools: PoolStatus[] = [];
  for (const [family, pool] of [["ipv6", src.pool6], ["ipv4", src.pool4]] as const) {
    if (!pool) continue;
    pools.push({
      family,
      cidr: formatPrefix(pool.cidr),
      allocated: pool.allocated,
      capacity: pool.capacity.toString(),
      cooling: pool.cooling,
    });
  }
  const attachments: AttachmentStatus[] = (src.store?.list() ?? []).map((a) => ({
    namespace: a.podNamespace,
    pod: a.podName,
    containerId: a.containerId,
    ifname: a.ifname,
    state: a.state,
    hostIface: a.hostIface,
    ipv6: a.ipv6,
    ipv4: a.ipv4,
    anycast: a.anycast,
    createdAt: new Date(a.createdAt).toISOString(),
    ...(a.network === undefined ? {} : { network: a.network }),
  }));
  const holders = new Map<string, number>();
  for (const a of attachments) {
    if (a.state !== "committed") continue;
    for (const address of a.anycast) holders.set(address, (holders.get(address) ?? 0) + 1);
  }
  const anycast = [...holders].map(([address, n]) => ({ address, holders: n }))
    .sort((x, y) => x.address.localeCompare(y.address));
  const snapshot: StatusSnapshot = {
    node: src.nodeName,
    version: src.version,
    ready: src.ready,
    reason: src.ready ? undefined : src.reason,
    ...configProblem(src.hooks),
    startedAt: new Date(src.startedAt).toISOString(),
    uptimeSeconds: Math.max(0, Math.round((now - src.startedAt) / 1000)),
    pools,
    attachments,
    anycast,
    anycastRoutes: src.hooks.anycastRoutes?.() ?? anycast.length,
    bgp: {
      ...(src.routerId ? { routerId: src.routerId.id, routerIdSource: src.routerId.source } : {}),
      ...routerIdConflicts(src),
      ...(src.peersWithoutIpv6?.length ? { peersWithoutIpv6: [...src.peersWithoutIpv6] } : {}),
      ...(src.peersWithoutIpv4Link?.length
        ? { peersWithoutIpv4Link: [...src.peersWithoutIpv4Link] }
        : {}),
      ...(src.peersWithoutIpv4Address?.length
        ? { peersWithoutIpv4Address: [...src.peersWithoutIpv4Address] }
        : {}),
      ...await readBgp(src.hooks, opts.bgpTimeoutMs ?? DEFAULT_BGP_TIMEOUT_MS),
    },
    lastBirdReload: src.lastBirdReload,
    store: {
      path: src.store?.path,
      integrity: opts.integrity && src.store ? storeIntegrity(src.store) : "not checked",
    },
    reconcile: src.reconcile && {
      ...src.reconcile,
      problems: [...src.reconcile.problems],
      notes: [...src.reconcile.notes],
    },
    ...(src.store ? { withheld: summarizeWithheld(src.store.withheld()) } : {}),
  };
  return snapshot;
}

function configProblem(hooks: StatusHooks): { configProblem?: string } {
  const problem = hooks.configProblem?.();
  return problem ? { configProblem: problem } : {};
}

function routerIdConflicts(src: StatusSources): { routerIdConflicts?: string[] } {
  const others = src.routerId ? src.hooks.routerIdConflicts?.() ?? [] : [];
  return others.length ? { routerIdConflicts: [...others] } : {};
}

async function readBgp(
  hooks: StatusHooks,
  timeoutMs: number,
): Promise<StatusSnapshot["bgp"]> {
  if (!hooks.bgpSessions) return { available: false, sessions: [] };
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const sessions = await Promise.race([
      hooks.bgpSessions(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
    return { available: true, sessions };
  } catch (e) {
    return { available: true, sessions: [], error: (e as Error)?.message ?? String(e) };
  } finally {
    clearTimeout(timer);
  }
}

function storeIntegrity(store: Store): string {
  try {
    return store.integrityCheck();
  } catch (e) {
    return `check failed: ${(e as Error).message}`;
  }
}
