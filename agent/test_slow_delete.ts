/**
 * Test-only timing for the release path, in the style of test_faults.ts: the first veth deletion
 * of a release (DEL's, GC's, the sweep's) starts only after a delay, as when the kernel takes
 * that long to let go of a device ("unregister_netdevice: waiting for … to become free"). End-to-
 * end tests use it to prove that a slow deletion holds up its own container and nothing else.
 *
 * Off unless the variable is set when the agent starts; read once.
 *
 * @module
 */

import { positiveInteger } from "./test_faults.ts";

/** Delays the first veth deletion of a release by this many milliseconds. */
export const SLOW_VETH_DELETE_ENV = "FLOCK_TEST_SLOW_VETH_DELETE_MS";

/** Awaited before each veth deletion of a release; the first call waits, later ones do not. */
export type VethDeleteDelay = () => Promise<void>;

/**
 * The delay armed by `FLOCK_TEST_SLOW_VETH_DELETE_MS=ms`, or undefined when it is unset.
 *
 * @throws {Error} when the value is not a positive integer (a typo must not silently test nothing)
 */
export function vethDeleteDelayFromEnv(
  value = Deno.env.get(SLOW_VETH_DELETE_ENV),
): VethDeleteDelay | undefined {
  const ms = positiveInteger(SLOW_VETH_DELETE_ENV, value);
  if (ms === undefined) return undefined;
  let armed = true;
  return () => {
    if (!armed) return Promise.resolve();
    armed = false;
    return new Promise((resolve) => setTimeout(resolve, ms));
  };
}
