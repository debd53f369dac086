/**
 * A sleep that can be cut short: loops that wait between retries sleep here, and `wake()` ends
 * the current sleep at once (a stop, or news worth acting on now).
 *
 * @module
 */

/** One cancellable sleep at a time. */
export class Sleeper {
  #wake?: () => void;

  /** Resolves after `ms`, or earlier on {@link wake}. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }

  /** Ends the current sleep, if any. */
  wake(): void {
    this.#wake?.();
  }
}
