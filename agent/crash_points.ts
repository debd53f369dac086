/**
 * Test-only crash points: the agent kills itself with SIGKILL at a named step of ADD or DEL,
 * so end-to-end tests can prove that a crash at exactly that step converges after a restart.
 *
 * Off unless `FLOCK_TEST_CRASH_AT` names a point when the agent starts; read once, so a running
 * agent's behaviour never changes and the hot path pays one `undefined` check.
 *
 * @module
 */

/** The steps at which a crash can be requested, in the order ADD and DEL reach them. */
export const CRASH_POINTS = [
  /** ADD: the pending record is stored, nothing built yet. */
  "add-after-pending",
  /** ADD: the datapath is built, the record still pending. */
  "add-after-datapath",
  /** ADD: the record is committed, the answer not yet sent. */
  "add-after-commit",
  /**
   * ADD retried with another CNI_NETNS (a new sandbox): one of its two steps is done, the other
   * not — the record names the new netns, the pod's veth is not moved there yet.
   */
  "add-retry-new-netns",
  /** DEL (and GC): the record is releasing and the pod off the network, the answer not yet sent. */
  "del-after-releasing",
  /**
   * DEL: the veth is gone, the record still stored (through the RPC server the DEL has already
   * answered; a synchronous release, as GC's, has not).
   */
  "del-after-teardown",
] as const;

/** One of {@link CRASH_POINTS}. */
export type CrashPoint = typeof CRASH_POINTS[number];

/** The environment variable that arms a crash point. */
export const CRASH_ENV = "FLOCK_TEST_CRASH_AT";

/** Called by the pod handler at each crash point; kills the process at the armed one. */
export type CrashHook = (point: CrashPoint) => void;

/**
 * The hook armed by `FLOCK_TEST_CRASH_AT`, or undefined when it is unset.
 *
 * @throws {Error} when the variable names no known point (a typo must not silently test nothing)
 */
export function crashHookFromEnv(value = Deno.env.get(CRASH_ENV)): CrashHook | undefined {
  if (value === undefined || value === "") return undefined;
  if (!(CRASH_POINTS as readonly string[]).includes(value)) {
    throw new Error(`${CRASH_ENV}=${value}: not one of ${CRASH_POINTS.join(", ")}`);
  }
  return (point) => {
    if (point !== value) return;
    // SIGKILL, not Deno.exit: no finally blocks, no unload handlers, no store close — a kill -9.
    Deno.kill(Deno.pid, "SIGKILL");
    Deno.exit(137); // not reached
  };
}
