/**
 * An informer: list, then watch from the list's resource version, forever.
 *
 * - a watch that ends cleanly (server timeout, bookmark-less quiet) resumes from the last
 *   resource version seen, without a relist;
 * - "410 Gone" (the resource version fell out of the server's window, typically after an API
 *   server restart or a long disconnect) relists and turns the difference into changes;
 * - any other failure (server down, connection refused, 5xx) retries with capped, jittered
 *   backoff and keeps the cache as it was: the agent goes on serving pods from what it knew.
 *
 * @module
 */

import type { KubeObject, ListPage, ListQuery, WatchEvent, WatchHandle } from "./api.ts";
import { describeApiError, httpStatusOf } from "./api.ts";
import { type CacheChange, ObjectCache } from "./object_cache.ts";
import { backoffMs } from "../backoff.ts";
import { Sleeper } from "./sleeper.ts";

/** How a reflector reaches the API server. */
export interface ReflectorSource {
  /** Resource path for the watch, e.g. `/api/v1/pods`. */
  path: string;
  /** Field selector applied to both list and watch. */
  fieldSelector?: string;
  list(query: ListQuery): Promise<ListPage>;
  watch(
    path: string,
    resourceVersion: string,
    query: ListQuery & { timeoutSeconds?: number },
    onEvent: (event: WatchEvent) => void,
    onDone: (err: unknown) => void,
  ): Promise<WatchHandle>;
}

/** Options of a {@link Reflector}. */
export interface ReflectorOptions<P> {
  /** What is watched, for log lines ("pods on node-1"). */
  name: string;
  source: ReflectorSource;
  project: (obj: KubeObject) => P;
  /** Called for every change, after the cache holds it. */
  onChange?: (change: CacheChange<P>) => void;
  /** Called after every successful (re)list, once its changes were delivered. */
  onListed?: () => void;
  log: (fields: Record<string, unknown>) => void;
  /** Page size of list calls. */
  pageSize?: number;
  /** First and largest retry delay after a failure. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/** Server-side watch timeout: a random value in this range spreads reconnects of many nodes. */
const WATCH_TIMEOUT_SECONDS: [number, number] = [240, 360];

/** Why one watch ended. */
type WatchEnd = { gone: true } | { gone: false; error?: unknown; events: number; ms: number };

/** A list+watch loop feeding an {@link ObjectCache}; see the module doc. */
export class Reflector<P> {
  readonly cache: ObjectCache<P>;
  /** How many times the reflector listed (1 after the first sync; more after 410s). */
  lists = 0;
  #resourceVersion = "";
  #stopped = false;
  #running?: Promise<void>;
  #watch?: WatchHandle;
  /** Aborted by {@link stop}: ends a list or a watch connect in flight at once. */
  readonly #abort = new AbortController();
  readonly #sleeper = new Sleeper();
  readonly #synced = Promise.withResolvers<void>();
  #hasSynced = false;
  /** Consecutive failures to list or watch; reset once a watch connects. */
  #failures = 0;

  constructor(readonly options: ReflectorOptions<P>) {
    this.cache = new ObjectCache(options.project);
  }

  /** Whether the first list has completed. */
  get hasSynced(): boolean {
    return this.#hasSynced;
  }

  /** Resolves once the first list has completed. */
  get synced(): Promise<void> {
    return this.#synced.promise;
  }

  /** Starts the loop in the background. */
  start(): void {
    this.#running ??= this.#run();
  }

