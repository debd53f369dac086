/**
 * Cluster mode: the agent as a Kubernetes citizen.
 *
 * - Its NodeConfig (cluster-scoped, named after the node) is the node's config. The agent
 *   answers "try again later" until it has one; after `waitForConfigMs` without one it falls
 *   back to `Node.spec.podCIDRs`, so flock works on a plain cluster. A NodeConfig that exists
 *   but is invalid is not overridden by the fallback: the agent stays not ready and says why.
 * - A first configure that fails (the store cannot be opened, the kernel is too busy, the node's
 *   summary routes cannot be installed) is tried again with backoff (1 s doubling to 30 s): the
 *   agent stays up answering "try again later" with the reason (also in the NodeConfig status,
 *   reason `ConfigureFailed`), and serves once a try succeeds. Only a store written by a newer
 *   flock (a downgrade) ends it: no retry can fix that.
 * - Later spec changes are applied to new pods; running pods keep their addresses, MTU and
 *   routes (see {@link describeConfigChange}). An invalid new spec is rejected (logged, shown
 *   in status) and the last good one stays in force. A valid one whose reconfigure fails (a busy
 *   kernel, a store write) is tried again with the first configure's backoff until it applies,
 *   a newer spec replaces it, or the spec in force is asked for again; the node serves on the
 *   spec in force meanwhile (Ready, reason `ConfigChangeFailed`). A failure no retry fixes
 *   ({@link retryMayFix}) waits for a newer spec. A deleted NodeConfig leaves the node running
 *   on its last config.
 * - The other nodes' NodeConfigs are handed to `onPeersChanged` (the BGP node mesh). A mesh peer
 *   whose Node or NodeConfig is deleted stays in the mesh for a grace period (kept_peers.ts).
 * - Pods of this node feed the annotation lookups of ADDs that came without annotations.
 * - BGP passwords named by `passwordSecretRef` are read from Secrets of the agent's namespace
 *   before bird.conf is rendered, and kept current (see bgp_secrets.ts).
 * - The NodeConfig's status is kept current (rate-limited, coalesced). It publishes the BGP
 *   router id, which is compared with those the other NodeConfigs publish (router_ids.ts).
 * - API server restarts and watch expiry are absorbed by the informers; nothing here touches
 *   a running pod because the API server went away.
 *
 * @module
 */

import type { NodeConfig } from "../config.ts";
import { describeApiError, type KubeApi, NODECONFIG_PATH, NODES_PATH, PODS_PATH } from "./api.ts";
import { Reflector } from "./reflector.ts";
import { Sleeper } from "./sleeper.ts";
import { PodAnnotationIndex, type PodInfo, projectPod } from "./pod_annotations.ts";
import {
  canonicalJson,
  describeConfigChange,
  meshPeersFor,
  nodeAddressesChanged,
  nodeConfigFromPodCIDRs,
  type NodeConfigObject,
  parseNodeConfigObject,
  peerChangeMatters,
  PeerConfigs,
  projectNodeAddresses,
  projectNodeConfig,
  specApplied,
} from "./node_configs.ts";
import type { MeshPeer, RouterId } from "../routing.ts";
import { routerIdCondition, RouterIdConflictLog, routerIdConflicts } from "./router_ids.ts";
import { BgpSecrets, passwordCondition } from "./bgp_secrets.ts";
import { DEFAULT_DELETED_PEER_GRACE_MS, type KeptPeerEvents, KeptPeers } from "./kept_peers.ts";
import {
  type AgentStats,
  buildStatus,
  countersIntervalMs,
  type RoutingStats,
  StatusReporter,
} from "./status_reporter.ts";
import { STATUS_REFRESH_UNSETTLED_MS, StatusRefreshSchedule } from "./status_refresh.ts";
import { backoffMs } from "../backoff.ts";
import { SchemaVersionError } from "../store.ts";
import { FailureStreak } from "../failure_streak.ts";
import { NetlinkArgumentError, NetlinkError } from "../../netlink/errors.ts";
import { EINVAL, EPERM } from "../../netlink/ffi.ts";

/** How long the agent waits for its NodeConfig before it uses `Node.spec.podCIDRs`. */
export const DEFAULT_CONFIG_WAIT_MS = 60_000;

/**
 * How long a NodeConfig in hand waits for the Node informer's first list: configuring before it
 * would render bird.conf without the mesh peers (their addresses come from the Nodes), and an
 * agent restart would then drop and re-open every mesh session.
 */
const NODES_SYNC_WAIT_MS = 10_000;

