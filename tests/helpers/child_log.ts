/**
 * A child process's output into a log file that tests can read while the child runs.
 *
 * @module
 */

/**
 * Appends every chunk of `streams` to the file at `path` as it arrives (one write at a time, so
 * that the streams' chunks do not tear each other), and closes the file when all have ended.
 * (`pipeTo` of the file's `writable` held the lines back until the child exited, so a log
 * read while the child ran came back empty.)
 */
export async function appendToLog(
  path: string,
  ...streams: ReadableStream<Uint8Array>[]
): Promise<void> {
  const file = await Deno.open(path, { append: true, create: true });
  let writes = Promise.resolve();
  const writeAll = async (chunk: Uint8Array) => {
    for (let done = 0; done < chunk.length;) done += await file.write(chunk.subarray(done));
  };
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    try {
      for await (const chunk of stream) {
        writes = writes.then(() => writeAll(chunk));
        await writes;
      }
    } catch {
      // the child went away mid-line; what arrived is in the file
    }
  };
  Promise.all(streams.map(pump)).finally(() => writes.catch(() => {}).finally(() => file.close()));
}
