/**
 * Gives freed native memory back to the kernel. glibc keeps what the agent frees (the receive
 * buffer of every per-pod netlink handle, SQLite pages, request bodies) in its arenas, so a burst
 * of pod starts leaves the RSS high long after it; `malloc_trim(0)` returns those pages (2.7 MiB
 * after 1,000 pods, in 0.5 ms, measured in docs/benchmarks.md).
 *
 * @module
 */

let trim: ((pad: bigint) => number) | null | undefined;

/**
 * Calls glibc's `malloc_trim(0)`.
 *
 * @returns true when memory was released; false when there was none, or on a libc without
 *   `malloc_trim` (musl) or without FFI permission, where it does nothing.
 */
export function trimFreedMemory(): boolean {
  if (trim === undefined) {
    try {
      const lib = Deno.dlopen("libc.so.6", {
        malloc_trim: { parameters: ["usize"], result: "i32" },
      });
      trim = (pad) => lib.symbols.malloc_trim(pad);
    } catch {
      trim = null;
    }
  }
  return trim ? trim(0n) === 1 : false;
}
