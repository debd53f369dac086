/**
 * BIRD as a child process inside a network namespace: `bird -f` entered into the namespace with
 * `nsenter --net=PATH` (so it never runs in the caller's own namespace), with its config,
 * control socket and log in one directory. `flock demo` runs one per node namespace this way,
 * and so do the tests; in a cluster BIRD is the DaemonSet's sidecar instead.
 *
 * ```ts
 * const bird = await BirdProcess.start({
 *   netnsPath: "/var/run/netns/node1",
 *   dir: "/tmp/node1-bird",
 *   config: bootstrapBirdConfig("10.0.0.1"),
 *   recover: true,
 * });
 * await bird.birdc(["show", "protocols"]);
 * await bird.kill();
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { type CommandOutput, runCommand } from "./control.ts";

/** Options of {@link BirdProcess.start}. */
export interface BirdProcessOptions {
  /** The network namespace BIRD runs in (`/var/run/netns/NAME`). */
  netnsPath: string;
  /** An existing directory for bird.conf, bird.ctl and bird.log. */
  dir: string;
  /** The initial bird.conf text (e.g. {@link bootstrapBirdConfig}). */
  config: string;
  /**
   * Start with `-R` (graceful restart recovery): after a restart BIRD keeps the kernel routes
   * and its peers keep ours until the sessions have re-converged.
   */
  recover?: boolean;
  /** The bird binary (default `bird` on PATH). */
  birdPath?: string;
  /** The birdc binary (default `birdc` on PATH). */
  birdcPath?: string;
}

/**
 * The minimal config BIRD starts with before the agent renders the real one (what the
 * DaemonSet's bootstrap ConfigMap holds): a router id and the interface list.
 */
export function bootstrapBirdConfig(routerId: string): string {
  return `router id ${routerId};\nprotocol device {}\n`;
}

/**
 * Where a BIRD program is: the first executable `name` on PATH or in the sbin directories
 * (BIRD installs to /usr/sbin, which a non-login PATH may lack); undefined when there is none.
 */
export function locateBirdProgram(name: "bird" | "birdc"): string | undefined {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").filter((d) => d !== "");
  dirs.push("/usr/local/sbin", "/usr/sbin", "/sbin");
  for (const dir of dirs) {
    const path = join(dir, name);
    try {
      const info = Deno.statSync(path);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** A BIRD daemon running inside a network namespace as a child of this process. */
export class BirdProcess {
  #child?: Deno.ChildProcess;
  #status?: Promise<Deno.CommandStatus>;
  #exited = false;

  private constructor(readonly options: BirdProcessOptions) {}

  /** Writes the config and starts BIRD; resolves once its control socket answers. */
  static async start(options: BirdProcessOptions): Promise<BirdProcess> {
    const bird = new BirdProcess(options);
    await Deno.writeTextFile(bird.configPath, options.config);
    try {
      await bird.launch({ recover: options.recover });
    } catch (err) {
      await bird.kill("SIGKILL");
      throw err;
    }
    return bird;
  }

  /** The directory holding config, socket and log. */
  get dir(): string {
    return this.options.dir;
  }
  get configPath(): string {
    return join(this.dir, "bird.conf");
  }
  get socketPath(): string {
    return join(this.dir, "bird.ctl");
  }
  get logPath(): string {
    return join(this.dir, "bird.log");
  }
  /** Whether a bird process is running. */
  get running(): boolean {
    return this.#child !== undefined && !this.#exited;
  }

  /** Starts `bird -f` (again) on the current config file; waits for the control socket. */
  async launch(opts: { recover?: boolean } = {}): Promise<void> {
    if (this.running) throw new Error("bird already running");
    const log = await Deno.open(this.logPath, { append: true, create: true });
    const args = [`--net=${this.options.netnsPath}`, "--", this.options.birdPath ?? "bird"];
    args.push("-f", "-c", this.configPath, "-s", this.socketPath);
    if (opts.recover) args.push("-R");
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command("nsenter", {
        args,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
    } catch (err) {
      log.close();
      throw err;
    }
    child.stderr.pipeTo(log.writable).catch(() => {});
    this.#child = child;
    this.#exited = false;
    this.#status = child.status.finally(() => {
      if (this.#child === child) this.#exited = true;
    });
    await this.waitReady();
  }

  /**
   * Polls `birdc show status` until BIRD answers; throws with the log when BIRD exits or
   * `timeoutMs` passes.
   */
  async waitReady(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.birdc(["show", "status"]);
      if (r.code === 0) return;
      if (!this.running || Date.now() > deadline) {
        const why = this.running ? `not ready after ${timeoutMs} ms` : "exited";
        throw new Error(`bird ${why}: ${r.text}\n${await this.log()}`.trimEnd());
      }
      await new Promise((res) => setTimeout(res, 50));
    }
  }

  /** Runs `birdc -s SOCKET ARGS…` (the socket is a file: no need to enter the namespace). */
  birdc(args: string[], timeoutMs = 10_000): Promise<CommandOutput> {
    return runCommand(
      this.options.birdcPath ?? "birdc",
      ["-s", this.socketPath, ...args],
      timeoutMs,
    );
  }

  /** `birdc graceful restart`: BIRD exits leaving its routes, peers keep ours as stale. */
  async gracefulStop(): Promise<void> {
    await this.birdc(["graceful", "restart"]);
    await this.#wait(10_000);
  }

  /**
   * Sends `signal` to bird without waiting for anything (tests pause BIRD with SIGSTOP and
   * resume it with SIGCONT). Does nothing when bird is not running.
   */
  signal(signal: Deno.Signal): void {
    if (this.running) this.#child?.kill(signal);
  }

  /** Sends `signal` to bird and waits (bounded, then SIGKILL) for it to exit. */
  async kill(signal: Deno.Signal = "SIGTERM"): Promise<void> {
    if (this.running) {
      try {
        this.#child?.kill(signal);
      } catch {
        // already gone
      }
    }
    await this.#wait(10_000);
  }

  async #wait(timeoutMs: number): Promise<void> {
    if (!this.#child) return;
    const timer = setTimeout(() => {
      try {
        this.#child?.kill("SIGKILL");
      } catch {
        // gone
      }
    }, timeoutMs);
    try {
      await this.#status;
    } finally {
      clearTimeout(timer);
      this.#child = undefined;
    }
  }

  /** BIRD's log so far. */
  async log(): Promise<string> {
    try {
      return await Deno.readTextFile(this.logPath);
    } catch {
      return "";
    }
  }
}
