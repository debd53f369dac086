/**
 * A flock node for tests: a node namespace (with an `eth0` uplink), a flock agent running inside
 * it as its own process (standalone mode, a NodeConfig file), the plugin installed into a CNI bin
 * dir with its conflist, and a way to run the plugin through the real exec path.
 *
 * ```ts
 * await using node = await FlockNode.start({ config: { cidr6: "fd00:1::/64", cidr4: "10.1.0.0/24" } });
 * await using pod = await TestNamespace.create("flk-pod");
 * const r = await node.cni("ADD", { containerId: "c1", netns: pod.path });
 * ```
 *
 * The agent can be killed (`kill("SIGKILL")`) and started again on the same state dir and socket.
 *
 * @module
 */

import { join } from "node:path";
import { type ExecResult, run, runOk } from "./exec.ts";
import { appendToLog } from "./child_log.ts";
import { createNode, type NodeFixture, type NodeOptions, TestNamespace } from "./netns.ts";
import { denoPath, REPO_ROOT } from "./tools.ts";
import type { NodeConfigSpec } from "../../agent/config.ts";
import { callAgent } from "../../cni.ts";
import { STATUS_DETAIL_KEY, type StatusSnapshot } from "../../agent/status_snapshot.ts";

export { TestNamespace };

/** The `dist/flock` executable, built (as the launcher) when absent. */
export async function flockExecutable(): Promise<string> {
  const path = join(REPO_ROOT, "dist", "flock");
  try {
    await Deno.stat(path);
  } catch {
    await runOk([denoPath(), "run", "-A", "--no-lock", join(REPO_ROOT, "scripts/build.ts")]);
  }
  return path;
}

/** How often {@linkcode FlockNode.settled} asks the agent whether releases are still running. */
export const SETTLED_POLL_MS = 20;

/** Options of {@linkcode FlockNode.start}. */
export interface FlockNodeOptions {
  /** The NodeConfig spec the agent reads from its config file. */
  config: NodeConfigSpec;
  /** Node name (`--node`); default `node-<n>`. */
  name?: string;
  /** Passed to {@linkcode createNode} (uplink, addresses, default routes). */
  nodeOptions?: NodeOptions;
  /** Release cooldown of the agent's IPAM in ms; default 0 so tests can reuse addresses. */
  cooldownMs?: number;
  /** Start the agent and wait until it is ready; default true. */
  startAgent?: boolean;
  /** Extra arguments for `flock agent` (e.g. `--bird-config`, `--bird-socket`). */
  agentArgs?: string[];
  /**
   * The conflist's network name (`flock install --network-name`); default unique to this node
   * and process, because libcni caches results machine-wide per network name and container ID.
   */
  networkName?: string;
  /**
   * Cluster mode: the agent gets its NodeConfig from the API server this kubeconfig names
   * (`config` is then unused). It runs in the host namespace, to reach an API server on
   * 127.0.0.1, with `--netns` so that all its kernel work happens in the node namespace.
   */
  kubeconfig?: string;
  /** Extra environment of the agent started with the node (kept by `restartAgent`). */
  agentEnv?: Record<string, string>;
}

/** One CNI invocation's parameters; `netns` and `ifname` default to empty and `eth0`. */
export interface CniCall {
  containerId?: string;
  netns?: string;
  ifname?: string;
  args?: string;
  /** Replaces the whole stdin (the network config) when set. */
  stdin?: string;
  /** Extra top-level keys merged into the plugin's network config (runtimeConfig, prevResult…). */
  extraConfig?: Record<string, unknown>;
  /** Extra env vars; a key with value `undefined` is removed from the invocation's env. */
  env?: Record<string, string | undefined>;
}

/** A plugin invocation's outcome: exit code, and stdout parsed as JSON when it is JSON. */
export interface CniOutcome extends ExecResult {
  // deno-lint-ignore no-explicit-any
  json?: any;
}

let nodes = 0;
let networks = 0;

