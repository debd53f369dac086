/**
 * The store behind an informer: what the last list and the watch events since say about a set
 * of Kubernetes objects, kept as small projections (a pod costs its flock annotations, not its
 * whole spec) and turned into add/update/delete changes.
 *
 * Pure logic: no I/O, no timers.
 *
 * @module
 */

import type { KubeObject } from "./api.ts";

/** One change to the cache, as listeners see it. */
export type CacheChange<P> =
  | { type: "upsert"; key: string; value: P; previous?: P }
  | { type: "delete"; key: string; previous: P };

/** `namespace/name` of an object (`name` alone for cluster-scoped objects). */
export function objectKey(obj: KubeObject): string {
  const name = obj.metadata?.name ?? "";
  const ns = obj.metadata?.namespace;
  return ns ? `${ns}/${name}` : name;
}

/** Objects by key, each kept as its projection and resource version. */
export class ObjectCache<P> {
  readonly #entries = new Map<string, { value: P; resourceVersion: string }>();

  constructor(readonly project: (obj: KubeObject) => P) {}

  /** Number of objects held. */
  get size(): number {
    return this.#entries.size;
  }

  /** The projection of one object. */
  get(key: string): P | undefined {
    return this.#entries.get(key)?.value;
  }

  /** Every key and projection. */
  entries(): [string, P][] {
    return [...this.#entries].map(([k, e]) => [k, e.value]);
  }

  /**
   * Replaces everything with a fresh list: objects missing from it are deleted, new ones added,
   * changed ones (by resource version) updated. Returns the changes in that order.
   */
  replace(items: KubeObject[]): CacheChange<P>[] {
    const changes: CacheChange<P>[] = [];
    const seen = new Set<string>();
    for (const obj of items) seen.add(objectKey(obj));
    for (const [key, entry] of this.#entries) {
      if (!seen.has(key)) {
        this.#entries.delete(key);
        changes.push({ type: "delete", key, previous: entry.value });
      }
    }
    for (const obj of items) {
      const change = this.#upsert(obj);
      if (change) changes.push(change);
    }
    return changes;
  }

  /** Applies one watch event (`ADDED`, `MODIFIED`, `DELETED`); other types change nothing. */
  apply(type: string, obj: KubeObject): CacheChange<P> | undefined {
    if (type === "ADDED" || type === "MODIFIED") return this.#upsert(obj);
    if (type === "DELETED") {
      const key = objectKey(obj);
      const entry = this.#entries.get(key);
      if (!entry) return undefined;
      this.#entries.delete(key);
      return { type: "delete", key, previous: entry.value };
    }
    return undefined;
  }

  #upsert(obj: KubeObject): CacheChange<P> | undefined {
    const key = objectKey(obj);
    const resourceVersion = obj.metadata?.resourceVersion ?? "";
    const old = this.#entries.get(key);
    if (old && resourceVersion !== "" && old.resourceVersion === resourceVersion) return undefined;
    const value = this.project(obj);
    this.#entries.set(key, { value, resourceVersion });
    return { type: "upsert", key, value, previous: old?.value };
  }
}
