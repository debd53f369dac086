/**
 * Fault injection for tests: a method (or any property) replaced for the length of a `using`
 * block, the real one restored on dispose, also when the test fails.
 *
 * @module
 */

/** Replaces `obj[key]` with `replacement(real)` until dispose. */
export function patch<T extends object, K extends keyof T>(
  obj: T,
  key: K,
  replacement: (real: T[K]) => T[K],
): Disposable {
  const real = obj[key];
  obj[key] = replacement(real);
  return {
    [Symbol.dispose]() {
      obj[key] = real;
    },
  };
}
