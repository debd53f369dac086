/**
 * Keeps the NodeConfig's `status` current without hammering the API server: a burst of ADDs
 * becomes one merge patch, at most one per interval, and only when the status differs from
 * what was last written. The patch names every field the agent owns, `null` where the status
 * has none, so a field that went away is deleted on the server rather than left behind. A failed patch (API server down) is retried with backoff until it
 * goes through; the agent's pods never wait for it.
 *
 * @module
 */

import { backoffMs } from "../backoff.ts";
import { canonicalJson } from "./node_configs.ts";
import type { RouterId, RouterIdSource } from "../routing.ts";

/** The agent's own facts that end up in `status`. */
export interface AgentStats {
  ready: boolean;
  attachments: number;
  ipv6: number;
  ipv4: number;
}

/**
 * The part of NodeConfig `status` the agent owns (deploy/crd.yaml has the schema; fields not
 * in it would be pruned by the API server).
 */
export interface NodeConfigStatus {
  ready: boolean;
  /** Why the node is not ready, or what is wrong while it serves; empty when all is well. */
  reason: string;
  observedGeneration: number;
  /** Pod attachments on the node. */
  pods: number;
  allocated: { ipv6: number; ipv4: number };
  /** BGP sessions established and configured (only when the agent drives BIRD). */
  bgpSessionsUp?: number;
  bgpSessions?: number;
  lastBirdReload?: { time: string; ok: boolean; message?: string };
  /** The BGP router id in bird.conf and where it came from (only when the agent drives BIRD). */
  bgp?: { routerID: string; routerIDSource: RouterIdSource };
  /**
   * Summaries of an earlier spec that running pods still hold addresses in (only when the
   * agent drives BIRD and some drain): the other nodes' mesh filters accept them from this node
   * until they are released.
   */
  drainingCIDRs?: string[];
  /**
   * `Ready`, `BGPEstablished` and `RouterIDUnique` when the agent drives BIRD,
   * `BGPPasswordsAvailable` when a peer's password is in a Secret.
   */
  conditions: Condition[];
}

/** One entry of `status.conditions`, in the Kubernetes `metav1.Condition` shape (deploy/crd.yaml). */
export interface Condition {
  type: string;
  status: "True" | "False" | "Unknown";
  /** A CamelCase word a program can match on. */
  reason: string;
  /** The same for a human. */
  message: string;
  /** When `status` last changed (RFC 3339, whole seconds, as Kubernetes writes it). */
  lastTransitionTime: string;
  observedGeneration?: number;
}

/** What the caller knows of the `Ready` condition beyond `ready` itself. */
export interface ReadyFacts {
  /** CamelCase reason (default `Serving` or `NotReady`). */
  reason?: string;
  /** When this status is computed (default now). */
  now?: Date;
  /** Further conditions (e.g. `BGPPasswordsAvailable`), appended after the others. */
  conditions?: Omit<Condition, "lastTransitionTime" | "observedGeneration">[];
}

