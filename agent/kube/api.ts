/**
 * The agent's narrow view of the Kubernetes API.
 *
 * Credentials come from `@kubernetes/client-node`'s KubeConfig: a kubeconfig file or, in a pod,
 * the service account (`KUBERNETES_SERVICE_HOST/PORT`, the projected token file, re-read for
 * every request as it rotates). This is the only module that imports the library (pinned here,
 * once), so the CNI exec path and standalone mode never load it.
 *
 * The requests themselves go through Deno's own `fetch`, not the library's (npm undici): under
 * Deno, undici's streams did not report a watch connection closed by the server (an API server
 * stopping), so a watch hung until its inactivity timeout and an abort did not end it either.
 * Everything above speaks plain JSON objects: {@link ListPage}, {@link WatchEvent}.
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
/** REST path of the Nodes. */
export const NODES_PATH = "/api/v1/nodes";

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
  /**
   * Ends the request at once when aborted (an informer stopping): the promise rejects with an
   * `AbortError`, a watch ends with `onDone()` and no error. The request's own bound still holds.
   */
  signal?: AbortSignal;
}

/** How to reach the API server. */
export interface KubeConnectOptions {
  /** A kubeconfig file; without it, the in-cluster service account. */
  kubeconfig?: string;
  /** Bound of one list, read or patch (default {@link REQUEST_TIMEOUT_MS}). */
  requestTimeoutMs?: number;
}

/** An error answer of the API server (or a failed connection, without a status). */
export class ApiError extends Error {
  constructor(readonly statusCode: number | undefined, message: string) {
    super(statusCode === undefined ? message : `HTTP ${statusCode}: ${message}`);
    this.name = "ApiError";
  }
}

/** The HTTP status of an error, if it carries one. */
export function httpStatusOf(err: unknown): number | undefined {
  const e = err as { code?: unknown; statusCode?: unknown } | undefined;
  if (typeof e?.statusCode === "number") return e.statusCode;
  if (typeof e?.code === "number") return e.code;
  return undefined;
}

/** A short, log-friendly description of an API error. */
export function describeApiError(err: unknown): string {
  const e = err as { message?: string; cause?: { message?: string } } | undefined;
  let detail = e?.message ?? String(err);
  if (e?.cause?.message && !detail.includes(e.cause.message)) detail += ` (${e.cause.message})`;
  return detail;
}

/** Bound of one Secret read (a timeout counts as the API server being unreachable). */
const SECRET_READ_TIMEOUT_MS = 10_000;

/**
 * Bound of every other request but a watch: a list page, a Node read, a status patch. Without
 * one, a connection whose peer vanished (a control-plane node powered off) holds the request
 * until TCP gives up, about 15 minutes, with the relist or the status writer stuck behind it.
 */
export const REQUEST_TIMEOUT_MS = 60_000;

/** A watch that received no byte (events, bookmarks) for this long is presumed dead. */
const WATCH_IDLE_MS = 75_000;

type HttpsOptions = {
  headers?: Record<string, string>;
  auth?: string;
  ca?: Uint8Array | string;
  cert?: Uint8Array | string;
  key?: Uint8Array | string;
};

/** An error answer as an {@link ApiError}, with its Status object's message when it has one. */
async function responseError(res: Response, what: string): Promise<ApiError> {
  const text = await res.text();
  let message = text.slice(0, 300);
  try {
    message = JSON.parse(text).message ?? message;
  } catch {
    // not a Status object
  }
  return new ApiError(res.status, `${what}: ${message}`);
}

function pemText(v: Uint8Array | string | undefined): string | undefined {
  if (v === undefined) return undefined;
  return typeof v === "string" ? v : new TextDecoder().decode(v);
}

/**
 * The API calls flock makes: list, watch, read a Node and a Secret, patch NodeConfig status.
 */
export class KubeApi {
  readonly #config: k8s.KubeConfig;
  readonly #requestTimeoutMs: number;
  #client?: Deno.HttpClient;

  constructor(options: KubeConnectOptions = {}) {
    this.#requestTimeoutMs = options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
    const config = new k8s.KubeConfig();
    if (options.kubeconfig) config.loadFromFile(options.kubeconfig);
    else config.loadFromCluster();
    if (!config.getCurrentCluster()?.server) {
      throw new Error("the kubeconfig names no API server");
    }
    this.#config = config;
  }