  /**
   * Stops the loop and closes the watch. A list page or a watch connect the API server has not
   * answered yet is aborted too, so this resolves at once even while the server hangs (else it
   * waited for the request's 60 s bound).
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort.abort();
    this.#watch?.stop();
    this.#sleeper.wake();
    await this.#running;
  }

  async #run(): Promise<void> {
    const { log, name } = this.options;
    const minBackoff = this.options.minBackoffMs ?? 250;
    const maxBackoff = this.options.maxBackoffMs ?? 8_000;
    while (!this.#stopped) {
      try {
        if (this.#resourceVersion === "") await this.#relist();
        const end = await this.#watchOnce();
        if (this.#stopped) break;
        if (end.gone) {
          log({ level: "info", msg: "watch expired (410 Gone); relisting", informer: name });
          this.#resourceVersion = "";
          continue;
        }
        if (end.error !== undefined) throw end.error;
        // A watch that ends at once without news: do not spin.
        if (end.events === 0 && end.ms < minBackoff) await this.#sleeper.sleep(minBackoff);
      } catch (err) {
        if (this.#stopped) break;
        if (httpStatusOf(err) === 410) {
          this.#resourceVersion = "";
          continue;
        }
        const failures = ++this.#failures;
        // One line when the trouble starts, then one every 20 failures: an API server outage
        // must not flood the node's logs.
        if (failures === 1 || failures % 20 === 0) {
          log({
            level: "warn",
            msg: "informer cannot reach the API server; keeping what it knows",
            informer: name,
            failures,
            error: describeApiError(err),
          });
        }
        const cap = backoffMs(failures, minBackoff, maxBackoff);
        await this.#sleeper.sleep(cap / 2 + Math.random() * cap / 2);
      }
    }
  }

  async #relist(): Promise<void> {
    const { source, pageSize = 500 } = this.options;
    const items: KubeObject[] = [];
    let resourceVersion = "";
    let continueToken = "";
    do {
      const page = await source.list({
        fieldSelector: source.fieldSelector,
        limit: pageSize,
        continueToken: continueToken || undefined,
        signal: this.#abort.signal,
      });
      items.push(...page.items);
      resourceVersion = page.resourceVersion;
      continueToken = page.continueToken;
    } while (continueToken && !this.#stopped);
    if (this.#stopped) return;
    const changes = this.cache.replace(items);
    this.#resourceVersion = resourceVersion;
    this.lists++;
    this.#recovered();
    for (const change of changes) this.#deliver(change);
    if (!this.#hasSynced) {
      this.#hasSynced = true;
      this.#synced.resolve();
    }
    if (this.lists > 1) {
      this.options.log({
        level: "info",
        msg: "informer relisted",
        informer: this.options.name,
        objects: items.length,
        changes: changes.length,
      });
    }
    this.options.onListed?.();
  }

  #watchOnce(): Promise<WatchEnd> {
    const { source } = this.options;
    const { promise, resolve } = Promise.withResolvers<WatchEnd>();
    let events = 0;
    let gone = false;
    let ended = false;
    const started = performance.now();
    let serverError: unknown;
    const onEvent = (event: WatchEvent) => {
      if (event.type === "ERROR") {
        // The server reports a dead resource version in the stream, then closes it.
        if (event.object?.code === 410) gone = true;
        else {serverError = Object.assign(new Error(event.object?.message ?? "watch error"), {
            statusCode: event.object?.code,
          });}
        return;
      }
      events++;
      const rv = event.object?.metadata?.resourceVersion;
      if (event.type !== "BOOKMARK") {
        const change = this.cache.apply(event.type, event.object);
        if (change) this.#deliver(change);
      }
      if (rv) this.#resourceVersion = rv;
    };
    const onDone = (err: unknown) => {
      ended = true;
      this.#watch = undefined;
      if (gone || httpStatusOf(err) === 410) resolve({ gone: true });
      else {
        resolve({
          gone: false,
          error: err ?? serverError,
          events,
          ms: performance.now() - started,
        });
      }
    };
    const [lo, hi] = WATCH_TIMEOUT_SECONDS;
    source.watch(
      source.path,
      this.#resourceVersion,
      {
        fieldSelector: source.fieldSelector,
        timeoutSeconds: Math.floor(lo + Math.random() * (hi - lo)),
        signal: this.#abort.signal,
      },
      onEvent,
      onDone,
    ).then((handle) => {
      if (this.#stopped) handle.stop();
      else if (!ended) {
        // The server answered 200: the connection is back.
        this.#watch = handle;
        this.#recovered();
      }
    }, onDone);
    return promise;
  }

  #recovered(): void {
    if (this.#failures === 0) return;
    this.options.log({
      level: "info",
      msg: "informer reconnected",
      informer: this.options.name,
      failures: this.#failures,
    });
    this.#failures = 0;
  }

  #deliver(change: CacheChange<P>): void {
    try {
      this.options.onChange?.(change);
    } catch (e) {
      this.options.log({
        level: "error",
        msg: "informer listener failed",
        informer: this.options.name,
        error: (e as Error).message,
      });
    }
  }
}