/** First pause before a failed first configure is tried again; doubles with every failure. */
const DEFAULT_CONFIGURE_RETRY_MS = 1_000;
/** Longest pause between two tries of a failing first configure or spec change. */
const CONFIGURE_RETRY_MAX_MS = 30_000;

/**
 * Whether trying the same config again may succeed where `e` failed. No: a store written by a
 * newer flock, a netlink request flock cannot even encode, or one the kernel refuses as invalid
 * or not permitted (EINVAL, EPERM say the same on every try; kernel_busy.ts). Anything else (a
 * kernel busy beyond the reconcile's own retries, a store write that failed, a link that vanished
 * mid-reconcile) may pass a moment later.
 */
function retryMayFix(e: unknown): boolean {
  if (e instanceof SchemaVersionError || e instanceof NetlinkArgumentError) return false;
  return !(e instanceof NetlinkError && (e.errno === EINVAL || e.errno === EPERM));
}

/** A spec change whose reconfigure failed: tried again until it applies or another spec replaces it. */
interface FailedChange {
  /** The latest object with this spec (its generation is the one to report once applied). */
  obj: NodeConfigObject;
  /** canonicalJson of the spec. */
  spec: string;
  error: string;
  /** False: {@link retryMayFix} says no; a newer spec or an agent restart tries again. */
  retrying: boolean;
  /** Its failed tries in a row (the backoff's exponent), logged once per streak. */
  streak: FailureStreak;
  timer?: ReturnType<typeof setTimeout>;
}

/** What cluster mode needs of the agent. */
export interface ClusterAgent {
  readonly ready: boolean;
  /** The config in force. */
  readonly node: NodeConfig | undefined;
  configure(node: NodeConfig): unknown;
  reconfigure(node: NodeConfig): Promise<unknown>;
  /** Sets the reason given to CNI requests while not ready. */
  waitingFor(reason: string): void;
  /** `notReadyReason` is set while ready too when a CNI call would fail now (agent/health.ts). */
  stats(): AgentStats & { notReadyReason: string; outsideCIDR: number };
  /** The other nodes of the BGP mesh (called once configured, and on every change). */
  setMeshPeers?(peers: MeshPeer[]): Promise<void>;
  /**
   * This node's InternalIPs, for the BGP router id (called before `configure`, then on every
   * change).
   */
  setNodeAddresses?(addresses: readonly string[]): Promise<void>;
  /**
   * The passwords of the BGP peers' Secrets, by `name/key` (called before `configure`, then on
   * every change).
   */
  setSecretPasswords?(passwords: ReadonlyMap<string, string>): Promise<void>;
  /** BGP sessions and the last BIRD reload (undefined without BIRD). */
  routingStatus?(): Promise<RoutingStats | undefined>;
  log(fields: Record<string, unknown>): void;
}

/** Options of {@link ClusterMode}. */
export interface ClusterModeOptions {
  nodeName: string;
  api: KubeApi;
  waitForConfigMs?: number;
  /** Bound of the wait for a pod the informer has not seen. */
  podWaitMs?: number;
  /** Least time between two status patches. */
  statusIntervalMs?: number;
  /** Least time between status writes that only move the pod and address counters; the floor of
   * {@link countersIntervalMs}, which grows with the cluster. */
  statusCountersIntervalMs?: number;
  /** The other nodes' valid NodeConfigs, sorted by name, whenever they change. */
  onPeersChanged?: (peers: NodeConfig[]) => void;
  /** Watch Nodes for the mesh peers' addresses (InternalIP); default true. */
  watchNodes?: boolean;
  /** The agent's namespace: where the Secrets of `passwordSecretRef` are. */
  namespace?: string;
  /** Period of the Secret re-reads (default 60 s) and while one is unavailable (default 5 s). */
  secretRefreshMs?: number;
  secretRetryMs?: number;
  /** How long a mesh peer whose Node or NodeConfig was deleted is kept (default 60 s; 0: not). */
  deletedPeerGraceMs?: number;
  /** First pause before a failed first configure is tried again (default 1 s; doubles to 30 s). */
  configureRetryMs?: number;
  log: (fields: Record<string, unknown>) => void;
}

/** Where the config in force came from. */
export type ConfigSource = "NodeConfig" | "podCIDRs";

