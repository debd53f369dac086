/**
 * Network namespace fixtures for tests: throwaway namespaces that are always removed, veth links
 * between them, and "nodes" with an `eth0` uplink. These helpers use the `ip` binary, which tests
 * may do (flock's own runtime code must not).
 *
 * Every namespace is named `<prefix>-<pid>-<n>` (the prefix always starts with `flk-`), lo is up,
 * and it is registered so that the process's `unload` also deletes any a test forgot.
 *
 * ```ts
 * await using ns = await TestNamespace.create("flk-dp");
 * const links = await ns.ipJson<{ ifname: string }[]>(["link", "show"]);
 * ```
 *
 * @module
 */

import { type ExecOptions, type ExecResult, run, runOk } from "./exec.ts";

export type { ExecOptions, ExecResult } from "./exec.ts";

/** Where `ip netns` keeps its namespace mounts. */
export const NETNS_DIR = "/var/run/netns";

const live = new Set<string>();
let counter = 0;

globalThis.addEventListener("unload", () => {
  // unload cannot await: delete synchronously whatever a test failed to remove.
  for (const name of live) {
    new Deno.Command("ip", { args: ["netns", "del", name], stdout: "null", stderr: "null" })
      .outputSync();
  }
  live.clear();
});

function safePrefix(prefix: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(prefix)) throw new Error(`bad namespace prefix: ${prefix}`);
  return prefix.startsWith("flk-") ? prefix : `flk-${prefix}`;
}

/** A network namespace owned by one test; remove it with `await using` or {@linkcode remove}. */
export class TestNamespace implements AsyncDisposable {
  /** Path of the namespace's bind mount, as CNI_NETNS or `nsenter --net=` want it. */
  readonly path: string;

  private constructor(readonly name: string) {
    this.path = `${NETNS_DIR}/${name}`;
  }

  /** Creates `<prefix>-<pid>-<n>` with lo up. A prefix without `flk-` gets it prepended. */
  static async create(prefix = "flk-t"): Promise<TestNamespace> {
    const name = `${safePrefix(prefix)}-${Deno.pid}-${++counter}`;
    await runOk(["ip", "netns", "add", name]);
    live.add(name);
    const ns = new TestNamespace(name);
    try {
      await ns.ip(["link", "set", "lo", "up"]);
    } catch (err) {
      await ns.remove();
      throw err;
    }
    return ns;
  }

  /**
   * Runs a command inside the namespace with `ip netns exec`. That remounts /sys, which breaks
   * runc: use {@linkcode nsenter} for podman.
   */
  exec(cmd: string[], opts?: ExecOptions): Promise<ExecResult> {
    return run(["ip", "netns", "exec", this.name, ...cmd], opts);
  }

  /** Runs a command with only the network namespace switched (`nsenter --net=PATH`). */
  nsenter(cmd: string[], opts?: ExecOptions): Promise<ExecResult> {
    return run(["nsenter", `--net=${this.path}`, "--", ...cmd], opts);
  }

  /** `ip -n NAME ARGS…`; returns stdout, throws on a non-zero exit. */
  async ip(args: string[]): Promise<string> {
    return (await runOk(["ip", "-n", this.name, ...args])).stdout;
  }

  /** `ip -j -n NAME ARGS…` parsed; an empty answer is `[]`. */
  async ipJson<T = unknown>(args: string[]): Promise<T> {
    const out = (await runOk(["ip", "-j", "-n", this.name, ...args])).stdout.trim();
    return JSON.parse(out === "" ? "[]" : out) as T;
  }

  /** Deletes the namespace (and with it every link inside); safe to call twice. */
  async remove(): Promise<void> {
    if (!live.has(this.name)) return;
    const result = await run(["ip", "netns", "del", this.name]);
    if (!result.success && !/No such file/.test(result.stderr)) {
      throw new Error(`ip netns del ${this.name}: ${result.stderr.trim()}`);
    }
    live.delete(this.name);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.remove();
  }
}

/** Creates one namespace per prefix, runs `fn`, and removes them all however `fn` ends. */
export async function withNamespaces<T>(
  prefixes: string[],
  fn: (namespaces: TestNamespace[]) => Promise<T>,
): Promise<T> {
  const namespaces: TestNamespace[] = [];
  try {
    for (const prefix of prefixes) namespaces.push(await TestNamespace.create(prefix));
    return await fn(namespaces);
  } finally {
    await removeAll(namespaces);
  }
}

