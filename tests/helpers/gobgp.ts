/**
 * A gobgpd "top-of-rack router" in a test namespace: a {@linkcode Fabric} (bridge `br0` the
 * nodes' uplinks join) with addresses on br0 and gobgpd started inside the namespace
 * (nsenter --net) with its gRPC API on a unix socket in a temporary directory, so the test
 * queries it from its own namespace with `gobgp --target`.
 *
 * The ToR keeps next hops unchanged: the nodes share br0's segment, so they forward to each
 * other directly, and IPv6 routes keep an IPv6 next hop over IPv4 sessions (notes/bird.md 6.1).
 *
 * @module
 */

import { join } from "node:path";
import { type ExecResult, run, runOk } from "./exec.ts";
import { appendToLog } from "./child_log.ts";
import { addAddress, type TestNamespace } from "./netns.ts";
import { Fabric } from "./fabric.ts";
import { gobgpdPath, gobgpPath } from "./tools.ts";

/** One node the ToR peers with. */
export interface TorNeighbor {
  address: string;
  asn: number;
  /** Send all paths (ADD-PATH) so the node can build ECMP. */
  addPaths?: boolean;
  /** The node is this many hops away (eBGP multihop TTL; iBGP needs none). */
  multihopTtl?: number;
}

/** Options of {@linkcode GobgpTor.start}. */
export interface GobgpTorOptions {
  asn: number;
  routerId: string;
  /** br0's addresses with prefix length, e.g. `["10.0.0.1/24", "fd00:a::1/64"]`. */
  addresses: string[];
  neighbors: TorNeighbor[];
}

/** One path of `gobgp global rib -j`. */
export interface RibPath {
  nlri: { prefix: string };
  best?: boolean;
  stale?: boolean;
  "neighbor-ip"?: string;
  attrs: { type: number; nexthop?: string }[];
}

/** Renders gobgpd's TOML config. */
export function gobgpdConfig(o: GobgpTorOptions): string {
  const local = o.addresses.map((a) => `"${a.split("/")[0]}"`).join(", ");
  const lines = [
    `[global.config]`,
    `  as = ${o.asn}`,
    `  router-id = "${o.routerId}"`,
    `  port = 179`,
    `  local-address-list = [${local}]`,
    `  [global.apply-policy.config]`,
    `    export-policy-list = ["nh-unchanged"]`,
    `    default-export-policy = "accept-route"`,
    ``,
    `[[policy-definitions]]`,
    `  name = "nh-unchanged"`,
    `  [[policy-definitions.statements]]`,
    `    name = "keep-node-nexthop"`,
    `    [policy-definitions.statements.actions]`,
    `      route-disposition = "accept-route"`,
    `    [policy-definitions.statements.actions.bgp-actions]`,
    `      set-next-hop = "unchanged"`,
    ``,
  ];
  for (const n of o.neighbors) {
    lines.push(
      `[[neighbors]]`,
      `  [neighbors.config]`,
      `    neighbor-address = "${n.address}"`,
      `    peer-as = ${n.asn}`,
      `  [neighbors.timers.config]`,
      `    connect-retry = 1`,
      `    hold-time = 30`,
      `    keepalive-interval = 10`,
      `  [neighbors.graceful-restart.config]`,
      `    enabled = true`,
      `    restart-time = 120`,
    );
    if (n.addPaths) lines.push(`  [neighbors.add-paths.config]`, `    send-max = 8`);
    if (n.multihopTtl !== undefined) {
      lines.push(
        `  [neighbors.ebgp-multihop.config]`,
        `    enabled = true`,
        `    multihop-ttl = ${n.multihopTtl}`,
      );
    }
    for (const afi of ["ipv4-unicast", "ipv6-unicast"]) {
      lines.push(
        `  [[neighbors.afi-safis]]`,
        `    [neighbors.afi-safis.config]`,
        `      afi-safi-name = "${afi}"`,
        `    [neighbors.afi-safis.mp-graceful-restart.config]`,
        `      enabled = true`,
      );
    }
    lines.push(``);
  }
  return lines.join("\n");
}

/** A ToR namespace with br0 and gobgpd. */
export class GobgpTor implements AsyncDisposable {
  #child?: Deno.ChildProcess;
  #status?: Promise<Deno.CommandStatus>;

  private constructor(readonly fabric: Fabric, readonly dir: string) {}

  /** The ToR's namespace (the fabric's). */
  get ns(): TestNamespace {
    return this.fabric.ns;
  }

  get socketPath(): string {
    return join(this.dir, "gobgp.sock");
  }
  get logPath(): string {
    return join(this.dir, "gobgpd.log");
  }