/** The cluster side of one agent; see the module doc. */
export class ClusterMode {
  readonly pods: Reflector<PodInfo>;
  readonly configs: Reflector<NodeConfigObject>;
  /** Node addresses, for the mesh. */
  readonly nodes?: Reflector<string[]>;
  readonly annotations: PodAnnotationIndex;
  readonly status: StatusReporter;
  /** The BGP passwords named by the NodeConfig's `passwordSecretRef`s. */
  readonly secrets: BgpSecrets;
  /** Where the config in force came from (undefined until configured). */
  source?: ConfigSource;
  #agent?: ClusterAgent;
  #appliedSpec = "";
  #observedGeneration = 0;
  #specProblem = "";
  /** Why the last first-configure try failed ("" while none failed, or once one succeeded). */
  #configureProblem = "";
  /** Failed first-configure tries in a row (the backoff's exponent). */
  #configureFailures = 0;
  /** The spec of the last failed first-configure try: its own status patch must not cut the pause. */
  #failedSpec?: string;
  #applying: Promise<void> = Promise.resolve();
  /** The spec change that failed and is not applied (undefined: the spec asked for is in force). */
  #failedChange?: FailedChange;
  #peersText = "";
  #meshText = "";
  /** This node's InternalIPs as last handed to the agent (undefined: not yet). */
  #ownAddressesText?: string;
  /** This node's InternalIPs as its Node object last listed them (undefined: never seen). */
  #lastOwnAddresses?: string[];
  #refresh?: ReturnType<typeof setInterval>;
  /** When the status is next recomputed without an event (BGP sessions: status_refresh.ts). */
  readonly #refreshSchedule = new StatusRefreshSchedule();
  #peersQueued = false;
  readonly #peerConfigs = new PeerConfigs();
  readonly #keptPeers: KeptPeers;
  /** Recomputes the mesh when a kept peer's grace ends. */
  #keptPeersTimer?: ReturnType<typeof setTimeout>;
  #stopped = false;
  readonly #sleeper = new Sleeper();
  #acquiring?: Promise<void>;
  /** The router id in bird.conf when the status was last computed (undefined without BIRD). */
  #routerId?: RouterId;
  readonly #routerIdConflicts: RouterIdConflictLog;

  constructor(readonly options: ClusterModeOptions) {
    const { api, nodeName, log } = options;
    this.#routerIdConflicts = new RouterIdConflictLog(log);
    this.#keptPeers = new KeptPeers(options.deletedPeerGraceMs ?? DEFAULT_DELETED_PEER_GRACE_MS);
    this.pods = new Reflector({
      name: `pods on ${nodeName}`,
      source: {
        path: PODS_PATH,
        fieldSelector: `spec.nodeName=${nodeName}`,
        list: (q) => api.listPods(q),
        watch: (...args) => api.watch(...args),
      },
      project: projectPod,
      onChange: (c) => this.annotations.onChange(c),
      log,
    });
    this.annotations = new PodAnnotationIndex({
      synced: () => this.pods.hasSynced,
      waitMs: options.podWaitMs,
    });
    this.configs = new Reflector({
      name: "nodeconfigs",
      source: {
        path: NODECONFIG_PATH,
        list: (q) => api.listNodeConfigs(q),
        watch: (...args) => api.watch(...args),
      },
      project: projectNodeConfig,
      onChange: (c) => {
        if (c.key === nodeName) this.#ownChanged(c.type === "upsert" ? c.value : undefined);
        else if (peerChangeMatters(c)) this.#queuePeers();
      },
      onListed: () => this.#queuePeers(),
      log,
    });
    if (options.watchNodes ?? true) {
      this.nodes = new Reflector({
        name: "nodes",
        source: {
          path: NODES_PATH,
          list: (q) => api.listNodes(q),
          watch: (...args) => api.watch(...args),
        },
        project: projectNodeAddresses,
        onChange: (c) => {
          if (nodeAddressesChanged(c)) this.#queuePeers();
        },
        // Which nodes exist decides which NodeConfigs count for router-id conflicts.
        onListed: () => this.#queuePeers(),
        log,
      });
    }
    this.secrets = new BgpSecrets({
      namespace: options.namespace,
      readSecret: (namespace, name) => api.readSecretData(namespace, name),
      onChange: () => this.#secretsChanged(),
      refreshMs: options.secretRefreshMs,
      retryMs: options.secretRetryMs,
      log,
    });
    this.status = new StatusReporter({
      compute: () => this.#desiredStatus(),
      patch: (name, status) => api.patchNodeConfigStatus(name, status),
      minIntervalMs: options.statusIntervalMs,
      countersIntervalMs: () =>
        countersIntervalMs(this.configs.cache.size, options.statusCountersIntervalMs),
      log,
    });
  }

  /** Annotations for an ADD without them (the agent's `annotationsFor` hook). */
  annotationsFor(namespace: string, name: string, uid?: string): Promise<Record<string, string>> {
    return this.annotations.annotationsFor(namespace, name, uid);
  }

