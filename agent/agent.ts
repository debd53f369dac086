/**
 * The per-node agent: owns the store, IPAM and the datapath, and serves the
 * CNI RPC. It answers "try again later" (CNI code 11) until it has its node
 * configuration and has reconciled the node — only then does it serve pods.
 */

import {
  AF_INET6,
  formatPrefix,
  Handle,
  parseIP,
  type Prefix,
  prefixContains,
} from "../netlink/mod.ts";
import { Datapath, VETH_DELETIONS_IN_FLIGHT } from "./datapath.ts";
import { CniCode, CniError, type RpcRequest, type RpcResponse } from "./protocol.ts";
import { type Attachment, Store } from "./store.ts";
import type { NodeConfig } from "./config.ts";
import { AddressPool, DEFAULT_COOLDOWN_MS } from "./ipam.ts";
import { parseCniArgs, PodHandler } from "./pod_handler.ts";
import { forEachBounded } from "./bounded.ts";
import { reconcile, type ReconcileReport } from "./reconcile.ts";
import { AnycastRoutes } from "./anycast.ts";
import { type HoldWork, RpcServer } from "./rpc_server.ts";
import { parseCniInvocation } from "./cni_input.ts";
import { AgentMetrics } from "./agent_metrics.ts";
import { createLogger } from "./logger.ts";
import {
  type BirdReloadStatus,
  buildStatusSnapshot,
  type SnapshotOptions,
  STATUS_DETAIL_KEY,
  type StatusHooks,
  type StatusSnapshot,
} from "./status_snapshot.ts";
import { FLOCK_VERSION } from "../version.ts";
import { crashHookFromEnv } from "./crash_points.ts";
import { addFaultFromEnv, releaseSweepMsFromEnv, vethDeleteFaultFromEnv } from "./test_faults.ts";
import {
  type BirdTarget,
  isHandledRenderFailure,
  isSummaryRoute,
  type MeshPeer,
  NodeRouting,
  reloadSummary,
  type RouterId,
} from "./routing.ts";
import { bgpSessions } from "../bird/control.ts";
import { trimFreedMemory } from "./malloc_trim.ts";
import { vethDeleteDelayFromEnv } from "./test_slow_delete.ts";
import { isStoreError, RuntimeHealth } from "./health.ts";
import { toCniError } from "./cni_errors.ts";
import { sameIdentity, type StatIdentity, statIdentity } from "./same_file.ts";
import { releaseNoLongerHeld, storeHeldAddresses } from "./store_held.ts";
import { HostSideRepair, type RepairTarget } from "./host_side_repair.ts";
import { FailureStreak } from "./failure_streak.ts";
import { backoffMs } from "./backoff.ts";

/** How often DEL releases whose background veth deletion failed are retried. */
const RELEASE_SWEEP_MS = 30_000;

/** First pause before a reconfigure's failed summary routes are tried again; doubles each time. */
const ROUTING_RETRY_FIRST_MS = 1_000;
/** Longest pause between two tries of a reconfigure's summary routes. */
const ROUTING_RETRY_MAX_MS = 30_000;

/** Options of an {@link Agent}. */
export interface AgentOptions {
  nodeName: string;
  stateDir: string;
  socketPath: string;
  /** The node's network namespace (default: the one the agent runs in). */
  netnsPath?: string;
  cooldownMs?: number;
  log?: (fields: Record<string, unknown>) => void;
  /** Keep Prometheus metrics (default true). */
  metrics?: boolean;
  /** The BIRD to render bird.conf for and reload (none: summary routes only). */
  bird?: BirdTarget;
  /**
   * Annotations of a pod whose runtime did not pass them (cluster mode: the pod informer).
   * `uid` is `K8S_POD_UID` when the runtime gave it. May throw a CniError (e.g. code 11).
   */
  annotationsFor?: (
    namespace: string,
    name: string,
    uid?: string,
  ) => Promise<Record<string, string> | undefined>;
  /** Called after an ADD, DEL or GC succeeded (cluster mode refreshes the NodeConfig status). */
  onAttachmentsChanged?: () => void;
}

