/**
 * Cost of the plugin's log line per exec: the bounded, checked append of agent/log_file.ts
 * (lstat, directory checks, open, write, fstat, lstat) against the former plain append
 * (open O_APPEND, write), in one process, interleaved. Run: `deno run -A bench/cni_log_bench.ts`
 *
 * @module
 */

import { writeAllSync } from "../agent/bytes.ts";
import { appendLogLineSync } from "../agent/log_file.ts";
import { summarize } from "./report.ts";

const N = Number(Deno.args[0] ?? 5000);
const dir = await Deno.makeTempDir({ prefix: "flock-log-bench-" });
const line =
  JSON.stringify({ ts: new Date().toISOString(), level: "info", msg: "ok", command: "ADD" }) +
  "\n";
try {
  const plain = (path: string) => {
    using file = Deno.openSync(path, { append: true, create: true, mode: 0o600 });
    writeAllSync(file, new TextEncoder().encode(line));
  };
  const times = { plain: [] as number[], checked: [] as number[] };
  for (let i = 0; i < N; i++) {
    let t = performance.now();
    plain(`${dir}/plain.log`);
    times.plain.push(performance.now() - t);
    t = performance.now();
    appendLogLineSync(`${dir}/sub/checked.log`, line);
    times.checked.push(performance.now() - t);
  }
  const [p, c] = [times.plain, times.checked].map((xs) => summarize(xs).median * 1000);
  console.log(
    `log line, ${N} appends each (median): former plain append ${p.toFixed(1)} µs, ` +
      `checked + rotating append ${c.toFixed(1)} µs (+${(c - p).toFixed(1)} µs per exec)`,
  );
} finally {
  await Deno.remove(dir, { recursive: true });
}
