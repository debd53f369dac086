/**
 * Builds `dist/flock`. With a denort runtime available (`DENORT_BIN`, or the
 * one `deno compile` caches/downloads) this is a real `deno compile`. Where no
 * denort can be had (these offline machines), it writes a launcher: a shell
 * script that runs `deno run` on the same entry point with the same
 * permissions, so both paths behave the same.
 *
 * The launcher has a fast lane for the CNI plugin, which runs once per pod
 * start and stop: when `CNI_COMMAND` is set (non-empty) it runs `dist/flock-cni.js`, the
 * plugin (`cni.ts` and the few modules it imports) bundled into one file by
 * `deno bundle`, with only the permissions the plugin needs (env, net, read and
 * write for the agent socket and the log file, sys=uid for the log file's owner check; no run,
 * no FFI, no other sys).
 * That skips resolving and loading `main.ts` and three TypeScript modules on
 * every exec. The launcher checks with shell built-ins that the bundle is newer
 * than each of its sources and otherwise takes the ordinary path, so an edit
 * of the plugin can never run stale code.
 *
 * Usage: deno run -A scripts/build.ts [--launcher|--compile]
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The permissions flock runs with, compiled or launched. */
export const PERMISSIONS = ["--allow-all", "--no-prompt"];

/**
 * V8 settings for the long-running agent (BRIEF §8: RSS ≤ 64 MiB at 1,000 pods; figures in
 * bench/README.md, "Memory"):
 * - a 1 MiB young generation (V8's default lets it grow to several MiB per semi-space);
 *   scavenges of 1 MiB take well under a millisecond;
 * - `--max-opt=1`: JavaScript runs in the interpreter and the Sparkplug baseline compiler only.
 *   The optimising tiers (Maglev, Turbofan) are several MiB of the deno executable's code that
 *   the agent's hot path would otherwise page in, plus their compiler memory and optimised code:
 *   7–8 MiB of RSS at 1,000 pods, for about 0.15 ms of an ADD that is kernel-bound (netlink).
 * The plugin is unaffected: an exec lives ~25 ms, too short for anything to be optimised.
 */
export const V8_FLAGS = ["--v8-flags=--max-semi-space-size=1,--max-opt=1"];

/**
 * Environment of the launched agent: at most two glibc malloc arenas instead of one per thread
 * (Deno runs a dozen threads), which saves a few MiB of RSS. A compiled binary cannot carry
 * environment variables: set it in the DaemonSet (`MALLOC_ARENA_MAX=2`).
 */
const LAUNCH_ENV = "MALLOC_ARENA_MAX=2 DENO_NO_UPDATE_CHECK=1";

/**
 * What the CNI plugin needs: env, the agent socket (Deno counts a unix socket as net, read and
 * write), its log file (write) and its own uid (sys=uid: the log file's safety checks trust a
 * directory and file owned by root or by the plugin's user, so a rootless runtime's plugin can
 * log to its own directory; costs nothing measurable per exec, see
 * bench/cni_permissions_bench.ts). No run, no FFI, no other sys.
 */
export const CNI_PERMISSIONS = [
  "--allow-env",
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-sys=uid",
  "--no-prompt",
];

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const distDir = join(root, "dist");
const entry = join(root, "main.ts");

async function compile(out: string): Promise<boolean> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["compile", "--no-config", "--no-lock", ...V8_FLAGS, ...PERMISSIONS, "-o", out, entry],
    stdout: "inherit",
    stderr: "piped",
  });
  const r = await cmd.output();
  if (r.success) return true;
  console.error(new TextDecoder().decode(r.stderr).trim().split("\n").slice(-3).join("\n"));
  return false;
}

