import assert from "node:assert/strict";
import { breakdownSmaps, formatBreakdown, RSS_GROUPS, rssBreakdownOf } from "./smaps.ts";

const EXE = "/opt/deno/deno";

/** One smaps entry: header line plus the fields the breakdown reads. */
function entry(range: string, perms: string, name: string, rssKb: number, anonKb = 0): string {
  return [
    `${range} ${perms} 00000000 fe:00 1234                     ${name}`.trimEnd(),
    `Size:               9999 kB`,
    `Rss:                ${rssKb} kB`,
    `Anonymous:          ${anonKb} kB`,
    `VmFlags: rd mr mw me`,
  ].join("\n");
}

Deno.test("breakdownSmaps: groups mappings by what they are", () => {
  const smaps = [
    entry("55ab62420000-55ab63fae000", "r--p", EXE, 10240),
    entry("55ab64224000-55ab67f18000", "r-xp", EXE, 20480),
    entry("55ab67f18000-55ab6818a000", "rw-p", EXE, 2048, 2048), // relocated data
    entry("55ab6819b000-55ab681c4000", "rw-p", "[heap]", 4096, 4096),
    entry("f956c600000-f956c640000", "rw-p", "", 256, 256), // one V8 page
    entry("cf5f7300000-cf5f7340000", "rw-p", "", 128, 128), // a half-used V8 page
    entry("7f66b4000000-7f66d3dc0000", "rwxp", "", 512, 512), // V8 code range
    entry("7f66dc000000-7f66dc20c000", "rw-p", "", 1024, 1024), // malloc arena, stacks
    entry("7ffc747f0000-7ffc74858000", "rw-p", "[stack]", 400, 400),
    entry("7f66e4b7b000-7f66e4cd1000", "r-xp", "/usr/lib/x86_64-linux-gnu/libc.so.6", 1300),
    entry("7f66e2c00000-7f66e31b9000", "r--s", "/root/.cache/deno/v8_code_cache_v2", 768),
  ].join("\n");
  const b = breakdownSmaps(smaps, EXE);
  assert.deepEqual(b, {
    exeCode: 30,
    exeData: 2,
    v8Heap: 0.375,
    jitCode: 0.5,
    mallocMain: 4,
    otherAnon: (1024 + 400) / 1024,
    libs: 1300 / 1024,
    otherFiles: 0.75,
  });
  assert.match(formatBreakdown(b), /^deno code\+rodata 30\.0, deno relocated data 2\.0, V8 heap/);
});

Deno.test("rssBreakdownOf: the groups of a live process add up to its VmRSS", async () => {
  const vmRss = async () => {
    const status = await Deno.readTextFile("/proc/self/status");
    return Number(status.match(/^VmRSS:\s+(\d+) kB/m)![1]) / 1024;
  };
  // The test process keeps allocating: VmRSS read before and after brackets the breakdown.
  const before = await vmRss();
  const b = await rssBreakdownOf(Deno.pid);
  const after = await vmRss();
  const total = RSS_GROUPS.reduce((sum, g) => sum + b[g], 0);
  const [low, high] = [Math.min(before, after) - 1, Math.max(before, after) + 1];
  assert.ok(total >= low && total <= high, `breakdown ${total} MiB, VmRSS ${before}…${after} MiB`);
  assert.ok(b.exeCode > 10, `the deno executable's code is resident: ${b.exeCode} MiB`);
  assert.ok(b.v8Heap > 0, "V8 heap pages found");
});
