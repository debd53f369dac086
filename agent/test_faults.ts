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
 * Makes the first N veth deletions of releases throw, before touching the kernel: DEL's, GC's,
 * the stuck-release sweep's retries and a failed ADD's cleanup count alike, in the order they
 * run.
 */
export const FAIL_VETH_DELETE_ENV = "FLOCK_TEST_FAIL_VETH_DELETE";

/** Replaces the stuck-release sweep's interval (milliseconds). */
export const RELEASE_SWEEP_ENV = "FLOCK_TEST_RELEASE_SWEEP_MS";

/**
 * Makes the first N ADDs that built their datapath fail right after it, before the record is
 * committed: the ADD's own cleanup then runs (and, with {@link FAIL_VETH_DELETE_ENV}, fails).
 */
export const FAIL_ADD_AFTER_DATAPATH_ENV = "FLOCK_TEST_FAIL_ADD_AFTER_DATAPATH";

/** Called before each veth deletion of a release; throws while an armed failure is left. */
export type VethDeleteFault = () => void;

/** Called by ADD once its datapath is built; throws while an armed failure is left. */
export type AddFault = () => void;

/**
 * A positive integer from the test variable `name`, or undefined when it is unset or empty.
 *
 * @throws {Error} naming the variable when the value is anything else
 */
export function positiveInteger(name: string, value: string | undefined): number | undefined {
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
  return firstCallsFail(FAIL_VETH_DELETE_ENV, value, "veth deletion failure");
}

/**
 * The fault armed by `FLOCK_TEST_FAIL_ADD_AFTER_DATAPATH=N` (the first N calls throw), or
 * undefined when it is unset.
 *
 * @throws {Error} when the value is not a positive integer
 */
export function addFaultFromEnv(
  value = Deno.env.get(FAIL_ADD_AFTER_DATAPATH_ENV),
): AddFault | undefined {
  return firstCallsFail(FAIL_ADD_AFTER_DATAPATH_ENV, value, "ADD failure after the datapath");
}

/** A hook whose first `value` calls throw an error naming `name` and `what`; undefined if unset. */
function firstCallsFail(
  name: string,
  value: string | undefined,
  what: string,
): (() => void) | undefined {
  const count = positiveInteger(name, value);
  if (count === undefined) return undefined;
  let left = count;
  return () => {
    if (left === 0) return;
    left--;
    throw new Error(`${name}: injected ${what} (${left} left)`);
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
