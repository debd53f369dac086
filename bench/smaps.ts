/**
 * Where a process's resident memory is: `/proc/PID/smaps` summed into a few groups a reader can
 * act on (the deno executable's code, V8's heap, malloc, …). The groups are recognised by the
 * mappings' shapes, so they are a close approximation, not V8's own accounting: see
 * bench/README.md, "Memory".
 *
 * @module
 */

/** Resident MiB per group, in {@linkcode RSS_GROUPS} order; they add up to the total. */
export type RssBreakdown = Record<RssGroup, number>;

/** The groups, in display order. */
export const RSS_GROUPS = [
  "exeCode",
  "exeData",
  "v8Heap",
  "jitCode",
  "mallocMain",
  "otherAnon",
  "libs",
  "otherFiles",
] as const;

/** One group of {@linkcode RSS_GROUPS}. */
export type RssGroup = typeof RSS_GROUPS[number];

/** Short labels of the groups for the benchmark table. */
export const RSS_GROUP_LABELS: Record<RssGroup, string> = {
  exeCode: "deno code+rodata",
  exeData: "deno relocated data",
  v8Heap: "V8 heap pages",
  jitCode: "JIT code",
  mallocMain: "malloc main arena",
  otherAnon: "other anon",
  libs: "shared libs",
  otherFiles: "other files",
};

/** V8 allocates its heap in pages of this size, each its own anonymous mapping. */
const V8_PAGE_BYTES = 256 * 1024;

/**
 * Sums the `Rss:` of every mapping of an smaps text into groups. `executable` is the path of
 * the process's executable (its file pages are the code; its written pages are relocated data).
 */
export function breakdownSmaps(smaps: string, executable: string): RssBreakdown {
  const out = Object.fromEntries(RSS_GROUPS.map((g) => [g, 0])) as RssBreakdown;
  let group: RssGroup | undefined;
  let fromExecutable = false;
  for (const line of smaps.split("\n")) {
    const header = line.match(/^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$/);
    if (header) {
      const bytes = parseInt(header[2], 16) - parseInt(header[1], 16);
      const [perms, name] = [header[3], header[4]];
      fromExecutable = name === executable;
      group = fromExecutable ? "exeCode" : classify(bytes, perms, name);
      continue;
    }
    const rss = line.match(/^Rss:\s+(\d+) kB/);
    if (rss && group) out[group] += Number(rss[1]) / 1024;
    // A private file mapping's written pages are anonymous: the executable's are its
    // relocated data, not its code.
    const anon = line.match(/^Anonymous:\s+(\d+) kB/);
    if (anon && fromExecutable) {
      out.exeCode -= Number(anon[1]) / 1024;
      out.exeData += Number(anon[1]) / 1024;
    }
  }
  return out;
}

function classify(bytes: number, perms: string, name: string): RssGroup {
  if (name === "[heap]") return "mallocMain";
  if (name.startsWith("/")) {
    if (/\.so(\.\d+)*$/.test(name)) return "libs";
    return "otherFiles";
  }
  if (name && !name.startsWith("[anon")) return "otherAnon"; // [stack], [vdso], …
  if (perms.includes("x")) return "jitCode";
  if (bytes === V8_PAGE_BYTES) return "v8Heap";
  return "otherAnon";
}

/** {@linkcode breakdownSmaps} of a live process; the executable's mappings are exeCode/exeData. */
export async function rssBreakdownOf(pid: number): Promise<RssBreakdown> {
  const [smaps, executable] = await Promise.all([
    Deno.readTextFile(`/proc/${pid}/smaps`),
    Deno.readLink(`/proc/${pid}/exe`),
  ]);
  return breakdownSmaps(smaps, executable);
}

/** "deno code+rodata 36.1, deno relocated data 2.6, …" (MiB). */
export function formatBreakdown(b: RssBreakdown): string {
  return RSS_GROUPS.map((g) => `${RSS_GROUP_LABELS[g]} ${b[g].toFixed(1)}`).join(", ");
}
