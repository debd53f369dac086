/**
 * Bounded polling for end-to-end tests: wait until what a user would observe holds.
 *
 * ```ts
 * const s = await eventually("status.ready", () => readStatus(), (s) => s.ready === true);
 * ```
 *
 * @module
 */

/**
 * Calls `get` every `intervalMs` until `check` holds for its value and returns that value;
 * throws naming `what` and the last value once `ms` have passed.
 */
export async function eventually<T>(
  what: string,
  get: () => Promise<T>,
  check: (v: T) => boolean,
  ms = 20_000,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const last = await get();
    if (check(last)) return last;
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
