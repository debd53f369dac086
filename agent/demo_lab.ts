/**
 * The moving parts of `flock demo`: namespaces, the fabric bridge, BIRD and a flock agent per
 * node, pods through the real CNI exec path. Everything made is registered on one stack as it
 * is made and undone in reverse order (processes before their namespaces, the work directory
 * last) when the lab is disposed: after success, after a failure, and after Ctrl-C.
 *
 * The scaffolding (namespaces, links, ping) uses iproute2 and iputils, as an operator would;
 * flock itself touches the kernel only through rtnetlink, from inside the node namespaces.
 *
 * @module
 */

import { join } from "node:path";
import { BirdProcess, bootstrapBirdConfig } from "../bird/process.ts";
import {
  type DemoNodePlan,
  type DemoPlan,
  type DemoPodPlan,
  nodeConfigObject,
} from "./demo_plan.ts";
import { install, renderConflist, selfExecutable } from "./install.ts";
import { type ExecOptions, type ExecResult, run as runCommand } from "./exec.ts";

/** Runs a demo step's command (no shell), killed after 15 s unless `opts` says otherwise. */
export function run(cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return runCommand([cmd, ...args], { timeoutMs: 15_000, ...opts });
}

/** {@link run}, throwing with the command and its stderr on a non-zero exit; returns stdout. */
export async function must(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr.trim() || r.code}`);
  return r.stdout;
}

/** Thrown out of waits and steps once the demo was interrupted. */
export class DemoInterrupted extends Error {
  constructor() {
    super("interrupted");
    this.name = "DemoInterrupted";
  }
}

/** A route as `ip -j route` prints it (the fields the demo reads). */
export interface ShownRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  nexthops?: { gateway?: string; dev?: string }[];
}

/** A child process the lab started. */
export interface SpawnedProcess {
  child: Deno.ChildProcess;
  /** Set once it has exited. */
  exited?: Deno.CommandStatus;
}

/** Where the BIRD programs are. */
export interface BirdPrograms {
  bird: string;
  birdc: string;
}

/** One running demo node: its namespace, BIRD, agent and plugin. */
export class DemoNode {
  constructor(
    readonly lab: DemoLab,
    readonly plan: DemoNodePlan,
    readonly dir: string,
    readonly bird: BirdProcess,
    readonly agent: SpawnedProcess,
    /** The plugin as a runtime execs it (the installed copy). */
    readonly plugin: string,
    /** The plugin's network config (one entry of the conflist, with name and version). */
    readonly pluginConf: Record<string, unknown>,
  ) {}

  get netnsPath(): string {
    return `/var/run/netns/${this.plan.ns}`;
  }
  get agentLogPath(): string {
    return join(this.dir, "agent.log");
  }

  /** One plugin invocation, exactly as a CRI runtime makes it (stdin, env, exec). */
  cni(command: "ADD" | "DEL" | "STATUS", pod?: DemoPodPlan): Promise<ExecResult> {
    const env: Record<string, string> = {
      CNI_COMMAND: command,
      CNI_PATH: join(this.dir, "bin"),
    };
    let conf = this.pluginConf;
    if (pod) {
      Object.assign(env, {
        CNI_CONTAINERID: pod.id,
        CNI_NETNS: `/var/run/netns/${pod.ns}`,
        CNI_IFNAME: "eth0",
        CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=${pod.id}`,
      });
      conf = {
        ...conf,
        runtimeConfig: { "io.kubernetes.cri.pod-annotations": pod.annotations },
      };
    }
    return run(this.plugin, [], { stdin: JSON.stringify(conf), env });
  }

  /** Polls the plugin's STATUS until the agent serves pods (bounded). */
  async waitReady(timeoutMs = 30_000): Promise<void> {
    await this.lab.waitFor(`the agent on ${this.plan.name}`, async () => {
      if (this.agent.exited) {
        throw new Error(`the agent on ${this.plan.name} exited (${this.agent.exited.code})`);
      }
      return (await this.cni("STATUS")).code === 0;
    }, timeoutMs);
  }

  /** `ip -j -n NODE ROUTE-ARGS` parsed. */
  async routes(args: string[]): Promise<ShownRoute[]> {
    return JSON.parse(await must("ip", ["-j", "-n", this.plan.ns, ...args]) || "[]");
  }

  /** The agent's last log lines (for a failure report). */
  async agentLogTail(lines = 15): Promise<string> {
    const log = await Deno.readTextFile(this.agentLogPath).catch(() => "");
    return log.trimEnd().split("\n").slice(-lines).join("\n");
  }
}

/** The demo's network and processes; see the module doc. */
export class DemoLab implements AsyncDisposable {
  readonly #stack = new AsyncDisposableStack();
  readonly #abort: AbortController;
  /** What cleanup removed, for the closing line. */
  readonly removed = { namespaces: 0, processes: 0 };

  private constructor(
    readonly plan: DemoPlan,
    readonly dir: string,
    abort: AbortController,
  ) {
    this.#abort = abort;
  }

  /**
   * Makes the work directory (removed last on dispose). Aborting `interrupt` (the demo's signal
   * handler does) stops the demo at its next step or wait; it may already be aborted.
   */
  static async create(plan: DemoPlan, interrupt = new AbortController()): Promise<DemoLab> {
    const dir = await Deno.makeTempDir({ prefix: "flock-demo-" });
    const lab = new DemoLab(plan, dir, interrupt);
    lab.#stack.defer(() => Deno.remove(dir, { recursive: true }).catch(() => {}));
    return lab;
  }

  get interrupted(): boolean {
    return this.#abort.signal.aborted;
  }