/** A time as Kubernetes writes condition times: RFC 3339 with whole seconds. */
export function conditionTime(at: Date): string {
  return at.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** The routing facts of the status, when the agent drives BIRD. */
export interface RoutingStats {
  sessions: number;
  sessionsUp: number;
  lastReload?: { time: string; ok: boolean; message?: string };
  /** The router id in bird.conf (other nodes compare theirs with it). */
  routerId?: RouterId;
  /** Summaries of an earlier spec still announced because pods hold addresses in them. */
  drainingCIDRs?: readonly string[];
  /** Peers left without IPv6 routes: the node has no global IPv6 next hop for them. */
  peersWithoutIpv6?: readonly string[];
  /** Single-hop IPv4 peers on no link where the node has an IPv4 address: BIRD waits for them. */
  peersWithoutIpv4Link?: readonly string[];
  /** IPv4 multihop peers on a node without any IPv4 address: BIRD cannot reach them. */
  peersWithoutIpv4Address?: readonly string[];
}

/**
 * Builds the status from the agent's stats and the generation of the spec it applied. Condition
 * times are `facts.now`; {@link keepTransitionTimes} puts back the earlier time of every
 * condition whose status did not change.
 */
export function buildStatus(
  stats: AgentStats,
  observedGeneration: number,
  reason: string,
  routing?: RoutingStats,
  facts: ReadyFacts = {},
): NodeConfigStatus {
  const now = conditionTime(facts.now ?? new Date());
  const ready: Condition = {
    type: "Ready",
    status: stats.ready ? "True" : "False",
    reason: facts.reason ?? (stats.ready ? "Serving" : "NotReady"),
    message: reason || "serving CNI requests",
    lastTransitionTime: now,
    observedGeneration,
  };
  const status: NodeConfigStatus = {
    ready: stats.ready,
    reason,
    observedGeneration,
    pods: stats.attachments,
    allocated: { ipv6: stats.ipv6, ipv4: stats.ipv4 },
    conditions: [ready],
  };
  if (routing) {
    status.bgpSessionsUp = routing.sessionsUp;
    status.bgpSessions = routing.sessions;
    if (routing.lastReload) status.lastBirdReload = routing.lastReload;
    if (routing.routerId) {
      status.bgp = { routerID: routing.routerId.id, routerIDSource: routing.routerId.source };
    }
    if (routing.drainingCIDRs?.length) status.drainingCIDRs = [...routing.drainingCIDRs].sort();
    status.conditions.push({
      ...bgpCondition(routing),
      lastTransitionTime: now,
      observedGeneration,
    });
  }
  for (const c of facts.conditions ?? []) {
    status.conditions.push({ ...c, lastTransitionTime: now, observedGeneration });
  }
  return status;
}

/** `BGPEstablished`: true when BIRD has sessions and every one of them is established. */
function bgpCondition(routing: RoutingStats): Omit<Condition, "lastTransitionTime"> {
  const { sessions, sessionsUp } = routing;
  let message = `${sessionsUp} of ${sessions} BGP sessions established`;
  // The CRD's status.bgp has a fixed schema (an unknown field would be pruned): the condition
  // message is where cluster mode tells which peers get no IPv6 routes.
  if (routing.peersWithoutIpv6?.length) {
    message += `; no IPv6 routes to ${routing.peersWithoutIpv6.join(", ")} (the node has no ` +
      `global IPv6 address to give as their next hop)`;
  }
  if (routing.peersWithoutIpv4Link?.length) {
    message += `; no IPv4 link to ${routing.peersWithoutIpv4Link.join(", ")} (no interface has ` +
      `an IPv4 address in their subnet)`;
  }
  if (routing.peersWithoutIpv4Address?.length) {
    message += `; no IPv4 address for ${routing.peersWithoutIpv4Address.join(", ")} (the node ` +
      `has no IPv4 address to reach these multihop peers from)`;
  }
  if (routing.lastReload && !routing.lastReload.ok) {
    message += `; the last BIRD reload failed: ${routing.lastReload.message ?? "no reason given"}`;
  }
  if (sessions === 0) {
    return { type: "BGPEstablished", status: "False", reason: "NoSessions", message };
  }
  return sessionsUp === sessions
    ? { type: "BGPEstablished", status: "True", reason: "AllSessionsEstablished", message }
    : { type: "BGPEstablished", status: "False", reason: "SessionsNotEstablished", message };
}

/**
 * `status` with the `lastTransitionTime` of `previous` kept for every condition whose status is
 * the same as before: the time says when a condition flipped, not when it was last computed.
 */
export function keepTransitionTimes(
  status: NodeConfigStatus,
  previous: readonly Condition[] | undefined,
): NodeConfigStatus {
  const conditions = status.conditions.map((c) => {
    const before = previous?.find((p) => p.type === c.type);
    return before?.status === c.status && before.lastTransitionTime
      ? { ...c, lastTransitionTime: before.lastTransitionTime }
      : c;
  });
  return { ...status, conditions };
}

/**
 * The fields of `status` the agent owns, as a merge patch sees them: `true` is a value written
 * whole (a JSON merge patch replaces arrays, so `conditions` is one), an object lists the fields
 * of a nested object (a merge patch merges those field by field).
 */
const OWNED_STATUS_FIELDS = {
  ready: true,
  reason: true,
  observedGeneration: true,
  pods: true,
  allocated: { ipv6: true, ipv4: true },
  bgpSessionsUp: true,
  bgpSessions: true,
  lastBirdReload: { time: true, ok: true, message: true },
  bgp: { routerID: true, routerIDSource: true },
  drainingCIDRs: true,
  conditions: true,
} as const satisfies { [K in keyof NodeConfigStatus]-?: FieldShape };

/** Which fields of an object are owned; see {@link OWNED_STATUS_FIELDS}. */
type FieldShape = true | { readonly [field: string]: FieldShape };

/** `T` as a JSON merge patch that names every field: `null` deletes a field the value lacks. */
export type MergePatch<T> = {
  [K in keyof T]-?:
    | (NonNullable<T[K]> extends readonly unknown[] ? NonNullable<T[K]>
      : NonNullable<T[K]> extends object ? MergePatch<NonNullable<T[K]>>
      : NonNullable<T[K]>)
    | null;
};

/** The body of a status patch: the status, with `null` for every owned field it lacks. */
export type NodeConfigStatusPatch = MergePatch<NodeConfigStatus>;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * `status` as a JSON merge patch (RFC 7386): every owned field it lacks, nested ones included,
 * is `null`, so the API server deletes what an earlier status had there (the BGP fields once
 * the agent drives no BIRD, a reload message after a reload that went well). Fields the agent
 * does not own are left to whoever wrote them.
 */
export function statusMergePatch(status: NodeConfigStatus): NodeConfigStatusPatch {
  return withNulls(status, OWNED_STATUS_FIELDS) as NodeConfigStatusPatch;
}

function withNulls(value: object, shape: FieldShape): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [field, sub] of Object.entries(shape)) {
    const v = (value as Record<string, unknown>)[field];
    if (v === undefined || v === null) out[field] = null;
    else out[field] = sub !== true && isObject(v) ? withNulls(v, sub) : v;
  }
  return out;
}