  /**
   * Starts the informers and, in the background, the wait for the node's config. A configure
   * that fails is tried again with backoff (see the module doc); `onFatal` is called when no retry
   * can help (a store written by a newer flock) or the wait itself failed: the agent should exit.
   */
  start(agent: ClusterAgent, onFatal: (err: unknown) => void): void {
    this.#agent = agent;
    this.pods.start();
    this.configs.start();
    this.nodes?.start();
    this.#acquiring = this.#acquire().catch(onFatal);
    // BGP sessions change with no event to tell: look again now and then (a patch is sent
    // only when something differs), often while a session is coming up, less and less often
    // while one stays down.
    this.#refresh = setInterval(() => {
      if (this.#refreshSchedule.due(performance.now())) this.status.request();
    }, STATUS_REFRESH_UNSETTLED_MS);
  }

  /** Resolves once the agent has a config (or cluster mode was stopped). */
  get configured(): Promise<void> {
    return this.#acquiring ?? Promise.resolve();
  }

  /** The other nodes whose NodeConfig status publishes this node's BGP router id. */
  get routerIdConflicts(): readonly string[] {
    return this.#routerIdConflicts.others;
  }

  /** Attachments changed (ADD/DEL/GC): refresh the status soon. */
  attachmentsChanged(): void {
    this.status.request();
  }

  /** Stops the informers and the status writer. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#refresh);
    clearTimeout(this.#keptPeersTimer);
    clearTimeout(this.#failedChange?.timer);
    this.#sleeper.wake();
    this.secrets.stop();
    this.status.stop();
    await Promise.all([this.pods.stop(), this.configs.stop(), this.nodes?.stop()]);
    await this.#acquiring;
    await this.#applying;
  }

  async #acquire(): Promise<void> {
    const agent = this.#agent!;
    const { nodeName, log } = this.options;
    const waitMs = this.options.waitForConfigMs ?? DEFAULT_CONFIG_WAIT_MS;
    const deadline = Date.now() + waitMs;
    agent.waitingFor(
      `waiting for NodeConfig ${nodeName} (up to ${Math.round(waitMs / 1000)} s, ` +
        `then Node.spec.podCIDRs)`,
    );
    let lastProblem = "";
    const nodesDeadline = Date.now() + NODES_SYNC_WAIT_MS;
    while (!this.#stopped) {
      const own = this.configs.cache.get(nodeName);
      if (own && this.nodes && !this.nodes.hasSynced && Date.now() < nodesDeadline) {
        await Promise.race([this.nodes.synced, this.#sleeper.sleep(100)]);
        continue;
      }
      if (own) {
        let config: NodeConfig | undefined;
        try {
          config = parseNodeConfigObject(own);
        } catch (e) {
          const msg = (e as Error).message;
          this.#specProblem = msg;
          this.#configureProblem = "";
          agent.waitingFor(`NodeConfig ${nodeName} is invalid: ${msg}`);
          if (msg !== lastProblem) log({ level: "error", msg: "NodeConfig invalid", error: msg });
          lastProblem = msg;
          this.status.request();
        }
        if (config) {
          this.#specProblem = "";
          const retryMs = await this.#tryConfigure(config, "NodeConfig", own);
          if (retryMs === undefined) return;
          await this.#sleeper.sleep(retryMs);
          continue;
        }
      } else if (Date.now() >= deadline && this.configs.hasSynced) {
        // Only once the informer has listed do we know there is no NodeConfig.
        const outcome = await this.#tryPodCIDRs();
        if (outcome === "configured") return;
        if (typeof outcome === "number") {
          await this.#sleeper.sleep(outcome);
          continue;
        }
        this.#configureProblem = "";
        agent.waitingFor(outcome);
        if (outcome !== lastProblem) log({ level: "warn", msg: outcome });
        lastProblem = outcome;
      }
      const left = deadline - Date.now();
      await this.#sleeper.sleep(left > 0 ? Math.min(left, 2_000) : 2_000);
    }
  }

  /**
   * Configures the node from `Node.spec.podCIDRs`: "configured", the pause before the next try
   * when the configure failed, or why there is nothing to configure from.
   */
  async #tryPodCIDRs(): Promise<"configured" | number | string> {
    const { nodeName, api, log } = this.options;
    let cidrs: string[];
    try {
      cidrs = await api.nodePodCIDRs(nodeName);
    } catch (e) {
      return `no NodeConfig ${nodeName}, and Node ${nodeName} cannot be read: ${
        describeApiError(e)
      }`;
    }
    const config = nodeConfigFromPodCIDRs(nodeName, cidrs);
    if (!config) return `no NodeConfig ${nodeName}, and Node ${nodeName} has no spec.podCIDRs`;
    log({
      level: "warn",
      msg: "no NodeConfig for this node; using Node.spec.podCIDRs",
      podCIDRs: cidrs,
      waitedMs: this.options.waitForConfigMs ?? DEFAULT_CONFIG_WAIT_MS,
    });
    return await this.#tryConfigure(config, "podCIDRs") ?? "configured";
  }

  /**
   * One try of the node's first configure: undefined once the agent serves, else the pause before
   * the next try (the agent then answers "try again later" with the reason).
   *
   * @throws {SchemaVersionError} a store written by a newer flock: no retry can fix that
   */
  async #tryConfigure(
    config: NodeConfig,
    source: ConfigSource,
    obj?: NodeConfigObject,
  ): Promise<number | undefined> {
    const { log } = this.options;
    try {
      await this.#configure(config, source, obj);
    } catch (e) {
      if (e instanceof SchemaVersionError) throw e;
      // Stopping: a configure cut short by the agent's close is no failure to retry.
      if (this.#stopped) return 0;
      const failures = ++this.#configureFailures;
      const retryMs = this.#retryPauseMs(failures);
      const error = e instanceof Error ? e.message : String(e);
      this.#configureProblem = error;
      this.#failedSpec = canonicalJson(config.spec);
      // No try count in the reason: the NodeConfig status is patched only when it changes.
      this.#agent!.waitingFor(`cannot configure the node (retried with backoff): ${error}`);
      log({
        level: "error",
        msg: "cannot configure the node; trying again",
        error,
        failures,
        retryInMs: retryMs,
      });
      this.status.request();
      return retryMs;
    }
    if (this.#configureFailures > 0) {
      log({ msg: "node configured after failed tries", failures: this.#configureFailures });
    }
    this.#configureFailures = 0;
    this.#configureProblem = "";
    this.#failedSpec = undefined;
    return undefined;
  }

  /** The pause after `failures` failed tries of a first configure or of a spec change. */
  #retryPauseMs(failures: number): number {
    return backoffMs(
      failures,
      this.options.configureRetryMs ?? DEFAULT_CONFIGURE_RETRY_MS,
      CONFIGURE_RETRY_MAX_MS,
    );
  }

  async #configure(
    config: NodeConfig,
    source: ConfigSource,
    obj?: NodeConfigObject,
  ): Promise<void> {
    const agent = this.#agent!;
    // Before the first bird.conf: its peers' passwords, and its router id is this node's IPv4
    // InternalIP (when it has one). A bird.conf without a peer would drop its session on every
    // agent restart.
    await this.secrets.use(config);
    if (this.#stopped) return;
    await agent.setSecretPasswords?.(this.secrets.passwords);
    this.#syncOwnAddresses();
    await agent.configure(config);
    this.source = source;
    this.#appliedSpec = canonicalJson(config.spec);
    if (obj) this.#observedGeneration = obj.generation;
    agent.log({
      msg: "ready",
      node: this.options.nodeName,
      source,
      cidr6: config.spec.cidr6,
      cidr4: config.spec.cidr4,
    });
    this.status.request();
    this.#queuePeers();
    // The NodeConfig appeared or changed during the awaits above, while the agent was not
    // ready yet: that event only woke the wait, so apply it now.
    const own = this.configs.cache.get(this.options.nodeName);
    if (own && own !== obj) this.#ownChanged(own);
  }

  #ownChanged(obj: NodeConfigObject | undefined): void {
    const agent = this.#agent;
    if (!agent) return;
    if (!agent.ready) {
      // A changed spec is tried at once; the status patch a failed try wrote is no news.
      if (!obj || canonicalJson(obj.spec ?? {}) !== this.#failedSpec) this.#sleeper.wake();
      return;
    }
    if (!obj) {
      this.options.log({
        level: "warn",
        msg: "NodeConfig deleted; the node keeps running on its last config",
        node: this.options.nodeName,
      });
      return;
    }
    this.status.observe(obj.status);
    const failed = this.#failedChange;
    if (failed && canonicalJson(obj.spec ?? {}) === failed.spec) {
      // The failed spec again (the status write that reported the failure, a relist): its retry
      // is due after the pause, not at every event.
      failed.obj = obj;
      return;
    }
    this.#queueChange(obj);
  }

  /** Applies `obj`'s spec after the changes queued before it. */
  #queueChange(obj: NodeConfigObject): void {
    this.#applying = this.#applying.then(() => this.#applyChange(obj)).catch((e) => {
      this.options.log({ level: "error", msg: "config change failed", error: String(e) });
    });
  }

  async #applyChange(obj: NodeConfigObject): Promise<void> {
    const agent = this.#agent!;
    const { log } = this.options;
    const spec = canonicalJson(obj.spec ?? {});
    const failed = this.#failedChange;
    if (failed && failed.spec !== spec) {
      this.#dropFailedChange(spec === this.#appliedSpec ? "withdrawn" : "replaced by a newer spec");
    }
    if (spec === this.#appliedSpec) {
      // A rejected or failed change reverted: the spec asked for is the one in force again.
      if (obj.generation !== this.#observedGeneration || this.#specProblem || failed) {
        this.#observedGeneration = obj.generation;
        this.#specProblem = "";
        this.status.request();
      }
      return;
    }
    let next: NodeConfig;
    try {
      next = parseNodeConfigObject(obj);
    } catch (e) {
      const msg = (e as Error).message;
      if (msg !== this.#specProblem) {
        log({
          level: "error",
          msg: "NodeConfig change rejected; keeping the last good config",
          error: msg,
        });
      }
      this.#specProblem = msg;
      this.status.request();
      return;
    }
    this.#specProblem = "";
    const old = agent.node;
    // A retry's changes were logged at its first try.
    const changes = old && !this.#failedChange ? describeConfigChange(old, next) : [];
    for (const change of changes) log({ level: "info", msg: "NodeConfig changed", change });
    // The new spec's Secrets are read before it reaches BIRD; both reach it in one reload
    // (BirdControl coalesces the two renders). Until the change resolves the agent gets the
    // passwords of both specs: it renders from the one in force, and a peer whose password it
    // lacks is left out of bird.conf (a moved passwordSecretRef would drop its session meanwhile,
    // or for good if the change fails).
    await this.secrets.use(next, old);
    void agent.setSecretPasswords?.(this.secrets.passwords);
    try {
      await agent.reconfigure(next);
    } catch (e) {
      await this.#followSecretsOf(agent.node);
      this.#changeFailed(obj, spec, e);
      return;
    }
    if (this.#failedChange) {
      this.#failedChange.streak.succeeded();
      this.#failedChange = undefined;
    }
    this.source = "NodeConfig";
    this.#appliedSpec = canonicalJson(next.spec);
    this.#observedGeneration = obj.generation;
    await this.#followSecretsOf(next);
    this.status.request();
    // The peers' draining CIDRs are checked against this node's CIDRs, which just changed.
    this.#queuePeers();
  }

  /**
   * A reconfigure to `obj`'s spec failed; the config in force stays and serves. Tried again with
   * the first configure's backoff unless {@link retryMayFix} says no; the status says why meanwhile.
   */
  #changeFailed(obj: NodeConfigObject, spec: string, e: unknown): void {
    // Stopping: a reconfigure cut short by the agent's close is no failure to retry.
    if (this.#stopped) return;
    const { log } = this.options;
    const failed = this.#failedChange ??= {
      obj,
      spec,
      error: "",
      retrying: true,
      streak: new FailureStreak("NodeConfig change", log, "retrying with backoff"),
    };
    failed.obj = obj;
    failed.error = e instanceof Error ? e.message : String(e);
    failed.retrying = retryMayFix(e);
    this.status.request();
    if (!failed.retrying) {
      log({
        level: "error",
        msg: "NodeConfig change failed; not retried (no retry can fix this), the previous spec " +
          "stays in force",
        generation: obj.generation,
        error: failed.error,
      });
      return;
    }
    const retryInMs = this.#retryPauseMs(failed.streak.failures + 1);
    failed.streak.failed(e, { level: "error", generation: obj.generation, retryInMs });
    failed.timer = setTimeout(() => {
      failed.timer = undefined;
      if (this.#failedChange === failed && !this.#stopped) this.#queueChange(failed.obj);
    }, retryInMs);
  }

  /** A failed change is no longer asked for: its retry is cancelled. */
  #dropFailedChange(how: string): void {
    const failed = this.#failedChange;
    if (!failed) return;
    clearTimeout(failed.timer);
    this.#failedChange = undefined;
    this.options.log({
      level: "info",
      msg: `failed NodeConfig change ${how} before it applied`,
      generation: failed.obj.generation,
      failures: failed.streak.failures,
    });
    this.status.request();
  }

  /**
   * What keeps the spec asked for from being in force while the node serves on the previous one
   * (`flock status` and the NodeConfig status show it); undefined when it is in force.
   */
  get configProblem(): string | undefined {
    // Not serving yet: the not-ready reason says it all.
    return this.#agent?.ready ? this.#servingProblem()?.reason : undefined;
  }

  #servingProblem(): { code: string; reason: string } | undefined {
    if (this.#specProblem) {
      return {
        code: "SpecChangeRejected",
        reason: "the last spec change was rejected; the previous spec stays in force: " +
          this.#specProblem,
      };
    }
    const failed = this.#failedChange;
    if (!failed) return undefined;
    const how = failed.retrying
      ? "retried with backoff"
      : "not retried: no retry can fix this; edit the NodeConfig or restart the agent";
    return {
      code: "ConfigChangeFailed",
      reason: `the spec of generation ${failed.obj.generation} is not applied (${how}); the ` +
        `previous spec stays in force: ${failed.error}`,
    };
  }

  /** After a change resolved: only the Secrets of `inForce` are followed and handed over. */
  async #followSecretsOf(inForce: NodeConfig | undefined): Promise<void> {
    await this.secrets.use(inForce);
    void this.#agent?.setSecretPasswords?.(this.secrets.passwords);
  }

  #queuePeers(): void {
    if (this.#peersQueued) return;
    this.#peersQueued = true;
    // A list delivers its objects one change at a time; compute the mesh once after all of them.
    queueMicrotask(() => {
      this.#peersQueued = false;
      this.#emitPeers();
    });
  }

  #emitPeers(): void {
    const { nodeName, log, onPeersChanged } = this.options;
    const objects = this.configs.cache.entries().map(([, v]) => v);
    // Another node's status may now publish this node's router id, or no longer.
    if (this.#checkRouterIds(objects)) this.status.request();
    const peers = this.#peerConfigs.of(objects, nodeName, (name, reason) => {
      log({ level: "warn", msg: "ignoring invalid NodeConfig of another node", name, reason });
    });
    const text = canonicalJson(peers.map((p) => ({ name: p.name, spec: p.spec })));
    if (text !== this.#peersText) {
      this.#peersText = text;
      log({ level: "info", msg: "peer NodeConfigs changed", peers: peers.map((p) => p.name) });
      onPeersChanged?.(peers);
    }
    // The routing layer exists only once the node is configured.
    const agent = this.#agent;
    if (!agent?.ready) return;
    this.#syncOwnAddresses();
    if (!agent.setMeshPeers) return;
    const ownCIDRs = [agent.node?.cidr6, agent.node?.cidr4].filter((p) => p !== undefined);
    const fresh = meshPeersFor(
      peers,
      (name) => this.nodes?.cache.get(name),
      this.#ownAddresses(),
      {
        statusOf: (name) => this.configs.cache.get(name)?.status,
        unappliedCIDRs: (name) => {
          const obj = this.configs.cache.get(name);
          return obj && !specApplied(obj) ? this.#peerConfigs.previousCIDRs(name) : [];
        },
        ownCIDRs,
      },
    );
    const { mesh, events } = this.#keptPeers.apply(
      fresh,
      (name) => this.#missingObject(name),
      performance.now(),
      ownCIDRs,
    );
    this.#logKeptPeers(events);
    this.#scheduleKeptPeers();
    const meshText = canonicalJson(mesh);
    if (meshText === this.#meshText) return;
    this.#meshText = meshText;
    log({
      level: "info",
      msg: "mesh peers changed",
      peers: mesh.map((p) => `${p.name}@${p.address}`),
    });
    // The session count changed: show it (and follow the new sessions until they are up).
    agent.setMeshPeers(mesh).then(() => this.status.request(), (e) => {
      log({ level: "error", msg: "cannot apply mesh peers", error: String(e) });
    });
  }

  /**
   * What of another node's API objects is gone, so that it cannot be a mesh peer now: its
   * "NodeConfig", its "Node", or the Node's InternalIPs (a Node registered again, before its
   * addresses). Undefined when all are there.
   */
  #missingObject(name: string): string | undefined {
    if (this.configs.cache.get(name) === undefined) return "NodeConfig";
    if (!this.nodes) return undefined;
    const addresses = this.nodes.cache.get(name);
    if (addresses === undefined) return "Node";
    return addresses.length === 0 ? "Node InternalIPs" : undefined;
  }

  #logKeptPeers(events: KeptPeerEvents): void {
    const { log } = this.options;
    const graceS = Math.round(this.#keptPeers.graceMs / 1000);
    for (const k of events.kept) {
      log({
        level: "warn",
        msg:
          `mesh peer's ${k.gone} deleted; keeping its session for ${graceS} s unless it comes back`,
        peer: `${k.name}@${k.address}`,
      });
    }
    for (const name of events.returned) {
      log({ level: "info", msg: "kept mesh peer's objects are back", peer: name });
    }
    for (const d of events.dropped) {
      log({ level: "warn", msg: "kept mesh peer dropped", peer: d.name, reason: d.reason });
    }
  }

  /** Recomputes the mesh once the next kept peer's grace is over. */
  #scheduleKeptPeers(): void {
    clearTimeout(this.#keptPeersTimer);
    this.#keptPeersTimer = undefined;
    const next = this.#keptPeers.nextExpiry;
    if (next === undefined || this.#stopped) return;
    this.#keptPeersTimer = setTimeout(() => {
      this.#keptPeersTimer = undefined;
      if (!this.#stopped) this.#queuePeers();
    }, Math.max(0, Math.ceil(next - performance.now())) + 1);
  }

  /** A periodic read of the peers' Secrets changed something: re-render bird.conf, report. */
  #secretsChanged(): void {
    const agent = this.#agent;
    if (agent?.ready) {
      agent.setSecretPasswords?.(this.secrets.passwords).catch((e) => {
        this.options.log({
          level: "error",
          msg: "cannot apply the BGP passwords",
          error: String(e),
        });
      });
    }
    this.status.request();
  }

  /**
   * Compares this node's router id with those the other NodeConfigs publish; true when the
   * conflict changed (the log says so).
   */
  #checkRouterIds(objects: NodeConfigObject[]): boolean {
    const id = this.#routerId?.id;
    // A removed node's NodeConfig keeps the id its agent last published; it peers with nobody.
    const nodes = this.nodes;
    const members = nodes?.hasSynced
      ? objects.filter((o) => nodes.cache.get(o.name) !== undefined)
      : objects;
    const others = id ? routerIdConflicts(id, this.options.nodeName, members) : [];
    return this.#routerIdConflicts.update(id, others);
  }

  /**
   * This node's InternalIPs: its Node object's, or while that is gone (deleted; kubelet
   * registers it again when it restarts) the ones it listed last. The node's addresses did not
   * change because an API object went away: the router id and the mesh sessions' family stay.
   */
  #ownAddresses(): string[] | undefined {
    const own = this.nodes?.cache.get(this.options.nodeName);
    if (own !== undefined) this.#lastOwnAddresses = own;
    return this.#lastOwnAddresses;
  }

  /** Hands this node's InternalIPs to the agent when they changed (its router id). */
  #syncOwnAddresses(): void {
    const agent = this.#agent;
    if (!agent?.setNodeAddresses) return;
    const own = this.#ownAddresses() ?? [];
    const text = own.join(",");
    if (text === this.#ownAddressesText) return;
    const first = this.#ownAddressesText === undefined;
    this.#ownAddressesText = text;
    if (!first) {
      this.options.log({ level: "info", msg: "node addresses changed", addresses: own });
    }
    agent.setNodeAddresses(own).catch((e) => {
      this.options.log({
        level: "error",
        msg: "cannot apply the node addresses",
        error: String(e),
      });
    });
  }

  async #desiredStatus() {
    const agent = this.#agent;
    const own = this.configs.cache.get(this.options.nodeName);
    if (!agent || !own) {
      this.#refreshSchedule.computed(performance.now(), undefined);
      return undefined;
    }
    const s = agent.stats();
    let reason = "";
    // The Ready condition's reason: a word a program can match on.
    let code = "Serving";
    if (!s.ready) {
      reason = s.notReadyReason;
      code = this.#specProblem
        ? "NodeConfigInvalid"
        : this.#configureProblem
        ? "ConfigureFailed"
        : "WaitingForConfig";
    } else if (s.notReadyReason) {
      // Configured, yet a CNI call would fail now (agent/health.ts: the socket or the store went
      // away, a store write failed): not Ready, as /readyz says.
      reason = s.notReadyReason;
      code = "CNIUnavailable";
    } else if (this.#servingProblem()) {
      ({ code, reason } = this.#servingProblem()!);
    } else if (s.outsideCIDR > 0) {
      reason = `${s.outsideCIDR} running pods hold addresses outside the node's CIDRs ` +
        `(kept until they are deleted)`;
      code = "PodsOutsideCIDR";
    }
    const routing = s.ready ? await agent.routingStatus?.() : undefined;
    this.#refreshSchedule.computed(performance.now(), routing);
    this.#routerId = routing?.routerId;
    this.#checkRouterIds(this.configs.cache.entries().map(([, v]) => v));
    const conditions = [];
    if (this.#routerId) {
      conditions.push(routerIdCondition(this.#routerId, this.#routerIdConflicts.others));
    }
    const passwords = passwordCondition(this.secrets.referenced, this.secrets.problems);
    if (passwords && s.ready) conditions.push(passwords);
    const serving = { ...s, ready: s.ready && code !== "CNIUnavailable" };
    const status = buildStatus(serving, this.#observedGeneration, reason.slice(0, 1024), routing, {
      reason: code,
      conditions,
    });
    return { name: this.options.nodeName, status, current: own.status };
  }
}