/** A node namespace running a flock agent. */
export class FlockNode implements AsyncDisposable {
  /** The running agent, if any. */
  agent?: Deno.ChildProcess;
  #agentStatus?: Promise<Deno.CommandStatus>;
  /** The environment the agent was last started with, which {@link restartAgent} keeps. */
  #agentEnv: Record<string, string> = {};
  #disposed = false;

  private constructor(
    readonly fixture: NodeFixture,
    readonly name: string,
    /** Temporary directory holding config, state, socket, bin and net.d. */
    readonly dir: string,
    readonly options: FlockNodeOptions,
    readonly executable: string,
    /** The network name in the installed conflist (what cnitool and podman attach to). */
    readonly networkName: string,
  ) {}

  /** The node's namespace. */
  get ns(): TestNamespace {
    return this.fixture.node;
  }
  get socketPath(): string {
    return join(this.dir, "flock.sock");
  }
  get stateDir(): string {
    return join(this.dir, "state");
  }
  get configPath(): string {
    return join(this.dir, "nodeconfig.json");
  }
  get binDir(): string {
    return join(this.dir, "bin");
  }
  get confDir(): string {
    return join(this.dir, "net.d");
  }
  get agentLogPath(): string {
    return join(this.dir, "agent.log");
  }
  /** The plugin as the runtime execs it (the installed copy in {@linkcode binDir}). */
  get plugin(): string {
    return join(this.binDir, "flock");
  }

  /** Creates the node, installs the plugin, and (by default) starts the agent. */
  static async start(options: FlockNodeOptions): Promise<FlockNode> {
    const executable = await flockExecutable();
    const name = options.name ?? `node-${++nodes}`;
    const fixture = await createNode({ prefix: "flk-fn", ...options.nodeOptions });
    const dir = await Deno.makeTempDir({ prefix: "flock-node-" });
    const networkName = options.networkName ?? `flock-${Deno.pid}-${++networks}`;
    const node = new FlockNode(fixture, name, dir, options, executable, networkName);
    try {
      await node.writeConfig(options.config);
      await runOk([
        executable,
        "install",
        "--bin-dir",
        node.binDir,
        "--conf-dir",
        node.confDir,
        "--socket",
        node.socketPath,
        "--network-name",
        networkName,
      ]);
      if (options.startAgent ?? true) await node.startAgent({ env: options.agentEnv });
      return node;
    } catch (err) {
      await node.remove();
      throw err;
    }
  }

  /** Rewrites the agent's NodeConfig file. */
  async writeConfig(spec: NodeConfigSpec): Promise<void> {
    const obj = {
      apiVersion: "flock.fritzlab.net/v1alpha1",
      kind: "NodeConfig",
      metadata: { name: this.name },
      spec,
    };
    await Deno.writeTextFile(this.configPath, JSON.stringify(obj, null, 2));
  }

  /** The conflist flock install wrote. */
  async conflist(): Promise<Record<string, unknown>> {
    return JSON.parse(await Deno.readTextFile(join(this.confDir, "01-flock.conflist")));
  }

  /** The single-plugin network config a runtime feeds the plugin (conflist header + plugin). */
  async netconf(extra: Record<string, unknown> = {}): Promise<string> {
    const list = await this.conflist() as {
      plugins: Record<string, unknown>[];
      cniVersions?: string[];
    };
    const { plugins, cniVersions: _versions, ...header } = list;
    return JSON.stringify({ ...header, ...plugins[0], ...extra });
  }

