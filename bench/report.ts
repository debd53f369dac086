/**
 * Shared pieces of the benchmarks: order statistics of timing samples, and the one table every
 * benchmark prints (figure, target, PASS/MISS).
 *
 * @module
 */

/** Order statistics of a set of samples (ms unless said otherwise). */
export interface Summary {
  n: number;
  median: number;
  p99: number;
  min: number;
  max: number;
}

/** The `q` quantile (0..1) of ascending `sorted`, nearest rank. */
export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil(q * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))];
}

/** Median, p99 (nearest rank), min and max of `samples`. */
export function summarize(samples: number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  return {
    n: s.length,
    median: quantile(s, 0.5),
    p99: quantile(s, 0.99),
    min: s[0] ?? NaN,
    max: s[s.length - 1] ?? NaN,
  };
}

/** One line of the result table. */
export interface ResultRow {
  /** What was measured. */
  what: string;
  /** The measured figure, formatted. */
  figure: string;
  /** The target, formatted ("" for context rows). */
  target?: string;
  /** Whether the target was met; undefined for context rows without a target. */
  pass?: boolean;
}

/** Formats milliseconds with a precision that suits their size. */
export function ms(value: number): string {
  if (!Number.isFinite(value)) return "n/a";
  return value >= 100 ? `${value.toFixed(0)} ms` : `${value.toFixed(value >= 10 ? 1 : 2)} ms`;
}

/** Formats a ratio as `0.123×`. */
export function ratio(value: number): string {
  return Number.isFinite(value) ? `${value.toFixed(3)}×` : "n/a";
}

/** Microseconds per call of `fn` over `calls` calls in a row. */
export function perCallUs(calls: number, fn: () => void): number {
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) fn();
  return (performance.now() - t0) / calls * 1000;
}

/**
 * Median µs per call of `a` and of `b` over `rounds` rounds of `calls` calls each, the two
 * interleaved round by round so that machine noise hits both alike.
 */
export function interleavedMedianUs(
  rounds: number,
  calls: number,
  a: () => void,
  b: () => void,
): [number, number] {
  const samplesA: number[] = [];
  const samplesB: number[] = [];
  for (let round = 0; round < rounds; round++) {
    samplesA.push(perCallUs(calls, a));
    samplesB.push(perCallUs(calls, b));
  }
  return [summarize(samplesA).median, summarize(samplesB).median];
}

/** A time in µs for the table. */
export function us(value: number): string {
  return `${value.toFixed(1)} µs`;
}

/** "median X / p99 Y (n=N)". */
export function medianP99(s: Summary): string {
  return `median ${ms(s.median)} / p99 ${ms(s.p99)} (n=${s.n})`;
}

/** Renders rows as an aligned plain-text table with a PASS/MISS column. */
export function formatTable(title: string, rows: ResultRow[]): string {
  const whatWidth = Math.max(4, ...rows.map((r) => r.what.length));
  const figureWidth = Math.max(6, ...rows.map((r) => r.figure.length));
  const targetWidth = Math.max(6, ...rows.map((r) => (r.target ?? "").length));
  const line = (what: string, figure: string, target: string, verdict: string) =>
    `${what.padEnd(whatWidth)}  ${figure.padEnd(figureWidth)}  ${
      target.padEnd(targetWidth)
    }  ${verdict}`.trimEnd();
  const out = [
    `== ${title}`,
    line("what", "figure", "target", "verdict"),
    line("-".repeat(whatWidth), "-".repeat(figureWidth), "-".repeat(targetWidth), "-------"),
  ];
  for (const r of rows) {
    const verdict = r.pass === undefined ? "" : r.pass ? "PASS" : "MISS";
    out.push(line(r.what, r.figure, r.target ?? "", verdict));
  }
  return out.join("\n");
}

/** Resident memory of a process in MiB, from /proc/PID/status. */
export interface Rss {
  /** VmRSS: everything resident. */
  total: number;
  /** RssAnon: heap, stacks, malloc arenas. */
  anon: number;
  /** RssFile: mapped file pages (mostly the deno executable's own code). */
  file: number;
}

/** Reads VmRSS, RssAnon and RssFile of a process. */
export async function rssOf(pid: number): Promise<Rss> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const field = (name: string) => {
    const m = status.match(new RegExp(`^${name}:\\s+(\\d+)\\s+kB`, "m"));
    if (!m) throw new Error(`no ${name} in /proc/${pid}/status`);
    return Number(m[1]) / 1024;
  };
  return { total: field("VmRSS"), anon: field("RssAnon"), file: field("RssFile") };
}

/** "62.4 MiB (anon 21.0, file 41.4)". */
export function formatRss(rss: Rss): string {
  return `${rss.total.toFixed(1)} MiB (anon ${rss.anon.toFixed(1)}, file ${rss.file.toFixed(1)})`;
}

/** Creates many network namespaces (lo left down) with one `ip -batch` run instead of N `ip`s. */
export async function addNamespaces(names: string[]): Promise<void> {
  await ipBatch(names.map((n) => `netns add ${n}`));
}

/** Deletes network namespaces with one `ip -batch -force` run; missing ones are ignored. */
export async function deleteNamespaces(names: string[]): Promise<void> {
  if (names.length === 0) return;
  await ipBatch(names.map((n) => `netns del ${n}`), true);
}

/** Runs `ip -batch -` with `lines`; with `force`, failing lines are skipped, not fatal. */
export async function ipBatch(lines: string[], force = false): Promise<void> {
  const child = new Deno.Command("ip", {
    args: [...(force ? ["-force"] : []), "-batch", "-"],
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(lines.join("\n") + "\n"));
  await w.close();
  const out = await child.output();
  if (!out.success && !force) {
    throw new Error(`ip -batch failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

let libc:
  | Deno.DynamicLibrary<{ getrusage: { parameters: ["i32", "buffer"]; result: "i32" } }>
  | undefined;

/**
 * CPU time (user + system, ms) used so far by this process's reaped children and their own
 * reaped descendants (`getrusage(RUSAGE_CHILDREN)`). The difference around one exec is that
 * exec's CPU cost, which unlike wall time hardly depends on what else the machine is doing.
 */
export function childrenCpuMs(): number {
  libc ??= Deno.dlopen("libc.so.6", {
    getrusage: { parameters: ["i32", "buffer"], result: "i32" },
  });
  const usage = new BigInt64Array(18); // struct rusage: two timevals, then 14 longs
  const RUSAGE_CHILDREN = -1;
  if (libc.symbols.getrusage(RUSAGE_CHILDREN, usage) !== 0) throw new Error("getrusage failed");
  const [uSec, uUsec, sSec, sUsec] = [usage[0], usage[1], usage[2], usage[3]].map(Number);
  return (uSec + sSec) * 1000 + (uUsec + sUsec) / 1000;
}

/** CPU time (user + system, ms) a running process has used, from /proc/PID/stat (10 ms ticks). */
export async function processCpuMs(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const CLOCK_TICKS_PER_SECOND = 100;
  return (Number(fields[11]) + Number(fields[12])) * 1000 / CLOCK_TICKS_PER_SECOND;
}