/** A unique sibling of `path` to write to before an atomic rename over `path`. */
function tempSibling(path: string): string {
  return `${path}.tmp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
}

/**
 * Bundles the plugin into `bundle`; returns the local source files it was made from (for the
 * launcher's freshness check), or undefined when bundling failed.
 */
async function bundleCni(bundle: string): Promise<string[] | undefined> {
  const entryFile = `${tempSibling(bundle)}.ts`;
  const tmpBundle = tempSibling(bundle);
  // The bundle's entry: the plugin exactly as main.ts runs it for CNI_COMMAND.
  await Deno.writeTextFile(
    entryFile,
    `import { cniMain } from ${JSON.stringify(join(root, "cni.ts"))};\n` +
      "Deno.exit(await cniMain());\n",
  );
  try {
    const run = (args: string[]) =>
      new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" }).output();
    const bundled = await run([
      "bundle",
      "--no-config",
      "--no-lock",
      "--platform",
      "deno",
      "-o",
      tmpBundle,
      entryFile,
    ]);
    if (!bundled.success) {
      console.error(`deno bundle failed: ${new TextDecoder().decode(bundled.stderr).trim()}`);
      return undefined;
    }
    const info = await run(["info", "--json", "--no-config", "--no-lock", entryFile]);
    if (!info.success) return undefined;
    const graph = JSON.parse(new TextDecoder().decode(info.stdout)) as {
      modules: { specifier: string }[];
    };
    await Deno.rename(tmpBundle, bundle);
    return graph.modules.map((m) => m.specifier)
      .filter((s) => s.startsWith("file://"))
      .map((s) => fileURLToPath(s))
      .filter((path) => path !== entryFile);
  } finally {
    await Deno.remove(entryFile).catch(() => {});
    await Deno.remove(tmpBundle).catch(() => {});
  }
}

/** `'…'` for sh: paths are ours, but quote them anyway. */
function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * Writes the launcher `<outDir>/flock` and the bundled plugin `<outDir>/flock-cni.js`, each
 * through a temp file and a rename: a shell reads its script while it runs, so a launcher in use
 * must never be rewritten in place.
 *
 * @returns the launcher's path
 */
export async function writeLauncher(outDir: string = distDir): Promise<string> {
  await Deno.mkdir(outDir, { recursive: true });
  const out = join(outDir, "flock");
  const bundle = join(outDir, "flock-cni.js");
  const deno = Deno.execPath();
  const sources = await bundleCni(bundle);
  let cniLane = "";
  if (sources) {
    const fresh = sources.map((src) => `[ "$b" -nt ${shellQuote(src)} ]`).join(" && ");
    cniLane = `# CNI plugin fast lane: the bundled plugin, used only while newer than its sources.
b=${shellQuote(bundle)}
if [ -n "\${CNI_COMMAND}" ] && ${fresh}; then
  DENO_NO_UPDATE_CHECK=1 exec ${deno} run --no-config --no-lock ${CNI_PERMISSIONS.join(" ")} "$b"
fi
`;
  }
  const script = `#!/bin/sh
# flock launcher (no denort available to compile): runs main.ts with the compiled binary's permissions.
${cniLane}# The agent starts once and runs for days: it skips V8's code cache, whose database deno run
# maps into memory (~1 MiB of RSS); other modes keep the faster start-up.
cache=; [ "$1" = agent ] && cache=--no-code-cache
${LAUNCH_ENV} FLOCK_EXECUTABLE="\${FLOCK_EXECUTABLE:-$(readlink -f "$0")}" exec ${deno} run --no-config --no-lock $cache ${
    [...V8_FLAGS, ...PERMISSIONS].join(" ")
  } ${entry} "$@"
`;
  const tmp = tempSibling(out);
  try {
    await Deno.writeTextFile(tmp, script, { mode: 0o755 });
    await Deno.chmod(tmp, 0o755);
    await Deno.rename(tmp, out);
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
  return out;
}

if (import.meta.main) {
  const out = join(distDir, "flock");
  await Deno.mkdir(distDir, { recursive: true });
  const mode = Deno.args[0];
  const wantCompile = mode === "--compile" || (mode !== "--launcher" && Deno.env.get("DENORT_BIN"));
  if (wantCompile && await compile(out)) {
    console.error(`built ${out} (deno compile)`);
  } else {
    if (wantCompile) console.error("deno compile failed; writing the launcher instead");
    await writeLauncher();
    console.error(`wrote launcher ${out}`);
  }
}
