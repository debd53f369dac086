/**
 * Builds `dist/flock`. With a denort runtime available (`DENORT_BIN`, or the
 * one `deno compile` caches/downloads) this is a real `deno compile`. Where no
 * denort can be had (these offline machines), it writes a launcher: a shell
 * script that runs `deno run` on the same entry point with the same
 * permissions, so both paths behave the same.
 *
 * Usage: deno run -A scripts/build.ts [--launcher|--compile]
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The permissions flock runs with, compiled or launched. */
export const PERMISSIONS = ["--allow-all", "--no-prompt"];

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const out = join(root, "dist", "flock");
const entry = join(root, "main.ts");

async function compile(): Promise<boolean> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["compile", "--no-config", "--no-lock", ...PERMISSIONS, "-o", out, entry],
    stdout: "inherit",
    stderr: "piped",
  });
  const r = await cmd.output();
  if (r.success) return true;
  console.error(new TextDecoder().decode(r.stderr).trim().split("\n").slice(-3).join("\n"));
  return false;
}

async function writeLauncher(): Promise<void> {
  const deno = Deno.execPath();
  const script = `#!/bin/sh
# flock launcher (no denort available to compile): runs main.ts with the compiled binary's permissions.
FLOCK_EXECUTABLE="\${FLOCK_EXECUTABLE:-$(readlink -f "$0")}" exec ${deno} run --no-config --no-lock ${
    PERMISSIONS.join(" ")
  } ${entry} "$@"
`;
  await Deno.writeTextFile(out, script, { mode: 0o755 });
  await Deno.chmod(out, 0o755);
}

if (import.meta.main) {
  await Deno.mkdir(dirname(out), { recursive: true });
  const mode = Deno.args[0];
  const wantCompile = mode === "--compile" || (mode !== "--launcher" && Deno.env.get("DENORT_BIN"));
  if (wantCompile && await compile()) {
    console.error(`built ${out} (deno compile)`);
  } else {
    if (wantCompile) console.error("deno compile failed; writing the launcher instead");
    await writeLauncher();
    console.error(`wrote launcher ${out}`);
  }
}
