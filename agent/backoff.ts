/**
 * The retry delay shared by every retry loop of the agent (cluster mode's API clients, the
 * bird.conf render, BIRD reloads, a failed first configure): it doubles from `minMs` with every
 * consecutive failure, up to `maxMs`. The exponent is capped so that a long outage cannot
 * overflow it. Kept out of `kube/` so that `bird/` can use it without knowing of Kubernetes.
 *
 * @module
 */

/** The delay before the next try after `failures` (≥ 1) consecutive failures. */
export function backoffMs(failures: number, minMs: number, maxMs: number): number {
  return Math.min(maxMs, minMs * 2 ** Math.min(Math.max(failures - 1, 0), 10));
}
