/**
 * What the agent does when the kernel gives no whole answer. Since netlink/ refuses to return a
 * partial dump, a read of the node's or a pod's tables can throw instead: the table kept
 * changing while it was read (`DumpInterruptedError`, e.g. DAD on many new IPv6 addresses or a
 * busy node), the kernel stopped the dump with an error (`DumpIncompleteError`), or the reply
 * was lost (`NetlinkSocketError`: ENOBUFS, no answer in time). Those say "not now", not
 * "never": nothing may be decided on what was read, and asking again a moment later usually
 * works. An errno that does not go away (EINVAL from a bad filter, EOPNOTSUPP, EPERM) is not
 * "busy" ({@link TRANSIENT_ERRNOS}): told "try again", a runtime would retry it for ever.
 *
 * - a CNI request gets code 11 ("try again later"), so the runtime retries it
 *   ({@link kernelBusyCniError});
 * - the start-up reconcile, a reconfigure and the summary routes retry, bounded, with backoff
 *   (awaited pauses: the agent keeps answering meanwhile), and then fail with one clear error
 *   ({@link retryWhileKernelBusy});
 * - periodic loops log once when the trouble starts and once when it ends (failure_streak.ts).
 *
 * @module
 */

import {
  DumpIncompleteError,
  DumpInterruptedError,
  NetlinkSocketError,
} from "../netlink/errors.ts";
import { EAGAIN, EBUSY, EINTR, ENOBUFS, ENOMEM } from "../netlink/ffi.ts";
import { CniCode, CniError } from "./protocol.ts";

/** Every retry of {@link retryWhileKernelBusy} failed; its cause is the last failure. */
export class KernelBusyError extends Error {
  constructor(
    /** What was being read, e.g. `start-up reconcile: list the node's links`. */
    readonly what: string,
    readonly attempts: number,
    readonly elapsedMs: number,
    cause: unknown,
  ) {
    super(
      `${what}: the kernel gave no whole answer in ${attempts} tries over ` +
        `${(elapsedMs / 1000).toFixed(1)} s (last: ${(cause as Error)?.message ?? cause})`,
      { cause },
    );
    this.name = "KernelBusyError";
  }
}

/**
 * The errnos a stopped dump or a failed receive carries that say "not now": replies lost to a
 * full receive queue (ENOBUFS), no reply in time (EAGAIN), an interrupted call (EINTR), a busy
 * kernel object (EBUSY), a kernel short of memory for the moment (ENOMEM). Any other errno says
 * the same on every try.
 */
export const TRANSIENT_ERRNOS: ReadonlySet<number> = new Set([
  ENOBUFS,
  EAGAIN,
  EINTR,
  EBUSY,
  ENOMEM,
]);

/** Whether `e` says the kernel could not give a whole answer now (asking later may work). */
export function isKernelBusy(e: unknown): boolean {
  if (e instanceof DumpInterruptedError || e instanceof KernelBusyError) return true;
  return (e instanceof DumpIncompleteError || e instanceof NetlinkSocketError) &&
    TRANSIENT_ERRNOS.has(e.errno);
}

/**
 * The CNI error for a request that failed because the kernel gave no whole answer: code 11, so
 * the runtime retries the request; undefined for any other failure.
 */
export function kernelBusyCniError(e: unknown): CniError | undefined {
  if (!isKernelBusy(e)) return undefined;
  return new CniError(
    CniCode.tryAgainLater,
    `the node's kernel gave no whole answer, nothing was decided on a partial one; ` +
      `try again: ${(e as Error).message}`,
    "a busy node (many routes or addresses changing at once) interrupts netlink dumps; " +
      "a retry a moment later usually gets a consistent answer",
  );
}

/** Options of {@link retryWhileKernelBusy}; the defaults bound the wait to about 3.5 s. */
export interface KernelRetryOptions {
  /** Tries in all (default 8). */
  attempts?: number;
  /** Pause after the first failure, doubled after each further one (default 50 ms). */
  firstDelayMs?: number;
  /** Longest pause (default 1 s). */
  maxDelayMs?: number;
  /**
   * Pauses between tries; what it returns is awaited (default: a timer, so the agent answers
   * STATUS, metrics and other requests meanwhile; tests may count instead).
   */
  sleep?: (ms: number) => unknown;
  /** Told of each failure that is retried. */
  onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
}

/**
 * Runs `fn` (a synchronous read of kernel state) until it stops failing with a
 * {@link isKernelBusy} error, at most `attempts` times, pausing with exponential backoff between
 * tries. Any other error is thrown at once.
 *
 * The pause awaits a timer and never blocks the thread: the callers (the start-up reconcile, a
 * reconfigure after a NodeConfig change or SIGHUP) run while the agent serves STATUS, metrics,
 * /readyz and, on the SIGHUP path, ADD and DEL; a blocking pause would stall all of those for
 * seconds. Each try runs `fn` whole, synchronously: what is decided on a read is decided right
 * after it, before anything else runs. Every caller can await, so there is no blocking variant
 * (the blocking one this replaced dated from a synchronous start-up).
 *
 * @throws {KernelBusyError} when every try failed so, naming `what` and the last failure
 */
export async function retryWhileKernelBusy<T>(
  what: string,
  fn: () => T,
  o: KernelRetryOptions = {},
): Promise<T> {
  const attempts = o.attempts ?? 8;
  const sleep = o.sleep ?? pause;
  const started = performance.now();
  let delay = o.firstDelayMs ?? 50;
  for (let attempt = 1;; attempt++) {
    try {
      return fn();
    } catch (e) {
      if (!isKernelBusy(e)) throw e;
      if (attempt >= attempts) {
        throw new KernelBusyError(what, attempt, performance.now() - started, e);
      }
      o.onRetry?.(e, attempt, delay);
      await sleep(delay);
      delay = Math.min(delay * 2, o.maxDelayMs ?? 1_000);
    }
  }
}

/** Resolves after `ms`; the thread serves other work meanwhile. */
function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