/**
 * The owned part of a status (computed, or as the API server holds it), absent and `null`
 * alike left out, as canonical JSON: two statuses that print the same need no patch.
 */
export function ownedStatusText(status: unknown): string {
  return canonicalJson(ownedPart(status, OWNED_STATUS_FIELDS) ?? {});
}

function ownedPart(value: unknown, shape: FieldShape): Record<string, unknown> | undefined {
  if (!isObject(value)) return undefined;
  const out: Record<string, unknown> = {};
  for (const [field, sub] of Object.entries(shape)) {
    const v = value[field];
    if (v === undefined || v === null) continue;
    if (sub === true || !isObject(v)) out[field] = v;
    else {
      const part = ownedPart(v, sub);
      // An object left with no owned field is as good as none.
      if (part && Object.keys(part).length > 0) out[field] = part;
    }
  }
  return out;
}

/** The conditions of a status object as read from the API (anything else: none). */
export function conditionsOf(status: unknown): Condition[] | undefined {
  const list = (status as { conditions?: unknown } | null | undefined)?.conditions;
  return Array.isArray(list) ? list as Condition[] : undefined;
}

/**
 * Least time between status writes that change only the pod and address counters. Every agent
 * watches every NodeConfig, so a write reaches every node: at 1,000 nodes, one a second each
 * during a rollout would be up to a million watch events a second. Readiness, conditions and
 * BGP still go out within a second.
 */
export const STATUS_COUNTERS_INTERVAL_MS = 10_000;

/**
 * Counter-only writes the whole cluster makes per second at most, once it is large enough for
 * {@link STATUS_COUNTERS_INTERVAL_MS} alone to allow more: each write is a watch event on every
 * node, so N nodes writing every 10 s send N²/10 events a second (100,000 at 1,000 nodes). With
 * the interval at N / 2 seconds it is 2N (2,000 at 1,000 nodes; counters then 8 minutes old at
 * most; `flock status` and the metrics are always current).
 */
export const STATUS_COUNTER_WRITES_PER_SECOND = 2;

/** The counters interval for a cluster of `nodes` NodeConfigs. */
export function countersIntervalMs(nodes: number, floorMs = STATUS_COUNTERS_INTERVAL_MS): number {
  return Math.max(floorMs, Math.ceil(nodes / STATUS_COUNTER_WRITES_PER_SECOND * 1000));
}

/** Options of a {@link StatusReporter}. */
export interface StatusReporterOptions {
  /**
   * The status to write now; undefined when there is no object to write it to. `current` is the
   * status the API server holds (its condition times survive an agent restart).
   */
  compute: () => Promise<
    { name: string; status: NodeConfigStatus; current?: unknown } | undefined
  >;
  /** Sends a merge patch of `status` (see {@link statusMergePatch}). */
  patch: (name: string, status: NodeConfigStatusPatch) => Promise<void>;
  /** Least time between two patches. */
  minIntervalMs?: number;
  /**
   * Least time between two patches when only the counters (`pods`, `allocated`) changed; the
   * default is `minIntervalMs`. Every agent watches every NodeConfig, so each status write is
   * sent to every node of the cluster: pod churn must not make that once a second per node.
   * Asked each time, so that it can follow the cluster's size.
   */
  countersIntervalMs?: () => number;
  /** Largest retry delay after failed patches. */
  maxBackoffMs?: number;
  log: (fields: Record<string, unknown>) => void;
}

