/**
 * Runs async work over a list with a bound on how much is in flight at once.
 *
 * @module
 */

/**
 * Calls `fn` for every item, at most `limit` calls in flight at a time, in item order. Every
 * item is tried whatever the others do: a rejection does not stop the rest. Resolves, once all
 * have settled, to each call's outcome in item order (never rejects).
 *
 * @throws {RangeError} when `limit` is not a positive integer
 */
export async function forEachBounded<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<void>,
): Promise<PromiseSettledResult<void>[]> {
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new RangeError(`limit must be a positive integer, not ${limit}`);
  }
  const outcomes: PromiseSettledResult<void>[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        await fn(items[i], i);
        outcomes[i] = { status: "fulfilled", value: undefined };
      } catch (reason) {
        outcomes[i] = { status: "rejected", reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return outcomes;
}