async function removeAll(namespaces: TestNamespace[]): Promise<void> {
  const errors: unknown[] = [];
  for (const ns of namespaces) {
    try {
      await ns.remove();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, "removing test namespaces failed");
}

/** Options for {@linkcode linkVeth}. */
export interface VethOptions {
  mtu?: number;
  /** Bring both ends up (default true). */
  up?: boolean;
}

/** Joins two namespaces with a veth pair: `nameA` inside `a`, `nameB` inside `b`. */
export async function linkVeth(
  a: TestNamespace,
  b: TestNamespace,
  nameA: string,
  nameB: string,
  opts: VethOptions = {},
): Promise<void> {
  const mtu = opts.mtu === undefined ? [] : ["mtu", String(opts.mtu)];
  await a.ip([
    "link",
    "add",
    nameA,
    ...mtu,
    "type",
    "veth",
    "peer",
    "name",
    nameB,
    "netns",
    b.name,
  ]);
  if (opts.up ?? true) {
    await a.ip(["link", "set", nameA, "up"]);
    await b.ip(["link", "set", nameB, "up"]);
  }
}

/** Adds `cidr` (e.g. `10.0.0.2/24`, `fd00::2/64`) to `dev`; IPv6 without DAD, usable at once. */
export async function addAddress(ns: TestNamespace, dev: string, cidr: string): Promise<void> {
  const nodad = cidr.includes(":") ? ["nodad"] : [];
  await ns.ip(["addr", "add", cidr, "dev", dev, ...nodad]);
}

/** Addresses of both ends of an uplink, with prefix length: `{ node: "10.0.0.11/24", peer: "10.0.0.1/24" }`. */
export interface UplinkAddresses {
  node: string;
  peer: string;
}

/** Options for {@linkcode createNode}. */
export interface NodeOptions {
  /** Prefix of the node namespace's name; default `flk-node`. */
  prefix?: string;
  /** The namespace at the other end of `eth0` (a ToR, a shared router); created when absent. */
  uplink?: TestNamespace;
  /** Name of the veth end inside the uplink namespace; default `up<n>`, unique per process. */
  uplinkIfName?: string;
  ipv4?: UplinkAddresses;
  ipv6?: UplinkAddresses;
  /** Add an IPv4 default route via the peer's `ipv4` address. */
  defaultRoute4?: boolean;
  /** Add an IPv6 default route via the peer's `ipv6` address. */
  defaultRoute6?: boolean;
}

/** A node namespace whose `eth0` is a veth to an uplink namespace. */
export interface NodeFixture extends AsyncDisposable {
  node: TestNamespace;
  uplink: TestNamespace;
  /** Name of the veth end inside `uplink`. */
  uplinkIfName: string;
  /** Removes the node, and the uplink too if `createNode` made it. */
  remove(): Promise<void>;
}

function addressOnly(cidr: string): string {
  return cidr.split("/")[0];
}

/**
 * Creates a node namespace with an `eth0` uplink: a veth to `opts.uplink` (or to a fresh peer
 * namespace), addresses on both ends and optional default routes via the peer. The kernel here
 * has no `dummy` link type, hence the veth.
 */
export async function createNode(opts: NodeOptions = {}): Promise<NodeFixture> {
  const made: TestNamespace[] = [];
  try {
    const node = await TestNamespace.create(opts.prefix ?? "flk-node");
    made.push(node);
    let uplink = opts.uplink;
    if (uplink === undefined) {
      uplink = await TestNamespace.create(`${safePrefix(opts.prefix ?? "flk-node")}-up`);
      made.push(uplink);
    }
    const uplinkIfName = opts.uplinkIfName ?? `up${++counter}`;
    await linkVeth(node, uplink, "eth0", uplinkIfName);
    for (
      const [family, addrs, wantDefault] of [
        ["-4", opts.ipv4, opts.defaultRoute4],
        ["-6", opts.ipv6, opts.defaultRoute6],
      ] as const
    ) {
      if (addrs === undefined) {
        if (wantDefault) throw new Error(`default route ${family} asked without addresses`);
        continue;
      }
      await addAddress(node, "eth0", addrs.node);
      await addAddress(uplink, uplinkIfName, addrs.peer);
      if (wantDefault) {
        await node.ip([family, "route", "add", "default", "via", addressOnly(addrs.peer)]);
      }
    }
    const owned = [...made];
    const remove = async () => {
      // Namespace teardown frees its veths asynchronously; deleting eth0 first removes the
      // uplink's end at once, so a shared uplink is clean when remove() returns.
      await node.exec(["ip", "link", "del", "eth0"]);
      await removeAll(owned);
    };
    return { node, uplink, uplinkIfName, remove, [Symbol.asyncDispose]: remove };
  } catch (err) {
    await removeAll(made).catch(() => {});
    throw err;
  }
}

/** Names of existing namespaces starting with `prefix` (for "nothing left behind" asserts). */
export async function leftoverNamespaces(prefix: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(NETNS_DIR)) {
      if (entry.name.startsWith(prefix)) names.push(entry.name);
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return names.sort();
}

/** Names of the namespaces this process created and has not removed yet. */
export function liveNamespaces(): string[] {
  return [...live].sort();
}
