/**
 * Where the real peers used by the tests live: the tools `make setup` installs under
 * `$FLOCK_CACHE` (linked into the repo's `.tools/bin`), the Debian binaries, the busybox rootfs
 * and the CNI reference plugins. Every lookup fails with a message that says to run `make setup`.
 *
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** Absolute path of the repository root. */
export const REPO_ROOT: string = fileURLToPath(new URL("../../", import.meta.url)).replace(
  /\/$/,
  "",
);

/** The cache `scripts/setup.sh` fills: `$FLOCK_CACHE`, default `/var/cache/flock`. */
export const FLOCK_CACHE: string = Deno.env.get("FLOCK_CACHE") || "/var/cache/flock";

/** The Deno version the project pins. */
export const DENO_VERSION = "2.9.6";

/** Directory of Debian's CNI reference plugins (ptp, host-local, bridge, loopback, ...). */
export const REFERENCE_PLUGIN_DIR = "/usr/lib/cni";

/** Thrown when a tool or fixture that `make setup` provides is missing. */
export class MissingToolError extends Error {
  constructor(what: string, looked: string[]) {
    super(`${what} not found (looked in ${looked.join(", ")}); run \`make setup\` first`);
    this.name = "MissingToolError";
  }
}

function isExecutableFile(path: string): boolean {
  try {
    const info = Deno.statSync(path);
    return info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0;
  } catch {
    return false;
  }
}

function firstExecutable(what: string, candidates: string[]): string {
  const found = candidates.find(isExecutableFile);
  if (found === undefined) throw new MissingToolError(what, candidates);
  return found;
}

function onPath(name: string): string[] {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").filter((d) => d !== "");
  for (const sbin of ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]) {
    if (!dirs.includes(sbin)) dirs.push(sbin);
  }
  return dirs.map((dir) => join(dir, name));
}

/** Path of a tool built by `make setup`: `.tools/bin/NAME`, else `$FLOCK_CACHE/bin/NAME`. */
function builtTool(name: string): string {
  return firstExecutable(name, [
    join(REPO_ROOT, ".tools", "bin", name),
    join(FLOCK_CACHE, "bin", name),
  ]);
}

/** The pinned deno binary (falls back to the running one if setup has not linked it). */
export function denoPath(): string {
  const candidates = [
    join(REPO_ROOT, ".tools", "bin", "deno"),
    join(FLOCK_CACHE, `deno-${DENO_VERSION}`, "node_modules", ".bin", "deno"),
  ];
  return candidates.find(isExecutableFile) ?? Deno.execPath();
}

/** cnitool v1.3.0. */
export function cnitoolPath(): string {
  return builtTool("cnitool");
}

/** gobgpd, the test ToR's BGP daemon. */
export function gobgpdPath(): string {
  return builtTool("gobgpd");
}

/** gobgp, gobgpd's command line client. */
export function gobgpPath(): string {
  return builtTool("gobgp");
}

/** kube-apiserver 1.34, built from the Go module proxy by `scripts/build_kube.sh`. */
export function kubeApiserverPath(): string {
  return builtTool("kube-apiserver");
}

/** kubectl, the same version as {@linkcode kubeApiserverPath}. */
export function kubectlPath(): string {
  return builtTool("kubectl");
}

/** etcd 3.6 (the version Kubernetes 1.34 uses as a client), built with kube-apiserver. */
export function etcdPath(): string {
  return builtTool("etcd");
}

/** Debian's podman 4.3. */
export function podmanPath(): string {
  return firstExecutable("podman", onPath("podman"));
}

/** Debian's BIRD 2 daemon. */
export function birdPath(): string {
  return firstExecutable("bird", onPath("bird"));
}

/** Debian's BIRD 2 control client. */
export function birdcPath(): string {
  return firstExecutable("birdc", onPath("birdc"));
}

/** The busybox root filesystem for `podman run --rootfs`, built by `scripts/make_rootfs.sh`. */
export function rootfsPath(): string {
  const dir = join(FLOCK_CACHE, "rootfs");
  if (!isExecutableFile(join(dir, "bin", "busybox"))) {
    throw new MissingToolError("busybox rootfs", [dir]);
  }
  return dir;
}

/** The reference plugin dir, checked to hold `ptp` and `host-local`. */
export function referencePluginDir(): string {
  firstExecutable("CNI reference plugin ptp", [join(REFERENCE_PLUGIN_DIR, "ptp")]);
  firstExecutable("CNI reference plugin host-local", [join(REFERENCE_PLUGIN_DIR, "host-local")]);
  return REFERENCE_PLUGIN_DIR;
}

/** The containers.conf `make setup` writes for podman test runs (use as `CONTAINERS_CONF`). */
export function containersConfPath(): string {
  const path = join(FLOCK_CACHE, "containers.conf");
  try {
    Deno.statSync(path);
  } catch {
    throw new MissingToolError("containers.conf for podman", [path]);
  }
  return path;
}

/** True when `lookup` finds its tool; for tests that want to say why they cannot run. */
export function hasTool(lookup: () => string): boolean {
  try {
    lookup();
    return true;
  } catch (err) {
    if (err instanceof MissingToolError) return false;
    throw err;
  }
}
