/**
 * Exec cost of the bundled plugin's permission flags: `dist/flock-cni.js` run as the launcher
 * runs it (`deno run --no-config --no-lock <CNI_PERMISSIONS>`), answering VERSION, with the
 * flags as they are and with `--allow-sys=uid` left out, interleaved so machine noise hits both
 * alike; median, p99 and the ratio. `--allow-sys=uid` lets the plugin read its own uid, which
 * its log-file checks need under a rootless runtime (agent/log_file.ts).
 *
 * Run: `deno run -A --no-lock bench/cni_permissions_bench.ts [--runs 40]`
 *
 * @module
 */

import { join } from "node:path";
import { CNI_PERMISSIONS, writeLauncher } from "../scripts/build.ts";
import { formatTable, medianP99, ratio, summarize } from "./report.ts";
import { integerArgs } from "./args.ts";

const { runs } = integerArgs({ runs: { default: 40, min: 1 } });

const dir = await Deno.makeTempDir({ prefix: "flock-permbench-" });
try {
  await writeLauncher(dir);
  const bundle = join(dir, "flock-cni.js");
  const withSys = CNI_PERMISSIONS;
  const withoutSys = CNI_PERMISSIONS.filter((flag) => !flag.startsWith("--allow-sys"));
  const variants = [
    { label: "with --allow-sys=uid", flags: withSys, samples: [] as number[] },
    { label: "without --allow-sys", flags: withoutSys, samples: [] as number[] },
  ];
  const stdin = new TextEncoder().encode(JSON.stringify({ cniVersion: "1.1.0" }));
  const execOnce = async (flags: string[]): Promise<number> => {
    const started = performance.now();
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-config", "--no-lock", ...flags, bundle],
      env: { CNI_COMMAND: "VERSION", DENO_NO_UPDATE_CHECK: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(stdin);
    await writer.close();
    const out = await child.output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
    return performance.now() - started;
  };
  for (const v of variants) await execOnce(v.flags); // warm the page cache and code cache
  for (let i = 0; i < runs; i++) {
    for (const v of i % 2 ? [...variants].reverse() : variants) {
      v.samples.push(await execOnce(v.flags));
    }
  }
  const [a, b] = variants.map((v) => summarize(v.samples));
  console.log(formatTable("bundled plugin exec (VERSION): cost of --allow-sys=uid", [
    { what: `${variants[0].label}`, figure: medianP99(a) },
    { what: `${variants[1].label}`, figure: medianP99(b) },
    { what: "median ratio with/without", figure: ratio(a.median / b.median) },
  ]));
} finally {
  await Deno.remove(dir, { recursive: true });
}
