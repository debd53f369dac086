/**
 * Logging for a periodic job that may fail many rounds in a row (a resync while the node is
 * busy): one line when the trouble starts, a reminder every {@link REMIND_EVERY} failed rounds,
 * one line when it recovers, instead of a line per round.
 *
 * @module
 */

/** A still-failing job is logged again after this many failed rounds. */
export const REMIND_EVERY = 60;

/** Counts consecutive failures of one job and logs their start, reminders and end. */
export class FailureStreak {
  #failures = 0;

  constructor(
    /** The job, e.g. `anycast resync`. */
    readonly what: string,
    readonly log: ((fields: Record<string, unknown>) => void) | undefined,
    /** How the job is tried again, as the first line says it (e.g. `retrying with backoff`). */
    readonly retrying = "retrying every round",
  ) {}

  /** Consecutive failed rounds so far (0 when the last one succeeded). */
  get failures(): number {
    return this.#failures;
  }

  /**
   * Records a failed round; logs the first one and every {@link REMIND_EVERY}th, with `context`
   * (which may set `level`) added to the line. Returns whether it logged.
   */
  failed(error: unknown, context: Record<string, unknown> = {}): boolean {
    const failures = ++this.#failures;
    if (failures !== 1 && failures % REMIND_EVERY !== 0) return false;
    this.log?.({
      level: "warn",
      ...context,
      msg: failures === 1
        ? `${this.what} failed; ${this.retrying}, logged again once it recovers`
        : `${this.what} still failing`,
      failures,
      error: error instanceof Error ? error.message : String(error),
    });
    return true;
  }

  /** Records a successful round; logs the recovery after failed ones. */
  succeeded(): void {
    if (this.#failures === 0) return;
    this.log?.({ level: "info", msg: `${this.what} recovered`, failures: this.#failures });
    this.#failures = 0;
  }
}