  /** Creates the namespace and br0, starts gobgpd and waits for its API. */
  static async start(o: GobgpTorOptions): Promise<GobgpTor> {
    const fabric = await Fabric.start("flk-tor");
    const dir = await Deno.makeTempDir({ prefix: "flock-tor-" }).catch(async (err) => {
      await fabric.remove();
      throw err;
    });
    const ns = fabric.ns;
    const tor = new GobgpTor(fabric, dir);
    try {
      for (const a of o.addresses) await addAddress(ns, "br0", a);
      const conf = join(dir, "gobgpd.toml");
      await Deno.writeTextFile(conf, gobgpdConfig(o));
      await runOk([gobgpdPath(), "-f", conf, "-t", "toml", "-d"]);
      const child = new Deno.Command("nsenter", {
        args: [
          `--net=${ns.path}`,
          "--",
          gobgpdPath(),
          "-f",
          conf,
          "-t",
          "toml",
          "--api-hosts",
          `unix://${tor.socketPath}`,
          "--pprof-disable",
          "-p",
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      tor.#child = child;
      tor.#status = child.status;
      await appendToLog(tor.logPath, child.stdout, child.stderr);
      const deadline = Date.now() + 10_000;
      while ((await tor.gobgp(["global"])).code !== 0) {
        if (Date.now() > deadline) throw new Error(`gobgpd not up:\n${await tor.log()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return tor;
    } catch (err) {
      await tor.remove();
      throw err;
    }
  }

  /** A fresh name for a veth end that joins br0 (pass as `uplinkIfName`). */
  nextPortName(): string {
    return this.fabric.nextPortName();
  }

  /** Enslaves a veth end (already in the ToR namespace) to br0. */
  attach(ifname: string): Promise<void> {
    return this.fabric.attach(ifname);
  }

  /** Runs `gobgp --target unix://SOCK ARGS…`. */
  gobgp(args: string[]): Promise<ExecResult> {
    return run([gobgpPath(), "--target", `unix://${this.socketPath}`, ...args], {
      timeoutMs: 10_000,
    });
  }

  /** The global RIB of one family: prefix → paths. */
  async rib(family: "ipv4" | "ipv6"): Promise<Record<string, RibPath[]>> {
    const r = await this.gobgp(["global", "rib", "-a", family, "-j"]);
    if (r.code !== 0) throw new Error(`gobgp global rib: ${r.stderr}`);
    const text = r.stdout.trim();
    return text === "" || text === "null" ? {} : JSON.parse(text);
  }

  /** Prefixes of both families in the RIB. */
  async prefixes(): Promise<string[]> {
    const out: string[] = [];
    for (const fam of ["ipv6", "ipv4"] as const) out.push(...Object.keys(await this.rib(fam)));
    return out.sort();
  }

  /** Neighbour address → session state name (`established`, `active`, ...). */
  async neighborStates(): Promise<Record<string, string>> {
    const r = await this.gobgp(["neighbor", "-j"]);
    if (r.code !== 0) throw new Error(`gobgp neighbor: ${r.stderr}`);
    const list = JSON.parse(r.stdout || "[]") as {
      conf: { neighbor_address: string };
      state: { session_state: number };
    }[];
    const names = [
      "unknown",
      "idle",
      "connect",
      "active",
      "opensent",
      "openconfirm",
      "established",
    ];
    return Object.fromEntries(
      list.map((n) => [n.conf.neighbor_address, names[n.state.session_state] ?? "unknown"]),
    );
  }

  /** Waits until every configured neighbour is established. */
  async waitEstablished(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const states = await this.neighborStates();
      if (Object.values(states).every((s) => s === "established")) return;
      if (Date.now() > deadline) {
        throw new Error(`sessions not established: ${JSON.stringify(states)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Waits until `check(rib)` holds for the family's RIB; returns it. */
  async waitRib(
    family: "ipv4" | "ipv6",
    check: (rib: Record<string, RibPath[]>) => boolean,
    timeoutMs = 15_000,
  ): Promise<Record<string, RibPath[]>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rib = await this.rib(family);
      if (check(rib)) return rib;
      if (Date.now() > deadline) {
        throw new Error(`ToR RIB (${family}) never matched: ${JSON.stringify(Object.keys(rib))}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** gobgpd's log so far. */
  async log(): Promise<string> {
    try {
      return await Deno.readTextFile(this.logPath);
    } catch {
      return "";
    }
  }

  /** Stops gobgpd and removes the namespace and the directory. */
  async remove(): Promise<void> {
    if (this.#child) {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // gone
      }
      await this.#status;
      this.#child = undefined;
    }
    await this.fabric.remove().catch(() => {});
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.remove();
  }
}
