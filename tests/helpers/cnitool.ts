/**
 * Drives cnitool v1.3.0, a real CNI client (libcni, with its result cache), and builds the
 * reference ptp + host-local conflists the tests compare flock against.
 *
 * cnitool creates the host side of an attachment in the network namespace it runs in, so it
 * always runs inside a test "node" namespace (`nsenter --net=`), never in the machine's own.
 *
 * @module
 */

import { join } from "node:path";
import { type ExecResult, run } from "./exec.ts";
import type { TestNamespace } from "./netns.ts";
import { cnitoolPath } from "./tools.ts";

/** libcni's default cache dir (cnitool has no way to move it). */
export const CNI_CACHE_DIR = "/var/lib/cni";

/** The verbs cnitool v1.3.0 knows. */
export type CnitoolCommand = "add" | "check" | "del" | "gc" | "status";

/** Environment and placement of one cnitool call. */
export interface CnitoolOptions {
  /** The node namespace cnitool runs in (where host-side links and routes appear). */
  hostNetns: TestNamespace | string;
  /** NETCONFPATH: the dir holding `<network>.conflist`. */
  netconfPath: string;
  /** CNI_PATH: plugin dirs. */
  cniPath: string | string[];
  /** CNI_ARGS, as `K=V;K=V` or a record (cnitool rejects empty keys and values). */
  cniArgs?: string | Record<string, string>;
  /** CAP_ARGS: capability args, e.g. `{"io.kubernetes.cri.pod-annotations": {...}}`. */
  capArgs?: Record<string, unknown>;
  /** CNI_IFNAME; cnitool defaults to `eth0`. */
  ifname?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
}

function pathOf(ns: TestNamespace | string): string {
  return typeof ns === "string" ? ns : ns.path;
}

/** The environment cnitool reads, from {@linkcode CnitoolOptions}. */
export function cnitoolEnv(opts: Omit<CnitoolOptions, "hostNetns">): Record<string, string> {
  const env: Record<string, string> = {
    NETCONFPATH: opts.netconfPath,
    CNI_PATH: typeof opts.cniPath === "string" ? opts.cniPath : opts.cniPath.join(":"),
    // Clear what the test process might carry, so every call states its own request.
    CNI_ARGS: "",
    CAP_ARGS: "",
  };
  if (opts.cniArgs !== undefined) {
    env.CNI_ARGS = typeof opts.cniArgs === "string"
      ? opts.cniArgs
      : Object.entries(opts.cniArgs).map(([k, v]) => `${k}=${v}`).join(";");
  }
  if (opts.capArgs !== undefined) env.CAP_ARGS = JSON.stringify(opts.capArgs);
  if (opts.ifname !== undefined) env.CNI_IFNAME = opts.ifname;
  return { ...env, ...opts.env };
}

/**
 * Runs `cnitool COMMAND NETWORK NETNS` inside `opts.hostNetns`; `netns` is the container's
 * namespace. Returns the exit code and output (ADD prints the result JSON on stdout).
 */
export function cnitool(
  command: CnitoolCommand,
  network: string,
  netns: TestNamespace | string,
  opts: CnitoolOptions,
): Promise<ExecResult> {
  return run(
    [
      "nsenter",
      `--net=${pathOf(opts.hostNetns)}`,
      "--",
      cnitoolPath(),
      command,
      network,
      pathOf(netns),
    ],
    { env: cnitoolEnv(opts), timeoutMs: opts.timeoutMs ?? 30_000 },
  );
}

/** The CNI_CONTAINERID cnitool derives: `cnitool-` + hex of sha512(netns path)[:10]. */
export async function cnitoolContainerId(netnsPath: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-512", new TextEncoder().encode(netnsPath));
  const hex = [...new Uint8Array(digest).slice(0, 10)]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  return `cnitool-${hex}`;
}

/** libcni cache files of `network` (`results/<network>-<containerID>-<ifname>`). */
export async function cniCacheEntries(network: string): Promise<string[]> {
  const dir = join(CNI_CACHE_DIR, "results");
  const found: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.name.startsWith(`${network}-`)) found.push(join(dir, entry.name));
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return found.sort();
}

/** Removes `network`'s libcni cache files; returns what it removed. */
export async function removeCniCache(network: string): Promise<string[]> {
  const entries = await cniCacheEntries(network);
  for (const path of entries) await Deno.remove(path).catch(() => {});
  return entries;
}

/** Options for {@linkcode referencePtpConflist}. */
export interface PtpConflistOptions {
  name: string;
  /** host-local state dir: point it at a temp dir so a test leaves nothing behind. */
  dataDir: string;
  subnet4?: string;
  subnet6?: string;
  cniVersion?: string;
  mtu?: number;
}

/** A ptp + host-local conflist (spec 1.0.0 by default), IPv4 and/or IPv6, no masquerade. */
export function referencePtpConflist(opts: PtpConflistOptions): Record<string, unknown> {
  const ranges: { subnet: string }[][] = [];
  const routes: { dst: string }[] = [];
  if (opts.subnet4) {
    ranges.push([{ subnet: opts.subnet4 }]);
    routes.push({ dst: "0.0.0.0/0" });
  }
  if (opts.subnet6) {
    ranges.push([{ subnet: opts.subnet6 }]);
    routes.push({ dst: "::/0" });
  }
  if (ranges.length === 0) throw new Error("referencePtpConflist: give subnet4 and/or subnet6");
  return {
    cniVersion: opts.cniVersion ?? "1.0.0",
    name: opts.name,
    plugins: [{
      type: "ptp",
      ipMasq: false,
      ...(opts.mtu ? { mtu: opts.mtu } : {}),
      ipam: { type: "host-local", dataDir: opts.dataDir, ranges, routes },
    }],
  };
}

/** Writes `conflist` as `<dir>/<name>.conflist` (the only suffix podman loads); returns the path. */
export async function writeConflist(
  dir: string,
  conflist: Record<string, unknown>,
): Promise<string> {
  const name = conflist.name;
  if (typeof name !== "string" || name === "") throw new Error("conflist needs a name");
  await Deno.mkdir(dir, { recursive: true });
  const path = join(dir, `${name}.conflist`);
  await Deno.writeTextFile(path, JSON.stringify(conflist, null, 2) + "\n");
  return path;
}
