/**
 * BIRD in a test namespace: `bird -f` as a child process of the test, entered into the node's
 * network namespace with `nsenter --net` (so it never runs in the host namespace), its config,
 * control socket and log under a temporary directory.
 *
 * ```ts
 * await using bird = await BirdDaemon.start(node.ns, { config: bootstrapBirdConfig("10.0.0.11") });
 * await bird.birdc(["show", "protocols"]);
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { type ExecResult, run } from "./exec.ts";
import type { TestNamespace } from "./netns.ts";
import { birdcPath, birdPath } from "./tools.ts";

/** Options of {@linkcode BirdDaemon.start}. */
export interface BirdDaemonOptions {
  /** The initial bird.conf text (e.g. {@linkcode bootstrapBirdConfig}). */
  config: string;
  /** Directory for bird.conf, bird.ctl and bird.log; a fresh temp dir by default (removed). */
  dir?: string;
  /** Start with `-R` (graceful restart recovery). */
  recover?: boolean;
}

/** The minimal config BIRD starts with before the agent renders the real one. */
export function bootstrapBirdConfig(routerId: string): string {
  return `router id ${routerId};\nprotocol device {}\n`;
}

/** A BIRD daemon running inside a namespace. */
export class BirdDaemon implements AsyncDisposable {
  #child?: Deno.ChildProcess;
  #status?: Promise<Deno.CommandStatus>;
  #ownsDir: boolean;

  private constructor(readonly ns: TestNamespace, readonly dir: string, ownsDir: boolean) {
    this.#ownsDir = ownsDir;
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
  /** Whether the bird process is running. */
  get running(): boolean {
    return this.#child !== undefined;
  }

  /** Writes the config and starts BIRD; waits until its control socket answers. */
  static async start(ns: TestNamespace, opts: BirdDaemonOptions): Promise<BirdDaemon> {
    const dir = opts.dir ?? await Deno.makeTempDir({ prefix: "flock-bird-" });
    const bird = new BirdDaemon(ns, dir, opts.dir === undefined);
    try {
      await Deno.writeTextFile(bird.configPath, opts.config);
      await bird.launch({ recover: opts.recover });
      return bird;
    } catch (err) {
      await bird.remove();
      throw err;
    }
  }

  /** Starts `bird -f` (again) on the current config; waits for the control socket. */
  async launch(opts: { recover?: boolean } = {}): Promise<void> {
    if (this.#child) throw new Error("bird already running");
    const log = await Deno.open(this.logPath, { append: true, create: true });
    const args = [`--net=${this.ns.path}`, "--", birdPath(), "-f", "-c", this.configPath];
    args.push("-s", this.socketPath);
    if (opts.recover) args.push("-R");
    const child = new Deno.Command("nsenter", {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    child.stderr.pipeTo(log.writable).catch(() => {});
    this.#child = child;
    this.#status = child.status;
    await this.waitReady();
  }

  /** Polls `birdc show status` until BIRD answers; throws with the log after `timeoutMs`. */
  async waitReady(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.birdc(["show", "status"]);
      if (r.code === 0) return;
      if (!this.#child || Date.now() > deadline) {
        throw new Error(`bird not ready: ${r.stdout}${r.stderr}\n${await this.log()}`);
      }
      await new Promise((res) => setTimeout(res, 50));
    }
  }

  /** Runs `birdc -s SOCKET ARGS…` (from the test's namespace: the socket is a file). */
  birdc(args: string[]): Promise<ExecResult> {
    return run([birdcPath(), "-s", this.socketPath, ...args], { timeoutMs: 10_000 });
  }

  /** `birdc graceful restart`: BIRD exits leaving its routes, peers keep ours as stale. */
  async gracefulStop(): Promise<void> {
    await this.birdc(["graceful", "restart"]);
    await this.#wait(10_000);
  }

  /** Sends `signal` to bird and waits for it to exit. */
  async kill(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    try {
      this.#child?.kill(signal);
    } catch {
      // already gone
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

  /** Kills BIRD and removes its directory (when this helper made it). */
  async remove(): Promise<void> {
    await this.kill("SIGKILL").catch(() => {});
    if (this.#ownsDir) await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.remove();
  }
}
