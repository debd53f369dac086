/**
 * `flock install`: puts the plugin executable into the CNI bin dir and writes
 * the conflist, each through a temp file and a rename, so a runtime never
 * execs a half-copied binary or reads a half-written config ("text file busy"
 * and partial reads are what in-place writes cause).
 */

import { parseArgs } from "node:util";
import { Buffer } from "node:buffer";
import { basename, dirname, isAbsolute, join } from "node:path";
import { DEFAULT_SOCKET } from "./protocol.ts";
import { isValidNetworkName } from "./cni_input.ts";
import { lockDirectory } from "./dir_lock.ts";

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
  /** Bound on waiting for another install's directory lock (default 30 s). */
  lockTimeoutMs?: number;
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

/**
 * Names of the temp files an install writes next to its targets (`.flock.<uuid>.tmp`,
 * `.01-flock.conflist.<uuid>.tmp`; before: `.<uuid>.tmp`), so the next install can tell a
 * leftover of a killed one from anybody else's file.
 */
const TEMP_NAME = new RegExp(
  `^\\.(?:flock\\.|${CONFLIST_NAME.replaceAll(".", "\\.")}\\.)?` +
    "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\\.tmp$",
);

/** Chunk size of the streaming compare: the executable may be ~100 MB (a compiled binary). */
const COMPARE_CHUNK = 1 << 20;

/**
 * Holds an exclusive lock on `dir` (flock(2) on the directory itself, so nothing is left in a
 * CNI bin dir) while `fn` runs: a second `flock install` into the same directory waits, so the
 * temp files found under the lock are all leftovers of a killed install: they are removed before
 * `fn` runs. The wait is bounded (`timeoutMs`): an install stuck behind a hung one fails naming
 * the directory.
 */
async function withDirLock<T>(
  dir: string,
  timeoutMs: number | undefined,
  fn: (dir: Deno.FsFile) => Promise<T>,
): Promise<T> {
  using _lock = await lockDirectory(dir, { timeoutMs });
  using handle = await Deno.open(dir, { read: true });
  await removeStaleTemps(dir);
  return await fn(handle);
}

/** Removes the temp files a killed install left in `dir` (only names of {@link TEMP_NAME}). */
export async function removeStaleTemps(dir: string): Promise<string[]> {
  const removed: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isFile || !TEMP_NAME.test(entry.name)) continue;
    await Deno.remove(join(dir, entry.name)).catch(() => {});
    removed.push(entry.name);
  }
  return removed;
}

/**
 * Replaces `path` with what `write` puts in a temp file: temp → fsync → rename → fsync of the
 * directory, so after a power loss the name holds the old or the new file, whole, never an
 * empty or partial one (ext4/xfs may otherwise commit the rename before the data). A file in
 * use keeps running: the rename swaps names, it never writes into the old inode.
 */
async function atomicWrite(
  dir: Deno.FsFile,
  path: string,
  write: (tmp: string) => Promise<void>,
  mode: number,
): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${crypto.randomUUID()}.tmp`);
  try {
    await write(tmp);
    {
      using file = await Deno.open(tmp, { write: true });
      await file.sync();
    }
    // The create's mode went through the umask (copyFile even took the source's).
    await Deno.chmod(tmp, mode);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  await dir.sync();
}

/** Reads into `buf` until it is full or the file ends; returns the bytes read. */
async function readFull(file: Deno.FsFile, buf: Uint8Array): Promise<number> {
  let filled = 0;
  while (filled < buf.length) {
    const n = await file.read(buf.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return filled;
}

/** Whether two files hold the same bytes: sizes first, then 1 MiB chunks, never whole. */
export async function sameContent(a: string, b: string): Promise<boolean> {
  try {
    const [sa, sb] = await Promise.all([Deno.stat(a), Deno.stat(b)]);
    if (!sa.isFile || !sb.isFile || sa.size !== sb.size) return false;
    using fa = await Deno.open(a, { read: true });
    using fb = await Deno.open(b, { read: true });
    const bufA = new Uint8Array(COMPARE_CHUNK);
    const bufB = new Uint8Array(COMPARE_CHUNK);
    for (;;) {
      const [na, nb] = await Promise.all([readFull(fa, bufA), readFull(fb, bufB)]);
      if (na !== nb) return false;
      if (na === 0) return true;
      if (Buffer.compare(bufA.subarray(0, na), bufB.subarray(0, nb)) !== 0) return false;
    }
  } catch {
    return false;
  }
}

/**
 * Installs binary and conflist; returns what changed. Idempotent. Each directory is locked
 * while it is written, and temp files a killed install left there are removed first.
 */
export async function install(o: InstallOptions): Promise<{ binary: boolean; conflist: boolean }> {
  await Deno.mkdir(o.binDir, { recursive: true });
  await Deno.mkdir(o.confDir, { recursive: true });
  const source = o.source ?? selfExecutable();
  const binPath = join(o.binDir, "flock");
  const binary = await withDirLock(o.binDir, o.lockTimeoutMs, async (dir) => {
    // A same-content binary someone made non-executable is installed again.
    const executable = await Deno.stat(binPath).then(
      (st) => (st.mode! & 0o111) === 0o111,
      () => false,
    );
    if (executable && await sameContent(source, binPath)) return false;
    // copyFile: the kernel copies (copy_file_range), nothing passes through this process.
    await atomicWrite(dir, binPath, (tmp) => Deno.copyFile(source, tmp), 0o755);
    return true;
  });
  const confPath = join(o.confDir, CONFLIST_NAME);
  const text = renderConflist(o);
  const conflist = await withDirLock(o.confDir, o.lockTimeoutMs, async (dir) => {
    const current = await Deno.readTextFile(confPath).catch(() => undefined);
    if (current === text) return false;
    await atomicWrite(
      dir,
      confPath,
      (tmp) => Deno.writeTextFile(tmp, text, { createNew: true, mode: 0o644 }),
      0o644,
    );
    return true;
  });
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
  if (!isValidNetworkName(networkName)) {
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
