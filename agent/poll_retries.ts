/**
 * Work a periodic poll tries again at later polls after it failed (agent/host_side_repair.ts: a
 * pod's repair or a veth's withheld routes meeting a busy kernel). The wait doubles with every
 * consecutive failure ({@link backoffMs}, counted in polls), up to {@link RETRY_MAX_POLLS}: a
 * transient failure is retried at the very next poll, one that stays costs a try every while.
 * Work with nothing to do it with yet (a configure running) is deferred to the next poll, with
 * no failure counted.
 *
 * @module
 */

import { backoffMs } from "./backoff.ts";

/** The longest wait between two tries, in polls (30 s at the repair's 500 ms). */
export const RETRY_MAX_POLLS = 60;

/** One entry: what to retry, its consecutive failures, the poll from which it is due. */
interface Retry<T> {
  value: T;
  failures: number;
  duePoll: number;
}

/** Failed or deferred work by key, each due again at a later poll. */
export class PollRetries<T> {
  readonly #entries = new Map<string, Retry<T>>();
  /** Polls so far ({@link due} counts them). */
  #polls = 0;

  constructor(readonly maxPolls = RETRY_MAX_POLLS) {}

  /** Records a failure of `key` (`value` is what to retry); returns its consecutive failures. */
  failed(key: string, value: T): number {
    const failures = (this.#entries.get(key)?.failures ?? 0) + 1;
    const duePoll = this.#polls + backoffMs(failures, 1, this.maxPolls);
    this.#entries.set(key, { value, failures, duePoll });
    return failures;
  }

  /** Puts `key` off to the next poll without counting a failure (its failures so far stay). */
  defer(key: string, value: T): void {
    const failures = this.#entries.get(key)?.failures ?? 0;
    this.#entries.set(key, { value, failures, duePoll: this.#polls + 1 });
  }

  /** Counts one poll; returns the values due at it (they stay until {@link delete}d). */
  due(): T[] {
    this.#polls++;
    return [...this.#entries.values()].filter((r) => r.duePoll <= this.#polls).map((r) => r.value);
  }

  /** Forgets `key` (its work succeeded or is moot). */
  delete(key: string): void {
    this.#entries.delete(key);
  }

  /** Every entry's key and value (to prune the moot ones). */
  entries(): [string, T][] {
    return [...this.#entries].map(([key, r]) => [key, r.value]);
  }

  /** How many entries failed (deferred ones that never failed not counted). */
  get failing(): number {
    let n = 0;
    for (const r of this.#entries.values()) if (r.failures > 0) n++;
    return n;
  }
}