  /** The API server URL in use. */
  get server(): string {
    return this.#config.getCurrentCluster()?.server ?? "";
  }

  /**
   * The namespace of the current context: in a pod the service account's (the client reads its
   * `namespace` file), else what the kubeconfig's context names; undefined when neither does.
   */
  get contextNamespace(): string | undefined {
    return this.#config.getContextObject(this.#config.getCurrentContext())?.namespace ||
      undefined;
  }

  /** Headers and TLS client for one request (the token file is re-read every time). */
  async #auth(): Promise<{ headers: Headers; client: Deno.HttpClient }> {
    const opts: HttpsOptions = {};
    await this.#config.applyToHTTPSOptions(opts as never);
    const headers = new Headers(opts.headers ?? {});
    if (opts.auth) headers.set("authorization", `Basic ${btoa(opts.auth)}`);
    headers.set("accept", "application/json");
    if (!this.#client) {
      const ca = pemText(opts.ca);
      const cert = pemText(opts.cert);
      const key = pemText(opts.key);
      this.#client = Deno.createHttpClient({
        ...(ca ? { caCerts: [ca] } : {}),
        ...(cert && key ? { cert, key } : {}),
      });
    }
    return { headers, client: this.#client };
  }

  #url(path: string, query: Record<string, string | number | boolean | undefined>): URL {
    const url = new URL(this.server.replace(/\/$/, "") + path);
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== "") url.searchParams.set(k, String(v));
    }
    return url;
  }

  async #fetch(url: URL, init: RequestInit = {}): Promise<Response> {
    const { headers, client } = await this.#auth();
    for (const [k, v] of new Headers(init.headers)) headers.set(k, v);
    try {
      return await fetch(url, { ...init, headers, client });
    } catch (e) {
      if ((e as Error).name === "AbortError") throw e;
      throw this.#failure(e, `${init.method ?? "GET"} ${url.pathname}`);
    }
  }

  /** A request that got no answer or failed to connect, as an {@link ApiError}. */
  #failure(e: unknown, what: string): ApiError {
    if ((e as Error).name === "TimeoutError") {
      // The pooled connection may be dead (its peer gone without a reset): the next request
      // gets a new one. Requests still running on the old one fail and are retried.
      this.#dropClient();
      return new ApiError(undefined, `${what}: no answer in time`);
    }
    return new ApiError(undefined, `${what}: ${(e as Error).message}`);
  }

  #dropClient(): void {
    try {
      this.#client?.close();
    } catch { /* already closed */ }
    this.#client = undefined;
  }

  async #json(url: URL, init: RequestInit = {}): Promise<unknown> {
    const what = `${init.method ?? "GET"} ${url.pathname}`;
    const timeout = AbortSignal.timeout(this.#requestTimeoutMs);
    // The caller's signal (a stop) ends it at once; the timeout bounds it either way.
    const signal = init.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    const res = await this.#fetch(url, { ...init, signal });
    if (!res.ok) throw await responseError(res, what);
    try {
      return await res.json();
    } catch (e) {
      throw e instanceof SyntaxError ? e : this.#failure(e, what);
    }
  }

  async #list(path: string, query: ListQuery): Promise<ListPage> {
    const list = await this.#json(
      this.#url(path, {
        fieldSelector: query.fieldSelector,
        limit: query.limit,
        continue: query.continueToken,
      }),
      { signal: query.signal },
    ) as { items?: KubeObject[]; metadata?: { resourceVersion?: string; continue?: string } };
    return {
      items: list.items ?? [],
      resourceVersion: list.metadata?.resourceVersion ?? "",
      continueToken: list.metadata?.continue ?? "",
    };
  }

  /** One page of pods across all namespaces. */
  listPods(query: ListQuery): Promise<ListPage> {
    return this.#list(PODS_PATH, query);
  }

  /** One page of NodeConfigs. */
  listNodeConfigs(query: ListQuery): Promise<ListPage> {
    return this.#list(NODECONFIG_PATH, query);
  }

  /** One page of Nodes. */
  listNodes(query: ListQuery): Promise<ListPage> {
    return this.#list(NODES_PATH, query);
  }

  /** `Node.spec.podCIDRs` (or the single `podCIDR`) of one node. */
  async nodePodCIDRs(name: string): Promise<string[]> {
    const node = await this.#json(this.#url(`${NODES_PATH}/${encodeURIComponent(name)}`, {})) as {
      spec?: { podCIDRs?: string[]; podCIDR?: string };
    };
    const cidrs = node.spec?.podCIDRs ?? [];
    if (cidrs.length === 0 && node.spec?.podCIDR) return [node.spec.podCIDR];
    return cidrs;
  }

  /**
   * The `data` of Secret `namespace/name` (values base64, as the API serves them). A missing
   * Secret is an {@link ApiError} with status 404; never log what this returns.
   */
  async readSecretData(namespace: string, name: string): Promise<Record<string, string>> {
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/secrets/${
      encodeURIComponent(name)
    }`;
    // Bounded: the node's first bird.conf waits for this read.
    const secret = await this.#json(this.#url(path, {}), {
      signal: AbortSignal.timeout(SECRET_READ_TIMEOUT_MS),
    }) as { data?: Record<string, string> };
    return secret.data ?? {};
  }

  /** Merge-patches the status subresource of one NodeConfig. */
  async patchNodeConfigStatus(name: string, status: object): Promise<void> {
    await this.#json(
      this.#url(`${NODECONFIG_PATH}/${encodeURIComponent(name)}/status`, {}),
      {
        method: "PATCH",
        headers: { "content-type": "application/merge-patch+json" },
        body: JSON.stringify({ status }),
      },
    );
  }

  /**
   * Starts a watch of `path` from `resourceVersion`. `onEvent` gets each event; `onDone` is
   * called once when the stream ends, with the error if it failed (an HTTP error carries its
   * status in `statusCode`), or nothing when it ended cleanly or was stopped. The returned
   * promise resolves once the server has answered (or the attempt failed). `query.signal` stops
   * it like the handle's `stop()`, also before the server has answered (a hung API server): the
   * handle only exists once it answers, a stopping informer cannot wait that long.
   */
  async watch(
    path: string,
    resourceVersion: string,
    query: ListQuery & { timeoutSeconds?: number },
    onEvent: (event: WatchEvent) => void,
    onDone: (err: unknown) => void,
  ): Promise<WatchHandle> {
    const controller = new AbortController();
    let stopped = false;
    const stop = () => {
      stopped = true;
      controller.abort();
    };
    const handle = { stop };
    if (query.signal?.aborted) {
      onDone(undefined);
      return handle;
    }
    query.signal?.addEventListener("abort", stop, { once: true });
    const unlisten = () => query.signal?.removeEventListener("abort", stop);
    let idle: ReturnType<typeof setTimeout> | undefined;
    let idleExpired = false;
    const touch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        idleExpired = true;
        controller.abort();
        // Not even a bookmark for this long: the connection is likely dead, take a new one.
        this.#dropClient();
      }, WATCH_IDLE_MS);
    };
    const url = this.#url(path, {
      watch: 1,
      resourceVersion,
      allowWatchBookmarks: true,
      fieldSelector: query.fieldSelector,
      timeoutSeconds: query.timeoutSeconds,
    });
    let res: Response;
    try {
      touch();
      res = await this.#fetch(url, { signal: controller.signal });
      if (res.status !== 200) throw await responseError(res, `watch ${path}`);
    } catch (e) {
      clearTimeout(idle);
      unlisten();
      onDone(stopped ? undefined : e);
      return handle;
    }
    void this.#readEvents(res, onEvent, touch).then(
      () => onDone(idleExpired ? new ApiError(undefined, `watch ${path}: idle`) : undefined),
      (e) => {
        onDone(
          stopped ? undefined : idleExpired ? new ApiError(undefined, `watch ${path}: idle`) : e,
        );
      },
    ).finally(() => {
      clearTimeout(idle);
      unlisten();
    });
    return handle;
  }

  /** Reads newline-delimited JSON events until the stream ends. */
  async #readEvents(
    res: Response,
    onEvent: (event: WatchEvent) => void,
    touch: () => void,
  ): Promise<void> {
    const decoder = new TextDecoder();
    let buffered = "";
    for await (const chunk of res.body!) {
      touch();
      buffered += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (!line) continue;
        let event: WatchEvent;
        try {
          event = JSON.parse(line);
        } catch {
          continue;
        }
        onEvent(event);
      }
    }
  }
}
