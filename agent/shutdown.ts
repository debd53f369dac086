/**
 * Bounded shutdown steps. The kubelet SIGKILLs a pod `terminationGracePeriodSeconds` (30 s by
 * default) after SIGTERM, and a step that waits on the API server (an informer's list, a watch
 * that is still connecting, an ADD waiting for its pod's annotations) can wait out its own
 * request timeout (60–75 s) when the API server is down. Every step gets a bound; one that
 * overruns is logged and left behind: the process exits right after (`Deno.exit` in main.ts),
 * and everything the agent keeps is crash-safe by design (the store commits each change with
 * fsync, BIRD keeps routes through graceful restart).
 *
 * @module
 */

/** What the steps of one shutdown may take together; well under the 30 s grace period. */
export const SHUTDOWN_BUDGET_MS = 10_000;

/** Bound of each step of the agent's shutdown; they add up to under {@link SHUTDOWN_BUDGET_MS}. */
export const SHUTDOWN_STEP_MS = {
  /** Informers, status writer, the wait for the node config. */
  cluster: 3_000,
  /** The probe and metrics endpoint. */
  http: 1_000,
  /** Requests in flight, BIRD's reload in progress, the store. */
  agent: 5_000,
} as const;

/**
 * Runs `step` and waits for it at most `ms`; true when it finished in time (or failed in
 * time: a failure is logged, it does not stop the shutdown).
 */
export async function stopWithin(
  name: string,
  ms: number,
  step: () => Promise<unknown>,
  log: (fields: Record<string, unknown>) => void,
): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), ms));
  const started = performance.now();
  try {
    const outcome = await Promise.race([step().then(() => "done" as const), late]);
    if (outcome === "done") return true;
    log({
      level: "warn",
      msg: "shutdown step did not finish in time",
      step: name,
      ms,
    });
    return false;
  } catch (e) {
    log({
      level: "error",
      msg: "shutdown step failed",
      step: name,
      ms: Math.round(performance.now() - started),
      error: String(e),
    });
    return true;
  } finally {
    clearTimeout(timer);
  }
}
