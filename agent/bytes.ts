/**
 * Byte plumbing shared by the plugin (cni.ts) and the agent's socket server: joining read
 * chunks, and writing a whole buffer through a writer that may take only part of it per call.
 *
 * @module
 */

/** Joins `chunks` (whose lengths add up to `total`) into one array. */
export function concatBytes(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** Writes all of `data`: `write` on a socket or pipe may accept fewer bytes than offered. */
export async function writeAll(
  writer: { write(p: Uint8Array): Promise<number> },
  data: Uint8Array,
): Promise<void> {
  let offset = 0;
  while (offset < data.length) offset += await writer.write(data.subarray(offset));
}

/** {@linkcode writeAll} for a synchronous writer (stdout, a file). */
export function writeAllSync(
  writer: { writeSync(p: Uint8Array): number },
  data: Uint8Array,
): void {
  let offset = 0;
  while (offset < data.length) offset += writer.writeSync(data.subarray(offset));
}
