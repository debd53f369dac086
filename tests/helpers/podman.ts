/**
 * Drives Debian's podman 4.3 as a real CNI client: CNI backend, runc, no default ulimits (see
 * BRIEF §7), its own storage and state dirs so test runs never mix with other podman use on the
 * machine, a per-test CNI config dir, and the node's network namespace entered with
 * `nsenter --net=` (`ip netns exec` remounts /sys and runc then fails).
 *
 * podman 4.3 honours `CONTAINERS_CONF=<file>` (checked: `podman info` then reports the cni
 * backend) and `--network-config-dir DIR` (only `*.conflist` files there are loaded). It has no
 * flag for the plugin dirs, so {@linkcode podman} writes a containers.conf per plugin-dir list.
 *
 * @module
 */

import { join } from "node:path";
import { type ExecResult, run } from "./exec.ts";
import type { TestNamespace } from "./netns.ts";
import { FLOCK_CACHE, podmanPath, REFERENCE_PLUGIN_DIR, rootfsPath } from "./tools.ts";

/** podman's storage root for test runs (containers made with `--rootfs` need no images). */
export const PODMAN_ROOT: string = join(FLOCK_CACHE, "podman", "root");
/** podman's run dir, state and tmp dir for test runs. */
export const PODMAN_STATE_DIR = "/run/flock-podman";

/** Plugin dirs podman searches after the ones a caller names. */
export const DEFAULT_PLUGIN_DIRS: readonly string[] = ["/opt/cni/bin", REFERENCE_PLUGIN_DIR];

/** Where and how one podman call runs. */
export interface PodmanOptions {
  /** The node namespace podman runs in: where CNI plugins create the host side. */
  netns?: TestNamespace | string;
  /** `--network-config-dir`: the dir holding the `*.conflist` files this test uses. */
  networkConfigDir?: string;
  /** Plugin dirs searched before {@linkcode DEFAULT_PLUGIN_DIRS}. */
  pluginDirs?: string[];
  env?: Record<string, string>;
  stdin?: string;
  timeoutMs?: number;
}

/** The containers.conf for test runs, with `pluginDirs` first in `cni_plugin_dirs`. */
export function containersConf(pluginDirs: string[] = []): string {
  const dirs = [...new Set([...pluginDirs, ...DEFAULT_PLUGIN_DIRS])];
  return [
    "[containers]",
    "default_ulimits = []",
    "",
    "[engine]",
    'runtime = "runc"',
    "",
    "[network]",
    'network_backend = "cni"',
    `cni_plugin_dirs = ${JSON.stringify(dirs)}`,
    "",
  ].join("\n");
}

const writtenConfs = new Map<string, string>();

async function confFileFor(pluginDirs: string[]): Promise<string> {
  const text = containersConf(pluginDirs);
  const cached = writtenConfs.get(text);
  if (cached) return cached;
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  const hex = [...new Uint8Array(digest).slice(0, 8)]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  await Deno.mkdir(PODMAN_STATE_DIR, { recursive: true });
  const path = join(PODMAN_STATE_DIR, `containers-${hex}.conf`);
  // Write-then-rename: parallel test processes may write the same file.
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, path);
  writtenConfs.set(text, path);
  return path;
}

/** podman's global flags for test runs (storage, state, runtime, CNI config dir). */
export function podmanGlobalArgs(opts: Pick<PodmanOptions, "networkConfigDir"> = {}): string[] {
  return [
    "--root",
    PODMAN_ROOT,
    "--runroot",
    join(PODMAN_STATE_DIR, "runroot"),
    "--tmpdir",
    join(PODMAN_STATE_DIR, "tmp"),
    "--runtime",
    "runc",
    "--cgroup-manager",
    "cgroupfs",
    "--events-backend",
    "none",
    ...(opts.networkConfigDir ? ["--network-config-dir", opts.networkConfigDir] : []),
  ];
}

/** Runs `podman <global flags> ARGS…`, inside `opts.netns` when given. */
export async function podman(args: string[], opts: PodmanOptions = {}): Promise<ExecResult> {
  const conf = await confFileFor(opts.pluginDirs ?? []);
  const cmd = [podmanPath(), ...podmanGlobalArgs(opts), ...args];
  const netns = opts.netns === undefined
    ? []
    : ["nsenter", `--net=${typeof opts.netns === "string" ? opts.netns : opts.netns.path}`, "--"];
  return run([...netns, ...cmd], {
    env: { CONTAINERS_CONF: conf, ...opts.env },
    stdin: opts.stdin,
    timeoutMs: opts.timeoutMs ?? 120_000,
  });
}

let containerCounter = 0;

/** A container name unique in this process: `<prefix>-<pid>-<n>`. */
export function uniqueContainerName(prefix = "flk-c"): string {
  return `${prefix}-${Deno.pid}-${++containerCounter}`;
}

/** Options for {@linkcode podmanRun}. */
export interface PodmanRunOptions extends PodmanOptions {
  /** Container name; pass one you can also hand to {@linkcode podmanRemove} in a finally. */
  name: string;
  /** The CNI network (conflist name) to attach. */
  network: string;
  /** The command to run in the busybox rootfs. */
  cmd: string[];
  /** Extra `podman run` flags (e.g. `--annotation`, `--ip`). */
  runArgs?: string[];
  /** Keep the container after it exits (default: `--rm`). */
  keep?: boolean;
}

/** `podman run [--rm] --name N --network NET --rootfs <busybox rootfs> CMD…`. */
export function podmanRun(opts: PodmanRunOptions): Promise<ExecResult> {
  return podman([
    "run",
    ...(opts.keep ? [] : ["--rm"]),
    "--name",
    opts.name,
    "--network",
    opts.network,
    ...(opts.runArgs ?? []),
    "--rootfs",
    rootfsPath(),
    ...opts.cmd,
  ], opts);
}

/** Force-removes a container (stopping it, so CNI DEL runs); succeeds when it is already gone. */
export async function podmanRemove(name: string, opts: PodmanOptions = {}): Promise<void> {
  const result = await podman(["rm", "--force", "--ignore", "--time", "0", name], opts);
  if (!result.success) throw new Error(`podman rm ${name}: ${result.stderr.trim()}`);
}

/** Names of containers (running or not) whose name starts with `prefix`. */
export async function podmanContainers(prefix: string): Promise<string[]> {
  const result = await podman(["ps", "--all", "--format", "{{.Names}}"]);
  if (!result.success) throw new Error(`podman ps: ${result.stderr.trim()}`);
  return result.stdout.split("\n").filter((n) => n.startsWith(prefix)).sort();
}
