/**
 * `flock install`: puts the plugin executable into the CNI bin dir and writes
 * the conflist, each through a temp file and a rename, so a runtime never
 * execs a half-copied binary or reads a half-written config ("text file busy"
 * and partial reads are what in-place writes cause).
 */

import { parseArgs } from "node:util";
import { dirname, isAbsolute, join } from "node:path";
import { DEFAULT_SOCKET } from "./protocol.ts";

/** Where the conflist and binary go by default. */
export const DEFAULT_BIN_DIR = "/opt/cni/bin";
export const DEFAULT_CONF_DIR = "/etc/cni/net.d";
/** Sorts before most other CNIs' conflists, so the runtime picks flock. */
export const CONFLIST_NAME = "01-flock.conflist";

/** Options of {@link install}. */
export interface InstallOptions {
  binDir: string;
  confDir: string;
  /** Network name in the conflist. */
  networkName: string;
  socketPath: string;
  /** The executable to copy (default: this process's own). */
  source?: string;
  /** Extra keys for the plugin entry (e.g. logFile). */
  pluginExtras?: Record<string, unknown>;
}

/** The conflist flock writes (spec 1.0.0 header with 1.1.0 advertised). */
export function renderConflist(
  o: Pick<InstallOptions, "networkName" | "socketPath" | "pluginExtras">,
): string {
  const conf = {
    cniVersion: "1.0.0",
    cniVersions: ["1.0.0", "1.1.0"],
    name: o.networkName,
    plugins: [{
      type: "flock",
      agentSocket: o.socketPath,
      // pod-annotations: containerd/CRI-O pass the pod's annotations; ips: a runtime's static
      // addresses (podman --ip/--ip6), honoured like the ipv6/ipv4 annotations.
      capabilities: { "io.kubernetes.cri.pod-annotations": true, ips: true },
      ...o.pluginExtras,
    }],
  };
  return JSON.stringify(conf, null, 2) + "\n";
}

/**
 * The file that is "the running executable": a compiled flock binary is
 * `Deno.execPath()`; under the development launcher it is the launcher script,
 * which says so in `FLOCK_EXECUTABLE`.
 *
 * @throws {Error} under a bare `deno run`, which has neither
 */
export function selfExecutable(): string {
  const launcher = Deno.env.get("FLOCK_EXECUTABLE");
  if (launcher) return launcher;
  // Under a bare `deno run main.ts` the running executable is deno itself: installed as the
  // plugin it would read the netconf on stdin as a script.
  if (!Deno.build.standalone) {
    throw new Error(
      "no flock executable to use: this is `deno run` on the sources; run dist/flock " +
        "(make compile) or the compiled binary",
    );
  }
  return Deno.execPath();
}

async function atomicWrite(path: string, write: (tmp: string) => Promise<void>, mode: number) {
  const tmp = join(dirname(path), `.${crypto.randomUUID()}.tmp`);
  try {
    await write(tmp);
    await Deno.chmod(tmp, mode);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

async function sameContent(a: string, b: string): Promise<boolean> {
  try {
    const [x, y] = await Promise.all([Deno.readFile(a), Deno.readFile(b)]);
    return x.length === y.length && x.every((v, i) => v === y[i]);
  } catch {
    return false;
  }
}

/** Installs binary and conflist; returns what changed. Idempotent. */
export async function install(o: InstallOptions): Promise<{ binary: boolean; conflist: boolean }> {
  await Deno.mkdir(o.binDir, { recursive: true });
  await Deno.mkdir(o.confDir, { recursive: true });
  const source = o.source ?? selfExecutable();
  const binPath = join(o.binDir, "flock");
  let binary = false;
  if (!(await sameContent(source, binPath))) {
    await atomicWrite(binPath, (tmp) => Deno.copyFile(source, tmp), 0o755);
    binary = true;
  }
  const confPath = join(o.confDir, CONFLIST_NAME);
  const text = renderConflist(o);
  let conflist = false;
  const current = await Deno.readTextFile(confPath).catch(() => undefined);
  if (current !== text) {
    await atomicWrite(confPath, (tmp) => Deno.writeTextFile(tmp, text), 0o644);
    conflist = true;
  }
  return { binary, conflist };
}

/** The conflist's network name unless `--network-name` says otherwise. */
export const DEFAULT_NETWORK_NAME = "flock";

/**
 * Reads `flock install`'s flags: `[--bin-dir DIR] [--conf-dir DIR] [--socket PATH]
 * [--network-name NAME] [--log-file PATH]`. `--name` is the older spelling of `--network-name`;
 * `--log-file` becomes the plugin's `logFile` (one JSON line per call).
 */
export function parseInstallArgs(args: string[]): InstallOptions {
  const { values } = parseArgs({
    args,
    options: {
      "bin-dir": { type: "string", default: DEFAULT_BIN_DIR },
      "conf-dir": { type: "string", default: DEFAULT_CONF_DIR },
      socket: { type: "string", default: DEFAULT_SOCKET },
      "network-name": { type: "string" },
      name: { type: "string" },
      "log-file": { type: "string" },
    },
    strict: true,
  });
  if (values["network-name"] !== undefined && values.name !== undefined) {
    throw new TypeError("--network-name and --name are the same flag; give one");
  }
  const networkName = values["network-name"] ?? values.name ?? DEFAULT_NETWORK_NAME;
  // The CNI spec's rule for network names; libcni and podman refuse anything else.
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$/.test(networkName)) {
    throw new TypeError(
      `--network-name ${JSON.stringify(networkName)}: letters, digits, '_', '.' and '-', ` +
        "starting with a letter or digit",
    );
  }
  // The runtime execs the plugin from its own working directory, so these must be absolute.
  for (const flag of ["socket", "log-file"] as const) {
    const path = values[flag];
    if (path && !isAbsolute(path)) {
      throw new TypeError(`--${flag} ${JSON.stringify(path)}: must be an absolute path`);
    }
  }
  return {
    binDir: values["bin-dir"]!,
    confDir: values["conf-dir"]!,
    networkName,
    socketPath: values.socket!,
    pluginExtras: values["log-file"] ? { logFile: values["log-file"] } : undefined,
  };
}

/** `flock install`: see {@link parseInstallArgs} for the flags. */
export async function installMain(args: string[]): Promise<number> {
  let options: InstallOptions;
  try {
    options = parseInstallArgs(args);
  } catch (e) {
    console.error(`flock install: ${(e as Error).message}`);
    return 2;
  }
  let changed;
  try {
    changed = await install(options);
  } catch (e) {
    // A read-only or non-directory CNI dir: one line the init container's log shows, not a
    // stack trace.
    console.error(`flock install: ${(e as Error).message}`);
    return 1;
  }
  console.log(JSON.stringify({ installed: true, ...changed }));
  return 0;
}
