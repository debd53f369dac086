/**
 * The retry delay shared by cluster mode's API clients (the informers' list/watch loop and the
 * NodeConfig status writer): it doubles from `minMs` with every consecutive failure, up to
 * `maxMs`. The exponent is capped so that a long outage cannot overflow it.
 *
 * @module
 */

/** The delay before the next try after `failures` (≥ 1) consecutive failures. */
export function backoffMs(failures: number, minMs: number, maxMs: number): number {
  return Math.min(maxMs, minMs * 2 ** Math.min(Math.max(failures - 1, 0), 10));
}
