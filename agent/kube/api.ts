/**
 * The agent's narrow view of the Kubernetes API, over `@kubernetes/client-node`.
 *
 * This is the only module that imports the client library (pinned here, once), so the CNI exec
 * path and standalone mode never load it. Everything above speaks in plain JSON objects:
 * {@link ListPage}, {@link WatchEvent}. Credentials come from a kubeconfig file or, in a pod,
 * from the service account (`KUBERNETES_SERVICE_HOST/PORT`, the projected token file, re-read
 * as it rotates).
 *
 * @module
 */

// Pinned inline on purpose: this is the one module allowed to load the client, and a bare
// specifier in deno.json would invite imports from elsewhere (the CNI path must stay tiny).
// deno-lint-ignore no-import-prefix
import * as k8s from "npm:@kubernetes/client-node@2.0.1";

/** API group of flock's custom resources. */
export const FLOCK_GROUP = "flock.fritzlab.net";
/** API version of the NodeConfig kind. */
export const FLOCK_VERSION = "v1alpha1";
/** Plural resource name of NodeConfig. */
export const NODECONFIG_PLURAL = "nodeconfigs";
/** REST path of the NodeConfig collection (cluster-scoped). */
export const NODECONFIG_PATH = `/apis/${FLOCK_GROUP}/${FLOCK_VERSION}/${NODECONFIG_PLURAL}`;
/** REST path of the pods of every namespace. */
export const PODS_PATH = "/api/v1/pods";

/** The metadata fields flock reads. */
export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  annotations?: Record<string, string>;
}

/** Any Kubernetes object, as JSON. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  spec?: unknown;
  status?: unknown;
}

/** One page of a list call. */
export interface ListPage {
  items: KubeObject[];
  resourceVersion: string;
  /** The token for the next page; empty on the last one. */
  continueToken: string;
}

/** One event of a watch stream (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`). */
export interface WatchEvent {
  type: string;
  object: KubeObject & { code?: number; message?: string };
}

/** A running watch; `stop()` closes its connection. */
export interface WatchHandle {
  stop(): void;
}

/** Query of a list or watch call. */
export interface ListQuery {
  fieldSelector?: string;
  limit?: number;
  continueToken?: string;
}

/** How to reach the API server. */
export interface KubeConnectOptions {
  /** A kubeconfig file; without it, the in-cluster service account. */
  kubeconfig?: string;
}

/** The HTTP status of an error thrown by the client library, if it carries one. */
export function httpStatusOf(err: unknown): number | undefined {
  const e = err as { code?: unknown; statusCode?: unknown } | undefined;
  if (typeof e?.statusCode === "number") return e.statusCode;
  if (typeof e?.code === "number") return e.code;
  return undefined;
}

/** A short, log-friendly description of an API error (status code and message). */
export function describeApiError(err: unknown): string {
  const status = httpStatusOf(err);
  const e = err as { message?: string; body?: unknown; cause?: { message?: string } };
  let detail = e?.message ?? String(err);
  if (e?.cause?.message) detail += ` (${e.cause.message})`;
  const body = e?.body as { message?: string } | string | undefined;
  if (typeof body === "object" && body?.message) detail = body.message;
  return status === undefined ? detail : `HTTP ${status}: ${detail}`;
}

/** The API calls flock makes: list, watch, read a Node, patch NodeConfig status. */
export class KubeApi {
  readonly #config: k8s.KubeConfig;
  readonly #core: k8s.CoreV1Api;
  readonly #custom: k8s.CustomObjectsApi;
  readonly #watch: k8s.Watch;

  constructor(options: KubeConnectOptions = {}) {
    const config = new k8s.KubeConfig();
    if (options.kubeconfig) config.loadFromFile(options.kubeconfig);
    else config.loadFromCluster();
    this.#config = config;
    this.#core = config.makeApiClient(k8s.CoreV1Api);
    this.#custom = config.makeApiClient(k8s.CustomObjectsApi);
    this.#watch = new k8s.Watch(config);
    // The library aborts a watch after this long without a byte. The API server sends a
    // bookmark about once a minute when asked to, so a quiet but healthy watch survives;
    // a dead connection is still noticed. (TypeScript-private in the library, set on purpose.)
    (this.#watch as unknown as { requestTimeoutMs: number }).requestTimeoutMs = 75_000;
  }

  /** The API server URL in use. */
  get server(): string {
    return this.#config.getCurrentCluster()?.server ?? "";
  }

  /** One page of pods across all namespaces. */
  async listPods(query: ListQuery): Promise<ListPage> {
    const list = await this.#core.listPodForAllNamespaces({
      fieldSelector: query.fieldSelector,
      limit: query.limit,
      _continue: query.continueToken,
    });
    // The typed client turns objects into classes; flock only reads plain fields.
    return {
      items: list.items as unknown as KubeObject[],
      resourceVersion: list.metadata?.resourceVersion ?? "",
      continueToken: list.metadata?._continue ?? "",
    };
  }

  /** One page of NodeConfigs. */
  async listNodeConfigs(query: ListQuery): Promise<ListPage> {
    const list = await this.#custom.listClusterCustomObject({
      group: FLOCK_GROUP,
      version: FLOCK_VERSION,
      plural: NODECONFIG_PLURAL,
      fieldSelector: query.fieldSelector,
      limit: query.limit,
      _continue: query.continueToken,
    }) as { items?: KubeObject[]; metadata?: { resourceVersion?: string; continue?: string } };
    return {
      items: list.items ?? [],
      resourceVersion: list.metadata?.resourceVersion ?? "",
      continueToken: list.metadata?.continue ?? "",
    };
  }

  /** `Node.spec.podCIDRs` (or the single `podCIDR`) of one node. */
  async nodePodCIDRs(name: string): Promise<string[]> {
    const node = await this.#core.readNode({ name });
    const cidrs = node.spec?.podCIDRs ?? [];
    if (cidrs.length === 0 && node.spec?.podCIDR) return [node.spec.podCIDR];
    return cidrs;
  }

  /** Merge-patches the status subresource of one NodeConfig. */
  async patchNodeConfigStatus(name: string, status: object): Promise<void> {
    await this.#custom.patchClusterCustomObjectStatus(
      {
        group: FLOCK_GROUP,
        version: FLOCK_VERSION,
        plural: NODECONFIG_PLURAL,
        name,
        body: { status },
      },
      k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
    );
  }

  /**
   * Starts a watch of `path` from `resourceVersion`. `onEvent` gets each event; `onDone` is
   * called once when the stream ends, with the error if it failed (an HTTP error carries its
   * status in `statusCode`).
   */
  async watch(
    path: string,
    resourceVersion: string,
    query: ListQuery & { timeoutSeconds?: number },
    onEvent: (event: WatchEvent) => void,
    onDone: (err: unknown) => void,
  ): Promise<WatchHandle> {
    const params: Record<string, string | number | boolean> = {
      resourceVersion,
      allowWatchBookmarks: true,
    };
    if (query.fieldSelector) params.fieldSelector = query.fieldSelector;
    if (query.timeoutSeconds) params.timeoutSeconds = query.timeoutSeconds;
    const controller = await this.#watch.watch(
      path,
      params,
      (type: string, object: WatchEvent["object"]) => onEvent({ type, object }),
      onDone,
    );
    return { stop: () => controller.abort() };
  }
}