/** The agent of one node. */
export class Agent {
  readonly log: (fields: Record<string, unknown>) => void;
  #server?: RpcServer;
  #store?: Store;
  #handle?: Handle;
  /** The node's own netns as a file (it never changes), read at the first ADD. */
  #nodeNetns?: StatIdentity;
  #handler?: PodHandler;
  #notReadyReason = "waiting for the node configuration";
  reconcileReport?: ReconcileReport;
  readonly startedAt: number = Date.now();
  /** The metrics the request path updates; undefined turns them off. */
  metrics?: AgentMetrics;
  /** Providers for `flock status` and `/metrics` that BGP/anycast components fill in. */
  readonly statusHooks: StatusHooks = {};
  /** Whether the socket and the store are still what a CNI call needs (`/readyz`). */
  readonly health = new RuntimeHealth();
  #node?: NodeConfig;
  #pool6?: AddressPool;
  #pool4?: AddressPool;
  #lastBirdReload?: BirdReloadStatus;
  #routing?: NodeRouting;
  /** The node's own addresses (cluster mode: its Node's InternalIPs), for the router id. */
  #nodeAddresses: readonly string[] = [];
  /** Passwords of the BGP peers' Secrets (cluster mode); never logged or shown. */
  #secretPasswords: ReadonlyMap<string, string> = new Map();
  #anycast?: AnycastRoutes;
  /** The datapath of the configuration in force (set with the handler). */
  #datapath?: Datapath;
  /** Restores a pod's host side after its veth went down and up (host_side_repair.ts). */
  readonly #hostSideRepair = new HostSideRepair({
    target: () => this.#repairTarget(),
    inTurn: (containerId, fn) => this.#server ? this.#server.forContainer(containerId, fn) : fn(),
    log: (fields) => this.log(fields),
    onRepaired: () => this.metrics?.hostSideRepaired(),
  });
  #releaseSweep?: ReturnType<typeof setInterval>;
  /** The stuck-release sweep in progress, if any (close waits for it). */
  #sweep?: Promise<void>;
  /** The next try of a reconfigure's summary routes that failed (see {@link #applyRouting}). */
  #routingRetry?: ReturnType<typeof setTimeout>;
  /** The reconcile problem those routes' failure put in the report, while it stands. */
  #routingProblem?: string;
  /**
   * The last {@link configure} or {@link reconfigureRouting}, which run one after another
   * (settled once it is done, whatever its outcome).
   */
  #configured: Promise<unknown> = Promise.resolve();
  /** Set by {@link close}: a configure still reconciling then stops before it serves. */
  #closed = false;
  /** While a configure runs (its reconcile awaits), the sweep leaves the handler and pools alone. */
  #configuring = false;
  /** Test-only (crash_points.ts, test_faults.ts); read once, so a reconfigure does not re-arm them. */
  readonly #crashAt = crashHookFromEnv();
  readonly #vethDeleteFault = vethDeleteFaultFromEnv();
  readonly #vethDeleteDelay = vethDeleteDelayFromEnv();
  readonly #addFault = addFaultFromEnv();

  constructor(readonly options: AgentOptions) {
    // Default: JSON lines on stderr, level info and up.
    this.log = options.log ?? createLogger();
    if (options.metrics ?? true) {
      this.metrics = new AgentMetrics(() => this.status(), this.startedAt, FLOCK_VERSION, {
        anycast: () => this.#anycast,
      });
    }
  }

  /**
   * Why the agent does not serve pods yet, or why a CNI call would fail now (its socket or store
   * went away, a store write failed: see {@link RuntimeHealth}); undefined when it serves.
   */
  notReadyReason(): string | undefined {
    return this.#handler ? this.health.problem() : this.#notReadyReason;
  }

  /** What `flock status` shows (and the metric gauges are read from). */
  status(opts: SnapshotOptions = {}): Promise<StatusSnapshot> {
    const reason = this.notReadyReason();
    return buildStatusSnapshot({
      nodeName: this.options.nodeName,
      version: FLOCK_VERSION,
      startedAt: this.startedAt,
      ready: reason === undefined,
      reason,
      node: this.#node,
      pool6: this.#pool6,
      pool4: this.#pool4,
      store: this.#store,
      reconcile: this.reconcileReport,
      hooks: this.statusHooks,
      lastBirdReload: this.#lastBirdReload,
      routerId: this.#routing?.routerId(),
      peersWithoutIpv6: this.#routing?.peersWithoutIpv6,
      peersWithoutIpv4Link: this.#routing?.peersWithoutIpv4Link,
      peersWithoutIpv4Address: this.#routing?.peersWithoutIpv4Address,
    }, opts);
  }

  /** Hook for the BIRD driver: records the outcome of one `birdc configure`. */
  recordBirdReload(reload: BirdReloadStatus): void {
    this.#lastBirdReload = reload;
    this.metrics?.birdReload(reload.ok);
  }

  /** Whether the agent serves pods. */
  get ready(): boolean {
    return this.#handler !== undefined;
  }

  /** Opens the RPC socket; requests get code 11 until {@link configure} finishes. */
  async listen(): Promise<void> {
    this.#server = new RpcServer({
      path: this.options.socketPath,
      handler: (req, hold) => this.#dispatch(req, hold),
      log: this.log,
      // After a burst of pod starts, give freed native memory back (BRIEF §8: RSS ≤ 64 MiB).
      onIdle: trimFreedMemory,
    });
    await this.#server.start();
    this.health.socketBound(this.options.socketPath);
    this.log({ msg: "listening", socket: this.options.socketPath, node: this.options.nodeName });
  }

  /**
   * Takes the node configuration, reconciles the node and starts serving pods; resolves once it
   * serves. Calls run one after another (the reconcile awaits its leftovers' veth deletions, and
   * two reconciles of one store must not interleave).
   */
  configure(node: NodeConfig): Promise<ReconcileReport> {
    const run = this.#configured.then(async () => {
      this.#configuring = true;
      try {
        return await this.#configureNow(node);
      } finally {
        this.#configuring = false;
      }
    });
    this.#configured = run.catch(() => {});
    return run;
  }

  async #configureNow(node: NodeConfig): Promise<ReconcileReport> {
    this.#refuseIfClosed();
    const cooldownMs = this.options.cooldownMs ?? DEFAULT_COOLDOWN_MS;
    if (!this.#store) {
      this.#store = Store.open(this.options.stateDir);
      this.health.storeOpened(this.#store.path);
    }
    this.#handle ??= this.options.netnsPath
      ? Handle.forNetns(this.options.netnsPath)
      : Handle.current();
    // Before the reconcile's dumps: a veth set up after them is seen once the handler serves.
    this.#hostSideRepair.start(this.#handle);
    const datapath = new Datapath(this.#handle, {
      routesIPv4: node.cidr4 !== undefined,
      log: this.log,
      // Every ADD's own veth up: no repair check when its notification is read.
      onHostVethUp: (index) => this.#hostSideRepair.noteOwnUp(index),
    });
    const pool6 = node.cidr6 ? new AddressPool(node.cidr6, { cooldownMs }) : undefined;
    const pool4 = node.cidr4 ? new AddressPool(node.cidr4, { cooldownMs }) : undefined;
    const started = performance.now();
    const anycast = new AnycastRoutes({ node: this.#handle, store: this.#store, log: this.log });
    // A reconfigure: the old pools stay in force if its reconcile fails, after it may have
    // released leftovers in the store; they must then give those back too (no leaked address).
    const reconfiguring = this.#handler !== undefined;
    const heldBefore = reconfiguring ? storeHeldAddresses(this.#store) : undefined;
    let report: ReconcileReport;
    try {
      report = await reconcile({
        store: this.#store,
        datapath,
        pool6,
        pool4,
        cooldownMs,
        anycast,
        mtu: node.mtu,
        keepRoute: (dst) => isSummaryRoute(node, dst) || this.#holdsPods(dst),
      });
    } catch (e) {
      if (heldBefore) this.#releaseIntoPoolsInForce(heldBefore);
      throw e;
    }
    // A stop signal during the reconcile's await: serving now would start the sweep timer and
    // the routing after close has stopped them (and on a closed store).
    this.#refuseIfClosed();
    report.trigger = reconfiguring ? "reconfigure" : "start-up";
    report.at = new Date().toISOString();
    this.log({
      msg: "reconciled",
      ms: Math.round((performance.now() - started) * 10) / 10,
      ...report,
      problems: report.problems.length ? report.problems : undefined,
      notes: report.notes.length ? report.notes : undefined,
    });
    const handler = new PodHandler({
      store: this.#store,
      datapath,
      anycast,
      node,
      pool6,
      pool4,
      log: this.log,
      crashAt: this.#crashAt,
      vethDeleteFault: this.#vethDeleteFault,
      vethDeleteDelay: this.#vethDeleteDelay,
      addFault: this.#addFault,
      lookupAnnotations: this.options.annotationsFor,
      withheldUnsettled: () => this.#hostSideRepair.unsettledVeths(),
    });
    await this.#applyRouting(node, report, reconfiguring);
    // A stop signal while a busy kernel's dump was read again: as after the reconcile.
    this.#refuseIfClosed();
    // In force only now: a first start whose routing fails (cluster mode tries it again and
    // again) must not show its config, pools and report in `flock status` and the metrics, nor
    // count its reconcile's actions at every try. A reconfigure gets here whatever its routing.
    this.reconcileReport = report;
    this.metrics?.reconciled(report);
    [this.#node, this.#pool6, this.#pool4] = [node, pool6, pool4];
    // Ready only now, with the node's summary routes in place: a first start whose routing
    // fails serves no pod before it exits, and `ready` means the node is fully set up.
    this.#handler = handler;
    this.#datapath = datapath;
    this.#anycast?.stopResync();
    this.#anycast = anycast;
    anycast.startResync();
    this.#releaseSweep ??= setInterval(() => {
      // A reconfigure's reconcile has restored the new pools from the store while the handler in
      // force still has the old ones: what the sweep freed now would stay taken in the new ones.
      if (this.#configuring) return;
      this.#probeStoreAfterFailure();
      this.#pruneCooledReleases(cooldownMs);
      this.#finishStuckReleases();
      this.#freeUnroutedWithheld();
      this.#relocateUnknownNetns();
    }, releaseSweepMsFromEnv(RELEASE_SWEEP_MS));
    Deno.unrefTimer(this.#releaseSweep);
    return report;
  }

  /** What a host side repair works with; undefined until a configuration serves, and during one. */
  #repairTarget(): RepairTarget | undefined {
    const [handler, datapath, store] = [this.#handler, this.#datapath, this.#store];
    if (!handler || !datapath || !store || this.#configuring || this.#closed) return undefined;
    return {
      store,
      datapath,
      anycast: this.#anycast,
      isRemoving: (rec) => handler.isRemoving(rec),
    };
  }

  #refuseIfClosed(): void {
    if (this.#closed) throw new Error("the agent is closing: not configured");
  }

  /** After a reconfigure's reconcile failed: the pools in force give back what the store freed. */
  #releaseIntoPoolsInForce(heldBefore: ReadonlySet<string>): void {
    try {
      const released = releaseNoLongerHeld(this.#store!, heldBefore, [this.#pool6, this.#pool4]);
      if (released.length) {
        this.log({ msg: "failed reconfigure: released what it freed in the store", released });
      }
    } catch (e) {
      // The store unreadable too: the next start restores the pools from it.
      this.log({ level: "error", msg: "cannot resync the pools with the store", error: String(e) });
    }
  }

  /**
   * The routing step of a configure. At the first start its failure fails the start (nothing
   * served yet, nothing switched). In a reconfigure the reconcile has already rewritten the store
   * and the kernel for the new config, so going back is no option: the config is applied whole,
   * the failure goes into the report and the log, and the summary routes are retried in the
   * background (until they go in, a later config replaces this one, or the agent closes).
   */
  async #applyRouting(
    node: NodeConfig,
    report: ReconcileReport,
    reconfiguring: boolean,
  ): Promise<void> {
    // The new report replaces the one a pending retry would clear.
    clearTimeout(this.#routingRetry);
    this.#routingProblem = undefined;
    try {
      // A reconfigure's config stays in NodeRouting whatever its summary routes do: BIRD gets
      // the BGP part of the config the agent reports in force.
      await this.#configureRouting(node, { keepOnSummaryFailure: reconfiguring });
    } catch (e) {
      if (!reconfiguring) throw e;
      const problem = `summary routes not installed: ${(e as Error).message}; retried in the ` +
        "background";
      report.problems.push(problem);
      this.log({ level: "error", msg: "reconfigure: " + problem });
      this.#routingProblem = problem;
      const failures = new FailureStreak(
        "summary routes: retry",
        this.log,
        "retrying with backoff",
      );
      this.#retryRoutingLater(node, failures);
    }
  }

  /** Tries `node`'s summary routes again after a pause that grows with each failed try. */
  #retryRoutingLater(node: NodeConfig, failures: FailureStreak): void {
    const delayMs = backoffMs(failures.failures + 1, ROUTING_RETRY_FIRST_MS, ROUTING_RETRY_MAX_MS);
    this.#routingRetry = setTimeout(() => {
      this.#routingRetry = undefined;
      // In the configure chain: a try must not interleave with a reconfigure or a SIGHUP reload.
      const run = this.#configured.then(async () => {
        // Closing, or a later config is in force (its own routing step ran): nothing to retry.
        if (this.#closed || this.#node !== node) return;
        try {
          await this.#configureRouting(node);
        } catch (e) {
          // One line when the retries start failing (and a reminder now and then): the
          // `reconfigure:` line said it at error already, and "resolved" below ends it.
          const retryInMs = backoffMs(
            failures.failures + 2,
            ROUTING_RETRY_FIRST_MS,
            ROUTING_RETRY_MAX_MS,
          );
          failures.failed(e, { retryInMs });
          this.#retryRoutingLater(node, failures);
          return;
        }
        this.#routingProblemResolved("on retry");
      });
      this.#configured = run.catch(() => {});
    }, delayMs);
    Deno.unrefTimer(this.#routingRetry);
  }

  /**
   * The summary routes whose failure a reconfigure reported are in (a retry, or a SIGHUP reload
   * of the config in force): no retry is left, and the problem leaves the report `flock status`
   * and flock_reconcile_problems read. The `reconciled` line named it, so one line says it is
   * resolved.
   */
  #routingProblemResolved(how: string): void {
    clearTimeout(this.#routingRetry);
    this.#routingRetry = undefined;
    const problem = this.#routingProblem;
    if (problem === undefined) return;
    this.#routingProblem = undefined;
    const report = this.reconcileReport;
    if (report) report.problems = report.problems.filter((p) => p !== problem);
    this.log({
      msg: `summary routes installed ${how}: reconcile problem resolved`,
      resolved: problem,
      problemsLeft: report?.problems.length ?? 0,
    });
  }

  /**
   * After a failed store write, /readyz (and cluster mode's node condition) stays failing until a
   * write goes through; on an idle node, or one the scheduler stopped sending pods to because of
   * that very condition, no ADD or DEL would come to clear it: the sweep writes a probe instead.
   */
  #probeStoreAfterFailure(): void {
    if (!this.health.writeFailing || !this.#store) return;
    try {
      this.#store.probeWrite();
      this.health.writeSucceeded();
      this.log({ msg: "the store takes writes again" });
    } catch (e) {
      this.health.writeFailed(e);
    }
  }

  /**
   * Drops the stored releases whose cooldown is over. Without this the release table grows by a
   * row per deleted pod (`next` over a /64 never reuses an address) until the next start.
   */
  #pruneCooledReleases(cooldownMs: number): void {
    try {
      this.#store?.pruneReleases(Date.now() - cooldownMs);
    } catch (e) {
      if (isStoreError(e)) this.health.writeFailed(e);
      this.log({ level: "error", msg: "pruning cooled-down releases failed", error: String(e) });
    }
  }

  /**
   * Gives back the addresses withheld through another pod's veth (withheld.ts) whose route went
   * while the agent ran (an operator's `ip route del`); an owner's DEL gives its own back itself.
   */
  #freeUnroutedWithheld(): void {
    try {
      this.#handler?.freeUnroutedWithheld();
    } catch (e) {
      if (isStoreError(e)) this.health.writeFailed(e);
      this.log({ level: "error", msg: "freeing withheld addresses failed", error: String(e) });
    }
  }

  /**
   * Learns where the veths of records unknown since a restart are (netns_relocate.ts): while one
   * is unknown, every new pod's ADD pays a link dump, and kubelet rarely sends the CHECK that
   * would find it. Synchronous and additive, so it runs in no container's turn.
   */
  #relocateUnknownNetns(): void {
    try {
      const report = this.#handler?.relocateUnknownNetns();
      if (report?.located || report?.vanished) {
        this.log({ msg: "learnt where unknown records' veths are", ...report });
      }
    } catch (e) {
      this.log({
        level: "error",
        msg: "looking for unknown records' netns failed",
        error: String(e),
      });
    }
  }

  /**
   * A DEL whose background veth deletion failed leaves its record `releasing` (addresses held),
   * and runtimes never repeat a DEL that succeeded: retry those here. A release whose deletion is
   * still running is not stuck and is left alone: waiting for it (under `exclusive`, as before)
   * held every ADD and DEL of the node for as long as one veth took to go, which the kernel can
   * stretch to minutes ("waiting for … to become free"). Each retry runs in its container's turn
   * (RpcServer.forContainer), so no ADD or DEL of the same container races it and the other
   * containers go on. The veth deletions run off the event loop as DEL's do, as many at once as
   * GC's.
   */
  #finishStuckReleases(): Promise<void> {
    const server = this.#server;
    // A sweep that outlasts the interval is not joined by a second one.
    if (this.#sweep || !this.#handler || !server || !this.#store) return Promise.resolve();
    const handler = this.#handler;
    let stuck: Attachment[];
    try {
      stuck = this.#store.listByState("releasing").filter((rec) => !handler.isRemoving(rec));
    } catch (e) {
      // Thrown out of the interval's callback, it would end the agent; the next sweep reads again.
      this.log({ level: "error", msg: "listing stuck releases failed", error: String(e) });
      return Promise.resolve();
    }
    if (!stuck.length) return Promise.resolve();
    this.log({ msg: "retrying stuck releases", count: stuck.length });
    const retry = (listed: Attachment) =>
      server.forContainer(listed.containerId, async () => {
        // The container's own ADD or DEL may have finished it meanwhile; a reconfigure may have
        // made a new handler (with new pools).
        const rec = this.#store?.get(listed.containerId, listed.ifname);
        const current = this.#handler;
        if (rec?.state !== "releasing" || !current || current.isRemoving(rec)) return;
        await current.release(rec);
        this.log({ msg: "finished a stuck release", containerId: rec.containerId });
      });
    return this.#sweep = forEachBounded(stuck, VETH_DELETIONS_IN_FLIGHT, retry).then((outcomes) => {
      outcomes.forEach((outcome, i) => {
        if (outcome.status === "fulfilled") return;
        // A release that could not write its end (disk full) is one more reason CNI calls fail.
        if (isStoreError(outcome.reason)) this.health.writeFailed(outcome.reason);
        this.log({
          level: "error",
          msg: "retrying a stuck release failed",
          containerId: stuck[i].containerId,
          error: String(outcome.reason),
        });
      });
    }).catch((e) => this.log({ level: "error", msg: "release sweep failed", error: String(e) }))
      .finally(() => this.#sweep = undefined);
  }

  /**
   * Summary routes (awaited: a busy kernel's interrupted dump is read again after a pause that
   * does not block the agent); BIRD's reload runs in the background and is recorded when done.
   */
  async #configureRouting(
    node: NodeConfig,
    options: { keepOnSummaryFailure?: boolean } = {},
  ): Promise<void> {
    if (!this.#routing) {
      this.#routing = new NodeRouting({
        handle: this.#handle!,
        nodeName: this.options.nodeName,
        nodeAddresses: this.#nodeAddresses,
        secretPasswords: this.#secretPasswords,
        bird: this.options.bird,
        log: this.log,
        // Every attempt, retries included: a reload retried after a timeout must show as done.
        onBirdReload: (s) => this.recordBirdReload(reloadSummary(s)),
      });
      const bird = this.options.bird;
      if (bird) {
        this.statusHooks.bgpSessions = async () =>
          (await bgpSessions(bird.socketPath, { birdcPath: bird.birdcPath })).map((s) => ({
            name: s.name,
            peer: s.neighborAddress,
            asn: s.neighborAs,
            state: s.bgpState,
            up: s.established,
            since: s.since?.toISOString(),
            uptimeSeconds: s.uptimeSeconds,
            info: s.info,
          }));
      }
    }
    try {
      await this.#routing.applyConfig(node, (dst) => this.#holdsPods(dst), options);
    } catch (e) {
      // Kept in force (see NodeRouting.applyConfig): BIRD gets its BGP part now, and the summary
      // routes come with the retry.
      if (options.keepOnSummaryFailure) this.#trackReload(this.#routing.reloadBird());
      throw e;
    }
    this.#trackReload(this.#routing.reloadBird());
  }

  /** Whether a committed pod holds an address inside the (summary) prefix `dst`. */
  #holdsPods(dst: Prefix): boolean {
    if (dst.len === (dst.ip.family === AF_INET6 ? 128 : 32)) return false;
    return (this.#store?.listByState("committed") ?? []).some((rec) =>
      [rec.ipv6, rec.ipv4].some((a) => a !== undefined && prefixContains(dst, parseIP(a)))
    );
  }

  /**
   * The other nodes of the BGP mesh (cluster mode's NodeConfig watch); used when the node's
   * `bgp.nodeMesh` is on. Resolves when BIRD has answered.
   */
  async setMeshPeers(peers: MeshPeer[]): Promise<void> {
    if (!this.#routing) throw new Error("setMeshPeers before configure");
    await this.#trackReload(this.#routing.setMeshPeers(peers));
  }

  /**
   * Applies a re-read NodeConfig whose only changes are in `bgp` (peers, AS, graceful restart):
   * BIRD is reconfigured, pods are untouched. Other changes need an agent restart; returns
   * false (and changes nothing) for those.
   */
  reconfigureRouting(node: NodeConfig): Promise<boolean> {
    // In the configure chain: two SIGHUPs' kernel parts both await (a busy kernel's pauses), and
    // the first finishing last would leave its older config in force; close waits for it too.
    const run = this.#configured.then(() => this.#reconfigureRoutingNow(node));
    this.#configured = run.catch(() => {});
    return run;
  }

  async #reconfigureRoutingNow(node: NodeConfig): Promise<boolean> {
    this.#refuseIfClosed();
    if (!this.#routing || !this.#node) throw new Error("reconfigureRouting before configure");
    const withoutBgp = (n: NodeConfig) => JSON.stringify({ ...n.spec, bgp: undefined });
    if (withoutBgp(node) !== withoutBgp(this.#node)) return false;
    // The kernel part's failure (a kernel too busy to list routes) is the caller's to report.
    await this.#routing.applyConfig(node, (dst) => this.#holdsPods(dst));
    // In force from now: the next SIGHUP compares against it, and every reader sees its BGP part.
    this.#node = node;
    // Its summary routes are in: a retry for the config it replaced has nothing left to do.
    this.#routingProblemResolved("by a reload");
    await this.#trackReload(this.#routing.reloadBird());
    return true;
  }

  /**
   * The node's own addresses (cluster mode: its Node's InternalIPs): without `bgp.routerID` the
   * first IPv4 one is BIRD's router id. Set before {@link configure}, so that the first bird.conf
   * has it; a later change reloads BIRD. Resolves when BIRD has answered.
   */
  async setNodeAddresses(addresses: readonly string[]): Promise<void> {
    this.#nodeAddresses = [...addresses];
    if (this.#routing) await this.#trackReload(this.#routing.setNodeAddresses(addresses));
  }

  /**
   * The passwords of the BGP peers' `passwordSecretRef`s, by `name/key` (cluster mode reads the
   * Secrets). Set before {@link configure}, so that the first bird.conf has them; a later change
   * reloads BIRD. A peer whose password is missing here is left out of bird.conf.
   */
  async setSecretPasswords(passwords: ReadonlyMap<string, string>): Promise<void> {
    this.#secretPasswords = passwords;
    if (this.#routing) await this.#trackReload(this.#routing.setSecretPasswords(passwords));
  }

  /** What the BIRD driver did last (undefined without BIRD). */
  birdStatus(): ReturnType<NodeRouting["birdStatus"]> {
    return this.#routing?.birdStatus();
  }

  /**
   * Waits for a reload (NodeRouting's onBirdReload hook records its outcome); logs a throw,
   * unless it is a render failure NodeRouting logs (and retries) itself.
   */
  #trackReload(done: ReturnType<NodeRouting["configure"]>): Promise<void> {
    return done.then(
      () => {},
      (e) => {
        if (isHandledRenderFailure(e)) return;
        this.log({ level: "error", msg: "bird config failed", error: String(e) });
      },
    );
  }

  async #dispatch(raw: RpcRequest, hold?: HoldWork): Promise<RpcResponse> {
    if (raw.command === "STATUS" && raw.config[STATUS_DETAIL_KEY] === true) {
      // `flock status`: answered ready or not, so the operator sees why.
      return { ok: true, result: { ...await this.status({ integrity: true }) } };
    }
    const started = performance.now();
    const pod = parseCniArgs(raw.args);
    const fields: Record<string, unknown> = {
      command: raw.command,
      containerId: raw.containerId || undefined,
      ifname: raw.ifname || undefined,
      pod: pod.K8S_POD_NAME ? `${pod.K8S_POD_NAMESPACE ?? ""}/${pod.K8S_POD_NAME}` : undefined,
    };
    if (raw.command === "DEL") {
      const held = this.#store?.get(raw.containerId, raw.ifname);
      if (held) fields.ips = [held.ipv6, held.ipv4].filter(Boolean);
    }
    let response: RpcResponse;
    try {
      if (!this.#handler) {
        throw new CniError(
          raw.command === "STATUS" ? CniCode.notAvailable : CniCode.tryAgainLater,
          `flock agent is not ready: ${this.#notReadyReason}`,
        );
      }
      const req = revalidate(raw);
      if (req.command === "ADD") refuseNodeNetns(req.netns, this.#nodeNetnsIdentity());
      response = await this.#handler.handle(req, hold);
      if (response.ok && response.result) {
        fields.ips = (response.result.ips as { address: string }[])?.map((i) => i.address);
      }
      // An ADD writes the store twice; a DEL of a held record once.
      if (response.ok && (raw.command === "ADD" || fields.ips && raw.command === "DEL")) {
        this.health.writeSucceeded();
      }
      if (response.ok && raw.command !== "STATUS" && raw.command !== "CHECK") {
        this.options.onAttachmentsChanged?.();
        if (raw.command === "DEL" || raw.command === "GC") {
          this.#trackReload(this.#routing?.pruneDraining() ?? Promise.resolve(undefined));
        }
      }
    } catch (e) {
      if (isStoreError(e)) this.health.writeFailed(e);
      response = { ok: false, error: toCniError(e).toBody() };
    }
    const ms = performance.now() - started;
    this.metrics?.request(raw.command, response.ok ? undefined : response.error.code, ms / 1000);
    if (raw.command !== "STATUS") {
      this.log({
        ...fields,
        level: response.ok ? "info" : "warn",
        msg: `${raw.command} ${response.ok ? "ok" : "failed"}`,
        outcome: response.ok ? "ok" : "error",
        ms: Math.round(ms * 100) / 100,
        error: response.ok ? undefined : response.error,
      });
    }
    return response;
  }

  #nodeNetnsIdentity(): StatIdentity | undefined {
    this.#nodeNetns ??= statIdentity(`/proc/self/fd/${this.#handle!.netnsFd}`);
    return this.#nodeNetns;
  }

  /** The node configuration in force (undefined until {@link configure}). */
  get node(): NodeConfig | undefined {
    return this.#node;
  }

  /** Sets why the agent is not ready yet (the message CNI requests get with code 11). */
  waitingFor(reason: string): void {
    this.#notReadyReason = reason;
  }

  /**
   * Applies a changed node configuration: waits until no request is in progress (none can
   * allocate from the old pools meanwhile), then rebuilds IPAM and reconciles exactly as at
   * start. Running pods keep their addresses, also those outside a changed CIDR.
   */
  reconfigure(node: NodeConfig): Promise<ReconcileReport> {
    if (!this.#server) return this.configure(node);
    return this.#server.exclusive(() => this.configure(node));
  }

  /**
   * BGP sessions (configured, established) and the last BIRD reload, for the NodeConfig
   * status; undefined when the agent drives no BIRD. Unreadable sessions count as none up.
   */
  async routingStatus(): Promise<
    | {
      sessions: number;
      sessionsUp: number;
      lastReload?: { time: string; ok: boolean; message?: string };
      /** The router id in bird.conf (cluster mode publishes it in the NodeConfig status). */
      routerId?: RouterId;
      /** Summaries of an earlier config still announced while pods hold addresses in them. */
      drainingCIDRs?: string[];
      /** Peers left without IPv6 routes (no global IPv6 next hop; see NodeRouting). */
      peersWithoutIpv6?: readonly string[];
      /** Single-hop IPv4 peers on no link with an IPv4 address of the node (see NodeRouting). */
      peersWithoutIpv4Link?: readonly string[];
      /** IPv4 multihop peers on a node without an IPv4 address (see NodeRouting). */
      peersWithoutIpv4Address?: readonly string[];
    }
    | undefined
  > {
    const read = this.statusHooks.bgpSessions;
    const reload = this.#lastBirdReload;
    if (!read && !reload) return undefined;
    let sessions: { up: boolean }[] = [];
    try {
      sessions = (await read?.()) ?? [];
    } catch {
      // BIRD not answering: nothing is established as far as anyone can tell.
    }
    return {
      sessions: sessions.length,
      sessionsUp: sessions.filter((s) => s.up).length,
      lastReload: reload && {
        time: reload.at,
        ok: reload.ok,
        ...(reload.message ? { message: reload.message.slice(0, 1024) } : {}),
      },
      routerId: this.#routing?.routerId(),
      drainingCIDRs: this.#routing?.draining.map(formatPrefix),
      peersWithoutIpv6: this.#routing?.peersWithoutIpv6,
      peersWithoutIpv4Link: this.#routing?.peersWithoutIpv4Link,
      peersWithoutIpv4Address: this.#routing?.peersWithoutIpv4Address,
    };
  }

  /** Counts for the NodeConfig status: attachments, addresses per family, outside the CIDRs. */
  stats(): {
    ready: boolean;
    notReadyReason: string;
    attachments: number;
    ipv6: number;
    ipv4: number;
    outsideCIDR: number;
  } {
    let [ipv6, ipv4, outsideCIDR] = [0, 0, 0];
    const records = this.#store?.listByState("committed") ?? [];
    for (const rec of records) {
      let outside = false;
      if (rec.ipv6) {
        ipv6++;
        outside ||= !this.#node?.cidr6 || !prefixContains(this.#node.cidr6, parseIP(rec.ipv6));
      }
      if (rec.ipv4) {
        ipv4++;
        outside ||= !this.#node?.cidr4 || !prefixContains(this.#node.cidr4, parseIP(rec.ipv4));
      }
      if (outside) outsideCIDR++;
    }
    return {
      ready: this.ready,
      notReadyReason: this.notReadyReason() ?? "",
      attachments: records.length,
      ipv6,
      ipv4,
      outsideCIDR,
    };
  }

  /** Stops serving and closes the store; a configure in progress stops before it serves. */
  async close(): Promise<void> {
    this.#closed = true;
    // A configure still reconciling stops before it serves (it awaits veth deletions that use
    // the store and the node handle closed below).
    await this.#configured;
    clearInterval(this.#releaseSweep);
    clearTimeout(this.#routingRetry);
    // Its veth deletion runs off the event loop and then writes the store: let it land first.
    await this.#sweep;
    await this.#hostSideRepair.close();
    this.#anycast?.stopResync();
    await this.#routing?.close();
    await this.#server?.close();
    this.#store?.close();
    this.#handle?.close();
  }
}

/** Re-validates a request that came over the raw socket exactly as the plugin does. */
function revalidate(req: RpcRequest): RpcRequest {
  const env: Record<string, string | undefined> = {
    CNI_COMMAND: req.command,
    CNI_CONTAINERID: req.containerId,
    CNI_NETNS: req.netns,
    CNI_IFNAME: req.ifname,
    CNI_ARGS: req.args,
  };
  return parseCniInvocation(env, JSON.stringify(req.config));
}

/**
 * Refuses an ADD whose CNI_NETNS is the node's own namespace (`ctr run --cni --net-host` hands
 * the plugin the host's): the pod side's default routes would replace the node's. libcni's skel
 * refuses it with code 8 too.
 */
function refuseNodeNetns(netns: string, node: StatIdentity | undefined): void {
  // A path that cannot be read is not refused here: it fails with code 8 when the datapath
  // opens it.
  if (sameIdentity(statIdentity(netns), node)) {
    throw new CniError(
      CniCode.invalidNetns,
      `CNI_NETNS ${netns} is the node's own network namespace`,
      "a pod needs a network namespace of its own",
    );
  }
}
