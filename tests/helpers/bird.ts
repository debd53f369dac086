/**
 * BIRD in a test namespace: the product's {@linkcode BirdProcess} (`bird -f` entered into the
 * node's network namespace with `nsenter --net`, so it never runs in the host namespace) with
 * the binaries `make setup` provides, its config, control socket and log under a temporary
 * directory that this helper removes.
 *
 * ```ts
 * await using bird = await BirdDaemon.start(node.ns, { config: bootstrapBirdConfig("10.0.0.11") });
 * await bird.birdc(["show", "protocols"]);
 * ```
 *
 * @module
 */

import type { ExecResult } from "./exec.ts";
import type { TestNamespace } from "./netns.ts";
import { birdcPath, birdPath } from "./tools.ts";
import { BirdProcess } from "../../bird/process.ts";

export { bootstrapBirdConfig } from "../../bird/process.ts";

/** Options of {@linkcode BirdDaemon.start}. */
export interface BirdDaemonOptions {
  /** The initial bird.conf text (e.g. {@linkcode bootstrapBirdConfig}). */
  config: string;
  /** Directory for bird.conf, bird.ctl and bird.log; a fresh temp dir by default (removed). */
  dir?: string;
  /** Start with `-R` (graceful restart recovery). */
  recover?: boolean;
}

/** A BIRD daemon running inside a test namespace. */
export class BirdDaemon implements AsyncDisposable {
  private constructor(
    readonly ns: TestNamespace,
    readonly process: BirdProcess,
    readonly ownsDir: boolean,
  ) {}

  get dir(): string {
    return this.process.dir;
  }
  get configPath(): string {
    return this.process.configPath;
  }
  get socketPath(): string {
    return this.process.socketPath;
  }
  get logPath(): string {
    return this.process.logPath;
  }
  /** Whether the bird process is running. */
  get running(): boolean {
    return this.process.running;
  }

  /** Where flock's BIRD driver (BirdControl) finds this BIRD, its config and its tools. */
  controlOptions(): {
    configPath: string;
    socketPath: string;
    birdcPath: string;
    birdPath: string;
  } {
    return {
      configPath: this.configPath,
      socketPath: this.socketPath,
      birdcPath: birdcPath(),
      birdPath: birdPath(),
    };
  }

  /** Writes the config and starts BIRD; waits until its control socket answers. */
  static async start(ns: TestNamespace, opts: BirdDaemonOptions): Promise<BirdDaemon> {
    const dir = opts.dir ?? await Deno.makeTempDir({ prefix: "flock-bird-" });
    try {
      const bird = await BirdProcess.start({
        netnsPath: ns.path,
        dir,
        config: opts.config,
        recover: opts.recover,
        birdPath: birdPath(),
        birdcPath: birdcPath(),
      });
      return new BirdDaemon(ns, bird, opts.dir === undefined);
    } catch (err) {
      if (opts.dir === undefined) await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw err;
    }
  }

  /** Starts `bird -f` (again) on the current config; waits for the control socket. */
  launch(opts: { recover?: boolean } = {}): Promise<void> {
    return this.process.launch(opts);
  }

  /** Polls `birdc show status` until BIRD answers; throws with the log after `timeoutMs`. */
  waitReady(timeoutMs = 10_000): Promise<void> {
    return this.process.waitReady(timeoutMs);
  }

  /** Runs `birdc -s SOCKET ARGS…`; BIRD's reply is in `stdout`. */
  async birdc(args: string[]): Promise<ExecResult> {
    const r = await this.process.birdc(args);
    return { code: r.code, success: r.code === 0, stdout: r.text, stderr: "" };
  }

  /** `birdc graceful restart`: BIRD exits leaving its routes, peers keep ours as stale. */
  gracefulStop(): Promise<void> {
    return this.process.gracefulStop();
  }

  /** Sends `signal` (default SIGKILL) to bird and waits for it to exit. */
  kill(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    return this.process.kill(signal);
  }

  /** Sends `signal` to bird and returns at once (SIGSTOP pauses it, SIGCONT resumes it). */
  signal(signal: Deno.Signal): void {
    this.process.signal(signal);
  }

  /** BIRD's log so far. */
  log(): Promise<string> {
    return this.process.log();
  }

  /** Kills BIRD and removes its directory (when this helper made it). */
  async remove(): Promise<void> {
    await this.kill("SIGKILL").catch(() => {});
    if (this.ownsDir) await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.remove();
  }
}
