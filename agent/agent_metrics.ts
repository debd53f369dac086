/**
 * flock's metrics: what the agent counts on the request path and what it reads from its
 * state at scrape time. Every metric is named `flock_…`; docs/operations.md lists them.
 *
 * @module
 */

import { type CounterValue, type HistogramValue, Registry } from "./metrics.ts";
import type { ReconcileReport } from "./reconcile.ts";
import type { StatusSnapshot } from "./status_snapshot.ts";

/** Reads the agent's state for a scrape (a snapshot without the integrity check). */
export type SnapshotSource = () => Promise<StatusSnapshot>;

/** What the anycast routes in force count (AnycastRoutes.syncFailures). */
export interface AnycastSyncCounter {
  readonly syncFailures: number;
}

/** What a scrape reads besides the snapshot. */
export interface MetricSources {
  /** The anycast routes in force, if any: a reconfigure replaces them (counting from 0 again). */
  anycast?: () => AnycastSyncCounter | undefined;
}

/** The verbs whose latency is recorded as a histogram. */
const TIMED_COMMANDS = new Set(["ADD", "DEL"]);

/** The agent's metric set, on its own {@link Registry}. */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly #requests = this.registry.counter({
    name: "flock_cni_requests_total",
    help: "CNI requests served by the agent, by verb and result (ok or error).",
    labelNames: ["command", "result"],
  });
  readonly #errors = this.registry.counter({
    name: "flock_cni_errors_total",
    help: "CNI requests that failed, by verb and CNI error code.",
    labelNames: ["command", "code"],
  });
  readonly #duration = this.registry.histogram({
    name: "flock_cni_request_duration_seconds",
    help: "Agent-side latency of ADD and DEL requests, in seconds.",
    labelNames: ["command"],
  });
  readonly #birdReloads = this.registry.counter({
    name: "flock_bird_reloads_total",
    help: "BIRD reload attempts: a changed bird.conf handed to BIRD (birdc configure; bird -p " +
      "while BIRD is down), retries included, by result: ok when BIRD took it, failed when it " +
      "was rejected, BIRD was unreachable or did not answer. A text BIRD runs or refused " +
      "already is not handed over again and not counted.",
    labelNames: ["result"],
  });
  readonly #reconcile = this.registry.counter({
    name: "flock_reconcile_actions_total",
    help: "What start-up reconciliation did: attachments restored, repaired and released, " +
      "orphan links and routes removed.",
    labelNames: ["action"],
  });
  readonly #hostSideRepairs = this.registry.counter({
    name: "flock_host_side_repairs_total",
    help: "Pods whose host side (routes, fe80::1, anycast paths) the agent restored while " +
      "running, after their host veth went down and up or a host route went.",
  });
  /** Children cached per verb so the request path does no label work. */
  readonly #perCommand = new Map<
    string,
    { ok: CounterValue; error: CounterValue; duration?: HistogramValue }
  >();

  /**
   * @param snapshot read before each scrape for the gauges (pools, attachments, BGP)
   * @param startedAt process start, ms since the epoch
   * @param version flock's version, for `flock_build_info`
   * @param sources counts other components keep, read at each scrape
   */
  constructor(
    snapshot: SnapshotSource,
    startedAt: number,
    version: string,
    sources: MetricSources = {},
  ) {
    const r = this.registry;
    r.gauge({
      name: "flock_build_info",
      help: "Always 1; the labels carry flock's version.",
      labelNames: ["version"],
    }).labels(version).set(1);
    r.gauge({
      name: "flock_agent_start_time_seconds",
      help: "When the agent process started, seconds since the epoch.",
    }).set(startedAt / 1000);
    const ready = r.gauge({
      name: "flock_agent_ready",
      help: "1 when the agent has its node config and has reconciled, else 0.",
    });
    const allocated = r.gauge({
      name: "flock_ipam_addresses_allocated",
      help: "Addresses held by pods, per family.",
      labelNames: ["family", "cidr"],
    });
    const free = r.gauge({
      name: "flock_ipam_addresses_free",
      help: "Addresses left to hand out, per family (cooling ones count as free).",
      labelNames: ["family", "cidr"],
    });
    const cooling = r.gauge({
      name: "flock_ipam_addresses_cooling",
      help: "Released addresses resting before reuse, per family.",
      labelNames: ["family", "cidr"],
    });
    const attachments = r.gauge({
      name: "flock_attachments",
      help: "Pod interfaces in the node store, by state (committed, pending, releasing).",
      labelNames: ["state"],
    });
    const anycastRoutes = r.gauge({
      name: "flock_anycast_routes",
      help: "Anycast routes this node installs (one per distinct anycast address held).",
    });
    const bgpSessions = r.gauge({
      name: "flock_bgp_sessions",
      help: "BGP sessions BIRD reports, by state.",
      labelNames: ["state"],
    });
    const bgpUp = r.gauge({
      name: "flock_bgp_sessions_up",
      help: "BGP sessions in state Established.",
    });
    const withheld = r.gauge({
      name: "flock_withheld_addresses",
      help: "Addresses kept out of IPAM because the node still routes them through another " +
        "pod's host veth, per family.",
      labelNames: ["family"],
    });
    const withheldByFamily = { ipv6: withheld.labels("ipv6"), ipv4: withheld.labels("ipv4") };
    const reconcileProblems = r.gauge({
      name: "flock_reconcile_problems",
      help: "Problems of the last reconcile (start or reconfigure) in flock status: something " +
        "wrong or found broken (a repaired pod, an orphan, a failed teardown); its notes " +
        "(expected housekeeping) do not count; a background retry that succeeds removes its own.",
    });
    // The anycast routes a reconfigure replaced add their last count: the total never goes down.
    let replaced = 0;
    let inForce: AnycastSyncCounter | undefined;
    const anycastSyncFailures = r.counter({
      name: "flock_anycast_sync_failures_total",
      help: "Failed syncs of single anycast addresses in the periodic resync (each address each " +
        "round; a holder whose host veth is down is no failure). The agent logs the address and " +
        "cause once, and again on recovery.",
      collect: () => {
        const now = sources.anycast?.();
        if (now !== inForce) {
          replaced += inForce?.syncFailures ?? 0;
          inForce = now;
        }
        const counted = anycastSyncFailures.labels();
        counted.inc(replaced + (inForce?.syncFailures ?? 0) - counted.value);
      },
    });
    // One snapshot per scrape feeds every gauge.
    r.beforeScrape(async () => {
      const s = await snapshot();
      ready.set(s.ready ? 1 : 0);
      for (const g of [allocated, free, cooling]) g.reset();
      for (const p of s.pools) {
        allocated.labels(p.family, p.cidr).set(p.allocated);
        free.labels(p.family, p.cidr).set(Number(BigInt(p.capacity) - BigInt(p.allocated)));
        cooling.labels(p.family, p.cidr).set(p.cooling);
      }
      const byState = { committed: 0, pending: 0, releasing: 0 } as Record<string, number>;
      for (const a of s.attachments) byState[a.state] = (byState[a.state] ?? 0) + 1;
      attachments.reset();
      for (const [state, n] of Object.entries(byState)) attachments.labels(state).set(n);
      anycastRoutes.set(s.anycastRoutes);
      bgpSessions.reset();
      const states = new Map<string, number>();
      for (const b of s.bgp.sessions) states.set(b.state, (states.get(b.state) ?? 0) + 1);
      for (const [state, n] of states) bgpSessions.labels(state).set(n);
      bgpUp.set(s.bgp.sessions.filter((b) => b.up).length);
      // Read from the store at each scrape: current after every withhold and give-back.
      withheldByFamily.ipv6.set(s.withheld?.ipv6 ?? 0);
      withheldByFamily.ipv4.set(s.withheld?.ipv4 ?? 0);
      reconcileProblems.set(s.reconcile?.problems.length ?? 0);
    });
  }

  /** Counts one served request; `seconds` is its agent-side duration. */
  request(command: string, errorCode: number | undefined, seconds: number): void {
    let c = this.#perCommand.get(command);
    if (!c) {
      c = {
        ok: this.#requests.labels(command, "ok"),
        error: this.#requests.labels(command, "error"),
        duration: TIMED_COMMANDS.has(command) ? this.#duration.labels(command) : undefined,
      };
      this.#perCommand.set(command, c);
    }
    if (errorCode === undefined) c.ok.inc();
    else {
      c.error.inc();
      this.#errors.labels(command, String(errorCode)).inc();
    }
    c.duration?.observe(seconds);
  }

  /** Counts one `birdc configure`. */
  birdReload(ok: boolean): void {
    this.#birdReloads.labels(ok ? "ok" : "failed").inc();
  }

  /** Counts one pod whose host side was restored (host_side_repair.ts). */
  hostSideRepaired(): void {
    this.#hostSideRepairs.inc();
  }

  /** Adds what start-up reconciliation did. */
  reconciled(report: ReconcileReport): void {
    const actions: [string, number][] = [
      ["restored", report.restored],
      ["repaired", report.repaired],
      ["released", report.released],
      ["orphan_links_removed", report.orphanLinks],
      ["orphan_routes_removed", report.orphanRoutes],
    ];
    for (const [action, n] of actions) this.#reconcile.labels(action).inc(n);
  }

  /** The scrape body (text format 0.0.4). */
  encode(onCollectError?: (name: string, e: unknown) => void): Promise<string> {
    return this.registry.encode(onCollectError);
  }
}
