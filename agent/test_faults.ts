/**
 * Test-only faults and timings for the DEL path's stuck releases, in the style of
 * crash_points.ts: end-to-end tests make veth deletions (DEL's, GC's and the sweep's retries)
 * fail and shorten the retry sweep, so they can prove that a stuck release is visible,
 * that a failed retry leaves it stuck, and that a later sweep finishes it.
 *
 * Off unless the variables are set when the agent starts; read once, so a running agent's
 * behaviour never changes and the hot path pays one `undefined` check.
 *
 * @module
 */

/**
 * Makes the first N veth deletions of releases throw, before touching the kernel: DEL's, GC's
 * and the stuck-release sweep's retries count alike, in the order they run.
 */
export const FAIL_VETH_DELETE_ENV = "FLOCK_TEST_FAIL_VETH_DELETE";

/** Replaces the stuck-release sweep's interval (milliseconds). */
export const RELEASE_SWEEP_ENV = "FLOCK_TEST_RELEASE_SWEEP_MS";

/** Called before each background veth deletion; throws while an armed failure is left. */
export type VethDeleteFault = () => void;

/** A positive integer from a test variable, or undefined when it is unset or empty. */
function positiveInteger(name: string, value: string | undefined): number | undefined {
  if (value === undefined || value === "") return undefined;
  const n = Number(value);
  // A typo must not silently test nothing.
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new Error(`${name}=${value}: not a positive integer`);
  }
  return n;
}

/**
 * The fault armed by `FLOCK_TEST_FAIL_VETH_DELETE=N` (the first N calls throw), or undefined
 * when it is unset.
 *
 * @throws {Error} when the value is not a positive integer
 */
export function vethDeleteFaultFromEnv(
  value = Deno.env.get(FAIL_VETH_DELETE_ENV),
): VethDeleteFault | undefined {
  const count = positiveInteger(FAIL_VETH_DELETE_ENV, value);
  if (count === undefined) return undefined;
  let left = count;
  return () => {
    if (left === 0) return;
    left--;
    throw new Error(`${FAIL_VETH_DELETE_ENV}: injected veth deletion failure (${left} left)`);
  };
}

/**
 * The stuck-release sweep's interval: `FLOCK_TEST_RELEASE_SWEEP_MS` when set, else `defaultMs`.
 *
 * @throws {Error} when the value is not a positive integer
 */
export function releaseSweepMsFromEnv(
  defaultMs: number,
  value = Deno.env.get(RELEASE_SWEEP_ENV),
): number {
  return positiveInteger(RELEASE_SWEEP_ENV, value) ?? defaultMs;
}