  /** Throws {@link DemoInterrupted} once {@link interrupt} was called. */
  checkInterrupted(): void {
    if (this.interrupted) throw new DemoInterrupted();
  }

  /** Sleeps, cut short by an interrupt. */
  async sleep(ms: number): Promise<void> {
    this.checkInterrupted();
    const signal = this.#abort.signal;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
      function done() {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      }
    });
    this.checkInterrupted();
  }

  /** Polls `check` every 50 ms until it holds; throws after `timeoutMs` or on interrupt. */
  async waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      }
      await this.sleep(50);
    }
  }

  /** `ip netns add NAME`, deleted on dispose. */
  async addNamespace(name: string): Promise<void> {
    this.checkInterrupted();
    await must("ip", ["netns", "add", name]);
    this.#stack.defer(async () => {
      await run("ip", ["netns", "del", name]);
      this.removed.namespaces++;
    });
  }

  /** The fabric namespace with bridge `br0`: the nodes' shared L2 segment. */
  async createFabric(): Promise<void> {
    const ns = this.plan.fabricNs;
    await this.addNamespace(ns);
    await must("ip", ["-n", ns, "link", "add", "br0", "type", "bridge"]);
    await must("ip", ["-n", ns, "link", "set", "br0", "up"]);
  }

  /**
   * A node on the fabric: its namespace with `eth0` plugged into `br0` and the underlay
   * addresses, BIRD on a bootstrap config (as the DaemonSet's sidecar starts), then the agent
   * in standalone mode driving that BIRD, and the plugin installed for it.
   */
  async startNode(plan: DemoNodePlan, programs: BirdPrograms): Promise<DemoNode> {
    const ns = plan.ns;
    await this.addNamespace(ns);
    await must("ip", [
      ...["-n", ns, "link", "add", "eth0", "type", "veth"],
      ...["peer", "name", plan.fabricPort, "netns", this.plan.fabricNs],
    ]);
    await must("ip", ["-n", this.plan.fabricNs, "link", "set", plan.fabricPort, "master", "br0"]);
    await must("ip", ["-n", this.plan.fabricNs, "link", "set", plan.fabricPort, "up"]);
    await must("ip", ["-n", ns, "addr", "add", `${plan.ipv4}/24`, "dev", "eth0"]);
    // nodad: the address is usable at once (BIRD announces it as the IPv6 next hop).
    await must("ip", ["-n", ns, "addr", "add", `${plan.ipv6}/64`, "dev", "eth0", "nodad"]);
    // A fresh link-local is tentative for ~1 s (DAD), and the kernel sends no neighbour
    // solicitation without a usable one: the first cross-node IPv6 packet would wait 1 s.
    await must("ip", ["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"]);
    await must("ip", ["-n", ns, "link", "set", "eth0", "up"]);
    // The agent's health endpoint listens on the node's loopback.
    await must("ip", ["-n", ns, "link", "set", "lo", "up"]);

    const dir = join(this.dir, plan.name);
    await Deno.mkdir(join(dir, "bird"), { recursive: true });
    const configPath = join(dir, "nodeconfig.json");
    await Deno.writeTextFile(configPath, JSON.stringify(nodeConfigObject(plan), null, 2) + "\n");
    const socket = join(dir, "flock.sock");
    await install({
      binDir: join(dir, "bin"),
      confDir: join(dir, "net.d"),
      networkName: "flock",
      socketPath: socket,
    });
    const conflist = JSON.parse(renderConflist({ networkName: "flock", socketPath: socket }));
    const pluginConf = {
      cniVersion: conflist.cniVersion,
      name: conflist.name,
      ...conflist.plugins[0],
    };

    this.checkInterrupted();
    const bird = await BirdProcess.start({
      netnsPath: `/var/run/netns/${ns}`,
      dir: join(dir, "bird"),
      config: bootstrapBirdConfig(plan.ipv4),
      recover: true,
      birdPath: programs.bird,
      birdcPath: programs.birdc,
    });
    this.#stack.defer(async () => {
      await bird.kill("SIGTERM");
      this.removed.processes++;
    });

    this.checkInterrupted();
    const agent = this.#spawn(join(dir, "agent.log"), "nsenter", [
      `--net=/var/run/netns/${ns}`,
      "--",
      selfExecutable(),
      "agent",
      ...["--node", plan.name, "--config", configPath],
      ...["--state-dir", join(dir, "state"), "--socket", socket],
      ...["--bird-config", bird.configPath, "--bird-socket", bird.socketPath],
      ...["--birdc", programs.birdc],
    ]);
    return new DemoNode(this, plan, dir, bird, agent, join(dir, "bin", "flock"), pluginConf);
  }

  /** A pod namespace (deleted on dispose, after the DEL that should already have emptied it). */
  addPodNamespace(pod: DemoPodPlan): Promise<void> {
    return this.addNamespace(pod.ns);
  }

  /** Starts a long-running child with stderr to `logPath`; SIGTERM (then SIGKILL) on dispose. */
  #spawn(logPath: string, cmd: string, args: string[]): SpawnedProcess {
    const child = new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "piped" })
      .spawn();
    const log = Deno.openSync(logPath, { write: true, create: true, append: true });
    child.stderr.pipeTo(log.writable).catch(() => {});
    const spawned: SpawnedProcess = { child };
    child.status.then((s) => spawned.exited = s);
    this.#stack.defer(async () => {
      const kill = setTimeout(() => tryKill(child, "SIGKILL"), 5_000);
      tryKill(child, "SIGTERM");
      await child.status;
      clearTimeout(kill);
      this.removed.processes++;
    });
    return spawned;
  }

  /** Removes everything, in reverse order of making. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.#stack.disposeAsync();
  }
}

function tryKill(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch {
    // already gone
  }
}