/** Rate-limited, coalescing status writer; see the module doc. */
export class StatusReporter {
  /** Patches sent successfully (for tests and the bench). */
  patches = 0;
  #lastWritten = "";
  /** The conditions written last, for their transition times. */
  #conditions?: Condition[];
  #lastAt = -Infinity;
  /** When the status was last computed, written or not. */
  #lastComputedAt = -Infinity;
  #timer?: ReturnType<typeof setTimeout>;
  /** The pending timer holds back a counters-only change (see `countersIntervalMs`). */
  #deferred = false;
  /** {@link ownedStatusText} of the last written status without its counters. */
  #lastSignificant = "";
  #inFlight = false;
  #again = false;
  #failures = 0;
  #stopped = false;

  constructor(readonly options: StatusReporterOptions) {}

  /** Something changed: write the status soon (coalesced with other requests). */
  request(): void {
    if (this.#stopped) return;
    if (this.#inFlight) {
      this.#again = true;
      return;
    }
    if (this.#timer !== undefined) {
      // A held-back counters change must not hold back what comes next (it may be more).
      if (!this.#deferred) return;
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#deferred = false;
    }
    // Computing the status reads every attachment: at most once per interval too, or every ADD
    // of a node with 1,000 pods would read 1,000 records while counters are held back.
    const interval = this.options.minIntervalMs ?? 1_000;
    const since = Math.max(this.#lastAt, this.#lastComputedAt);
    const wait = Math.max(0, since + interval - performance.now());
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#flush();
    }, wait);
  }

  /**
   * The status as the API server shows it now (from the watch). When it is not what flock
   * wrote last — the object was recreated, or someone edited it — write it again.
   */
  observe(status: unknown): void {
    // Owned fields only: a field someone else added is theirs, and writing ours again would
    // not remove it (nor stop this from firing on every event).
    if (ownedStatusText(status) !== this.#lastWritten) {
      this.#lastWritten = "";
      this.request();
    }
  }

  /** Stops writing; a patch in flight completes. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  async #flush(): Promise<void> {
    if (this.#stopped) return;
    let want;
    this.#lastComputedAt = performance.now();
    try {
      want = await this.options.compute();
    } catch (e) {
      this.options.log({ level: "error", msg: "cannot compute the status", error: String(e) });
      return;
    }
    if (!want || this.#stopped) return;
    const status = keepTransitionTimes(
      want.status,
      this.#conditions ?? conditionsOf(want.current),
    );
    const text = ownedStatusText(status);
    if (text === this.#lastWritten) return;
    const significant = ownedStatusText({ ...status, pods: undefined, allocated: undefined });
    if (this.#lastWritten !== "" && significant === this.#lastSignificant) {
      const due = this.#lastAt + (this.options.countersIntervalMs?.() ?? 0);
      if (due > performance.now()) {
        this.#deferred = true;
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.#deferred = false;
          void this.#flush();
        }, due - performance.now());
        return;
      }
    }
    this.#inFlight = true;
    this.#lastAt = performance.now();
    let ok = false;
    try {
      await this.options.patch(want.name, statusMergePatch(status));
      ok = true;
      this.patches++;
      this.#lastWritten = text;
      this.#lastSignificant = significant;
      this.#conditions = status.conditions;
      if (this.#failures > 0) {
        this.options.log({ level: "info", msg: "status written again", failures: this.#failures });
      }
      this.#failures = 0;
    } catch (e) {
      this.#failures++;
      if (this.#failures === 1 || this.#failures % 20 === 0) {
        this.options.log({
          level: "warn",
          msg: "cannot write NodeConfig status; will retry",
          name: want.name,
          failures: this.#failures,
          error: (e as Error).message,
        });
      }
    } finally {
      this.#inFlight = false;
    }
    if (this.#stopped) return;
    if (!ok) {
      const delay = backoffMs(this.#failures, 500, this.options.maxBackoffMs ?? 10_000);
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        void this.#flush();
      }, delay);
      return;
    }
    if (this.#again) {
      this.#again = false;
      this.request();
    }
  }
}
