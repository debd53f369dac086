/**
 * Pod annotations for ADDs whose runtime did not pass them (no
 * `io.kubernetes.cri.pod-annotations` capability): served from the pod informer of this node.
 *
 * The kubelet can call ADD before this node's watch has delivered the pod (the ADD-vs-informer
 * race), so a lookup for a pod not seen yet waits a bounded time for it. A pod recreated under
 * the same name is told apart by its UID when the runtime passes `K8S_POD_UID`. When the wait
 * runs out the ADD fails with "try again later" (CNI code 11) rather than guess: a pod that
 * asked for a pinned address must not come up with a random one.
 *
 * Only `flock.fritzlab.net/` annotations are kept, so 1,000 pods cost a few kilobytes.
 *
 * @module
 */

import { ANNOTATION_PREFIX } from "../annotations.ts";
import { CniCode, CniError } from "../protocol.ts";
import type { KubeObject } from "./api.ts";
import type { CacheChange } from "./object_cache.ts";

/** Default bound of the wait for a pod the informer has not delivered yet. */
export const DEFAULT_POD_WAIT_MS = 5_000;

/** What the agent keeps of one pod. */
export interface PodInfo {
  uid: string;
  annotations: Record<string, string>;
}

/** Projects a pod to its UID and flock annotations. */
export function projectPod(obj: KubeObject): PodInfo {
  const annotations: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj.metadata?.annotations ?? {})) {
    if (k.startsWith(ANNOTATION_PREFIX) && typeof v === "string") annotations[k] = v;
  }
  return { uid: obj.metadata?.uid ?? "", annotations };
}

interface Waiter {
  uid?: string;
  resolve: (info: PodInfo) => void;
}

/** Answers annotation lookups from the informer's changes; see the module doc. */
export class PodAnnotationIndex {
  readonly #pods = new Map<string, PodInfo>();
  readonly #waiters = new Map<string, Set<Waiter>>();
  /** Lookups that had to wait, and how long in total (for the bench and logs). */
  waited = 0;
  waitedMs = 0;

  constructor(
    readonly options: {
      /** Whether the informer has listed at least once (else the cache proves nothing). */
      synced: () => boolean;
      waitMs?: number;
    },
  ) {}

  /** Number of pods known. */
  get size(): number {
    return this.#pods.size;
  }

  /** Feeds one informer change. */
  onChange(change: CacheChange<PodInfo>): void {
    if (change.type === "delete") {
      this.#pods.delete(change.key);
      return;
    }
    this.#pods.set(change.key, change.value);
    const waiters = this.#waiters.get(change.key);
    if (!waiters) return;
    for (const w of waiters) {
      if (w.uid === undefined || w.uid === change.value.uid) {
        waiters.delete(w);
        w.resolve(change.value);
      }
    }
    if (waiters.size === 0) this.#waiters.delete(change.key);
  }

  /**
   * The flock annotations of pod `namespace/name` (with UID `uid` when given), waiting up to the
   * bound for the informer to deliver it.
   *
   * @throws {CniError} code 11 when the pod did not show up in time.
   */
  async annotationsFor(
    namespace: string,
    name: string,
    uid?: string,
  ): Promise<Record<string, string>> {
    const key = `${namespace}/${name}`;
    const known = this.#pods.get(key);
    if (known && (uid === undefined || uid === "" || known.uid === uid)) return known.annotations;
    const waitMs = this.options.waitMs ?? DEFAULT_POD_WAIT_MS;
    const started = performance.now();
    const { promise, resolve } = Promise.withResolvers<PodInfo | undefined>();
    const waiter: Waiter = { uid: uid || undefined, resolve };
    let set = this.#waiters.get(key);
    if (!set) this.#waiters.set(key, set = new Set());
    set.add(waiter);
    const timer = setTimeout(() => resolve(undefined), waitMs);
    const info = await promise;
    clearTimeout(timer);
    set.delete(waiter);
    if (set.size === 0 && this.#waiters.get(key) === set) this.#waiters.delete(key);
    this.waited++;
    this.waitedMs += performance.now() - started;
    if (info) return info.annotations;
    const why = !this.options.synced()
      ? "the pod informer has not synced with the API server yet"
      : known
      ? `the API server still shows an older pod of that name (uid ${known.uid}, want ${uid})`
      : "the pod is not (yet) known to the API server for this node";
    throw new CniError(
      CniCode.tryAgainLater,
      `cannot read the annotations of pod ${key}: ${why}`,
      `waited ${waitMs} ms`,
    );
  }
}