  /**
   * Starts the agent process inside the node namespace; waits for STATUS to succeed.
   * `env` adds variables to the agent's environment (e.g. `FLOCK_TEST_CRASH_AT`); without it
   * the agent gets none, also after a start that had some. {@link restartAgent} keeps them.
   */
  async startAgent(
    opts: { waitReady?: boolean; env?: Record<string, string> } = {},
  ): Promise<void> {
    if (this.agent) throw new Error("agent already running");
    this.#agentEnv = { ...opts.env };
    const kubeconfig = this.options.kubeconfig;
    // Standalone: the whole agent inside the node namespace. Cluster: only its netlink handle.
    const [program, ...prefix] = kubeconfig
      ? [this.executable]
      : ["nsenter", `--net=${this.ns.path}`, "--", this.executable];
    const mode = kubeconfig
      ? ["--kubeconfig", kubeconfig, "--netns", this.ns.path, "--http", "off"]
      : ["--config", this.configPath];
    const child = new Deno.Command(program, {
      args: [
        ...prefix,
        "agent",
        "--node",
        this.name,
        ...mode,
        "--state-dir",
        this.stateDir,
        "--socket",
        this.socketPath,
        "--cooldown-ms",
        String(this.options.cooldownMs ?? 0),
        ...(this.options.agentArgs ?? []),
      ],
      env: opts.env,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.agent = child;
    this.#agentStatus = child.status;
    await appendToLog(this.agentLogPath, child.stderr);
    if (opts.waitReady ?? true) await this.waitReady();
  }

  /** Polls the plugin's STATUS until the agent answers ready; throws with the log after 15 s. */
  async waitReady(timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.cni("STATUS");
      if (r.code === 0) return;
      if (Date.now() > deadline) {
        throw new Error(
          `agent not ready after ${timeoutMs} ms: ${r.stdout}\n${await this.agentLog()}`,
        );
      }
      await new Promise((res) => setTimeout(res, 50));
    }
  }

  /** Sends `signal` to the agent and waits for it to exit. */
  async kill(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    const child = this.agent;
    if (!child) return;
    this.agent = undefined;
    // nsenter execs the launcher, which execs deno: the child's pid is the agent itself.
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
    await this.#agentStatus;
  }

  /**
   * Kills the agent with SIGKILL and starts it again on the same state, with the environment of
   * its last start but for the variables named in `without` (a test fault that must not strike
   * again, a crash point: `restartAgent({ without: [CRASH_ENV] })`).
   */
  async restartAgent(opts: { without?: readonly string[] } = {}): Promise<void> {
    const env = { ...this.#agentEnv };
    for (const name of opts.without ?? []) delete env[name];
    await this.kill("SIGKILL");
    await this.startAgent({ env });
  }

  /** The environment the agent was last started with (what {@link restartAgent} keeps). */
  get agentEnv(): Readonly<Record<string, string>> {
    return { ...this.#agentEnv };
  }

  /** The agent's log so far (JSON lines). */
  async agentLog(): Promise<string> {
    try {
      return await Deno.readTextFile(this.agentLogPath);
    } catch {
      return "";
    }
  }

  /** Runs the installed plugin once with the CNI env and the node's network config on stdin. */
  async cni(command: string, call: CniCall = {}): Promise<CniOutcome> {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(Deno.env.toObject())) {
      if (!k.startsWith("CNI_")) env[k] = v;
    }
    Object.assign(env, {
      CNI_COMMAND: command,
      CNI_CONTAINERID: call.containerId ?? "",
      CNI_NETNS: call.netns ?? "",
      CNI_IFNAME: call.ifname ?? "eth0",
      CNI_PATH: this.binDir,
    });
    if (call.args !== undefined) env.CNI_ARGS = call.args;
    for (const [k, v] of Object.entries(call.env ?? {})) {
      if (v === undefined) delete env[k];
      else env[k] = v;
    }
    const stdin = call.stdin ?? await this.netconf(call.extraConfig);
    const r: CniOutcome = await run([this.plugin], { env, clearEnv: true, stdin });
    try {
      r.json = JSON.parse(r.stdout);
    } catch {
      // not JSON (empty on DEL success)
    }
    return r;
  }

  /**
   * One GET from inside the node namespace, where the agent's HTTP endpoint listens, e.g.
   * `httpGet("/metrics")`; `address` defaults to the agent's default `127.0.0.1:9603`.
   */
  async httpGet(
    path: string,
    address = "127.0.0.1:9603",
  ): Promise<{ status: number; contentType: string | null; body: string }> {
    const r = await runOk([
      "nsenter",
      `--net=${this.ns.path}`,
      "--",
      denoPath(),
      "run",
      "--allow-net",
      "--no-lock",
      "--no-config",
      join(REPO_ROOT, "tests/helpers/http_get.ts"),
      `http://${address}${path}`,
    ], { timeoutMs: 20_000 });
    return JSON.parse(r.stdout);
  }

  /**
   * Waits until no attachment is `releasing`: a DEL answers before its veth is gone (the
   * kernel takes ~40 ms to delete one), so what a test reads of the node right after a DEL
   * must wait for that. Returns at once when no agent answers (nothing can progress until a
   * restart, whose reconcile finishes them); throws after `timeoutMs`, naming the containers
   * still releasing. Polls every {@link SETTLED_POLL_MS}: each poll is a full `flock status`
   * (with the store's integrity check), which the agent must not spend its time on.
   */
  async settled(timeoutMs = 10_000): Promise<void> {
    const started = Date.now();
    for (;;) {
      const r = await callAgent(this.socketPath, {
        command: "STATUS",
        containerId: "",
        netns: "",
        ifname: "",
        args: "",
        config: { cniVersion: "1.1.0", name: "settled", type: "flock", [STATUS_DETAIL_KEY]: true },
      }, 5_000);
      if (!r.ok) return;
      const releasing = (r.result as unknown as StatusSnapshot).attachments
        .filter((a) => a.state === "releasing");
      if (releasing.length === 0) return;
      const waited = Date.now() - started;
      if (waited >= timeoutMs) {
        const stuck = releasing.map((a) => `${a.containerId}/${a.ifname}`).join(", ");
        throw new Error(
          `FlockNode.settled: ${releasing.length} attachment(s) still releasing after ` +
            `${waited} ms (limit ${timeoutMs} ms): ${stuck}; their veth deletion failed or ` +
            `hangs, see the agent log ${this.agentLogPath}`,
        );
      }
      await new Promise((res) => setTimeout(res, Math.min(SETTLED_POLL_MS, timeoutMs - waited)));
    }
  }

  /** Names of the flock host interfaces on the node, once pending DELs have {@link settled}. */
  async flockLinks(): Promise<string[]> {
    await this.settled();
    const links = await this.ns.ipJson<{ ifname: string }[]>(["link", "show"]);
    return links.map((l) => l.ifname).filter((n) => n.startsWith("flock"));
  }

  /**
   * flock-tagged routes on the node (protocol 201), both families, `ip -j` objects — without
   * the node's summary blackholes unless `withSummaries` (they exist while the agent is
   * configured, pods or not).
   */
  async flockRoutes(
    withSummaries = false,
  ): Promise<{ dst: string; dev?: string; type?: string }[]> {
    await this.settled();
    const out: { dst: string; dev?: string; type?: string }[] = [];
    for (const family of ["-4", "-6"]) {
      out.push(
        ...await this.ns.ipJson<{ dst: string; dev?: string; type?: string }[]>([
          family,
          "route",
          "show",
          "proto",
          "201",
          "table",
          "all",
        ]),
      );
    }
    return withSummaries ? out : out.filter((r) => r.type !== "blackhole");
  }

  /** Stops the agent and removes the node namespace and the temporary directory. */
  async remove(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    await this.kill("SIGKILL").catch(() => {});
    await this.fixture.remove().catch(() => {});
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.remove();
  }
}

/** Runs `ping -c 1` from `from` to `address`; true when a reply came. */
export async function ping(from: TestNamespace, address: string): Promise<boolean> {
  const r = await run(["ip", "netns", "exec", from.name, "ping", "-c", "1", "-W", "2", address], {
    timeoutMs: 5_000,
  });
  return r.code === 0;
}
