/**
 * Driving a running BIRD through its control socket: applying a new bird.conf safely, and
 * reading BGP session state.
 *
 * {@link BirdControl.update} is the one way in for a new config. It coalesces bursts (every
 * update within `coalesceMs` ends in one reload), skips the reload when the text did not
 * change, validates the candidate with `birdc configure check` before it replaces the live
 * file (so bird.conf on disk is always the last config BIRD accepted, and a BIRD restart
 * reads a good one), then runs `birdc configure` and checks the reply. A rejected config
 * leaves the running one in place and is kept next to it as `bird.conf.rejected`; the error
 * is in {@link BirdControl.status}, and the same text is not sent again (it would be refused
 * again) until another one was tried. When BIRD is not reachable the candidate is checked
 * offline with `bird -p` and written for BIRD to read when it starts, and the reload is
 * retried. A reload that could not be completed (BIRD did not answer within
 * `commandTimeoutMs`, being busy or stopped; BIRD shutting down or closing the connection
 * mid-reply; the file could not be written) is `failed`, not `rejected`: nothing judged the
 * config, so it is retried until BIRD takes it or judges it, after a pause that doubles from
 * `retryMs` (2 s) to `retryMaxMs` (30 s) with every retry in a row and starts again from
 * `retryMs` once BIRD answered: each retry runs a `birdc` and, while BIRD is down, a `bird -p`.
 * While a retry waits for a BIRD that was not reachable, the restart watch (`watchMs`) looks at
 * its control socket and brings the retry forward when it answers, so a BIRD that comes back is
 * noticed within a watch period however long the pause has grown. Such an outage is
 * logged when it starts, when its cause changes (stopped, then down), every 60th retry
 * (failure_streak.ts) and when BIRD answers again, not at every retry. Only BIRD's
 * "configuration file error" with a place in the file (`file:line:col message`) is a verdict
 * on the text; see {@link parseConfigureReply}.
 *
 * Every command runs with an argument list (Deno.Command), never through a shell.
 *
 * @module
 */

import { run } from "../agent/exec.ts";
import { FailureStreak } from "../agent/failure_streak.ts";
import { backoffMs } from "../agent/backoff.ts";

/** Distinct rejection errors remembered at most (see BirdControl's rejection log). */
const MAX_LOGGED_REJECTIONS = 64;

/** What the last reload did, for logs and `flock status`. */
export interface BirdReloadStatus {
  /**
   * `never` before the first attempt; `ok` when BIRD runs the current config; `rejected` when
   * BIRD (or `bird -p`) found a fault in the newest one and runs the previous one (not retried:
   * the same text would be refused again); `unreachable` when BIRD's control socket did not
   * answer (a retry is scheduled); `failed` when the reload could not be completed without a
   * verdict on the text: BIRD accepting the connection but not answering within
   * `commandTimeoutMs`, shutting down, closing the connection mid-reply, or the file not being
   * writable (BIRD may still run the previous config; a retry is scheduled).
   */
  result: "never" | "ok" | "rejected" | "unreachable" | "failed";
  /** When the last reload attempt finished (ISO 8601). */
  lastAttempt?: string;
  /** When BIRD last accepted a config (ISO 8601). */
  lastSuccess?: string;
  /** BIRD's reply to the last successful reload (`Reconfigured`, ...). */
  reply?: string;
  /** The error text when `result` is not `ok`. */
  error?: string;
  /** Reloads BIRD accepted. */
  reloads: number;
  /**
   * Updates that ended without a reload because the text had not changed (BIRD runs it, or
   * refused it at the last attempt).
   */
  unchanged: number;
}

/** Options of {@link BirdControl}. */
export interface BirdControlOptions {
  /** The live config file (what BIRD was started with). */
  configPath: string;
  /** BIRD's control socket. */
  socketPath: string;
  /** The birdc binary (default `birdc` on PATH). */
  birdcPath?: string;
  /** The bird binary for offline checks while BIRD is down (default `bird` on PATH). */
  birdPath?: string;
  /** Updates within this window are applied as one reload (default 50 ms). */
  coalesceMs?: number;
  /**
   * First pause before a reload BIRD neither took nor judged is tried again (default 2 s); it
   * doubles with every retry in a row, up to `retryMaxMs`.
   */
  retryMs?: number;
  /** Longest pause between two retries (default 30 s; never below `retryMs`). */
  retryMaxMs?: number;
  /** Bound on one birdc call (default 10 s); past it the reload is `failed` and retried. */
  commandTimeoutMs?: number;
  /**
   * Period of the check that BIRD still runs the process the config was applied to (default 0:
   * no check). BIRD recreates its control socket when it starts, so a new socket file means a
   * restarted BIRD, which runs whatever bird.conf it found: the wanted config is applied again.
   * A socket that refuses connections means BIRD is down: reported `unreachable`, and the
   * wanted config is written (checked offline) for BIRD's start and retried with backoff (see
   * `retryMs`); while that retry waits, this check brings it forward once the socket answers.
   */
  watchMs?: number;
  log?: (fields: Record<string, unknown>) => void;
  /**
   * Called with the status after every reload attempt, retries included (which no
   * {@link BirdControl.update} caller waits for), so `flock status` sees a retry succeed.
   */
  onAttempt?: (status: BirdReloadStatus) => void;
}

/** The outcome of one command. */
export interface CommandOutput {
  code: number;
  text: string;
  /** The program was killed after running past its time bound. */
  timedOut?: boolean;
}

/**
 * Runs `program args…` (no shell) within `timeoutMs`; stdout and stderr come back as one text
 * (a timeout says so at its end). Never throws: a program that cannot start is exit code 127.
 */
export async function runCommand(
  program: string,
  args: string[],
  timeoutMs: number,
): Promise<CommandOutput> {
  try {
    const out = await run([program, ...args], { timeoutMs });
    return { code: out.code, text: (out.stdout + out.stderr).trim(), timedOut: out.timedOut };
  } catch (e) {
    return { code: 127, text: `cannot run ${program}: ${(e as Error).message}` };
  }
}

/** BIRD's reply to a `configure` family command, judged. */
export interface ConfigureReply {
  /** BIRD took the config (`configure`) or found it good (`configure check`). */
  ok: boolean;
  /**
   * BIRD found a fault in the config text (a parse or config error at a place in the file):
   * the same text would be refused again, so it is not worth a retry.
   */
  rejected: boolean;
  /** The control socket could not be reached (BIRD not running). */
  unreachable: boolean;
  /** birdc was killed waiting for BIRD (busy or stopped): BIRD judged nothing. */
  timedOut: boolean;
  /** BIRD's last reply code (`birdc -v`), when it gave one. */
  replyCode?: number;
  /** The meaningful lines, without reply codes (banner and "Reading configuration" dropped). */
  message: string;
}

/**
 * BIRD 2's reply codes for `configure` and `configure check`, as `birdc -v` prints them. From
 * BIRD's doc/reply_codes and sysdep/unix/main.c (cmd_read_config, cmd_check_config,
 * cmd_reconfig_msg), BIRD 2.0.x (CZ-NIC/bird).
 */
const REPLY = {
  /** `0001 BIRD 2.0.12 ready.`: the greeting. */
  WELCOME: 1,
  /** `0002-Reading configuration from FILE`: continued by the outcome. */
  READING: 2,
  /** `0003 Reconfigured`. */
  RECONFIGURED: 3,
  /** `0004 Reconfiguration in progress`: taken; protocols are still being reconfigured. */
  IN_PROGRESS: 4,
  /** `0005 Reconfiguration already in progress, queueing new config`: taken, applied next. */
  QUEUED: 5,
  /** `0006 Reconfiguration ignored, shutting down`: not taken, not judged. */
  SHUTTING_DOWN: 6,
  /** `0020 Configuration OK` (`configure check`). */
  CONFIG_OK: 20,
  /**
   * `8002 FILE:LINE:COL MESSAGE` (a parse or config error: a verdict), or `8002 FILE: ERRNO`
   * (the file could not be opened: no verdict on the text).
   */
  CONFIG_FILE_ERROR: 8002,
} as const;

/** Replies that mean BIRD took (or, for a check, passed) the config. */
const TAKEN: ReadonlySet<number> = new Set([
  REPLY.RECONFIGURED,
  REPLY.IN_PROGRESS,
  REPLY.QUEUED,
  REPLY.CONFIG_OK,
]);

/** A config error's place in the file, as BIRD (and `bird -p`) prints it: `FILE:LINE:COL `. */
const ERROR_LOCATION = /:\d+:\d+ \S/;

/**
 * Judges `birdc -v`'s output and exit code for `configure` and `configure check`. Only BIRD's
 * "configuration file error" with a place in the file is a verdict on the text (`rejected`);
 * anything else that is no success (`0006` while BIRD shuts down, the connection closed
 * mid-reply, a file BIRD could not open, a reply without a code) judged nothing and is worth a
 * retry.
 */
export function parseConfigureReply(
  code: number,
  text: string,
  timedOut = false,
): ConfigureReply {
  let replyCode: number | undefined;
  const lines: string[] = [];
  for (const line of text.split("\n")) {
    const coded = /^(\d{4})[ -](.*)$/.exec(line);
    if (!coded) {
      // A continuation line (`birdc -v` indents it) or birdc's own error.
      lines.push(line.trim());
      continue;
    }
    replyCode = Number(coded[1]);
    if (replyCode !== REPLY.WELCOME && replyCode !== REPLY.READING) lines.push(coded[2]);
  }
  const message = lines.join("\n").trim();
  const unreachable = /Unable to connect to server control socket/.test(text);
  const answered = !unreachable && !timedOut;
  const ok = answered && code === 0 && replyCode !== undefined && TAKEN.has(replyCode);
  const rejected = answered && !ok && replyCode === REPLY.CONFIG_FILE_ERROR &&
    ERROR_LOCATION.test(message);
  return {
    ok,
    rejected,
    unreachable,
    timedOut,
    replyCode,
    message: message || `birdc exited with ${code}`,
  };
}

/**
 * Judges `bird -p` (the offline check): a failure naming a place in the file is a verdict on
 * the text; any other (bird not runnable, killed) judged nothing.
 */
export function parseOfflineCheck(out: CommandOutput): { ok: boolean; rejected: boolean } {
  const ok = out.code === 0 && !out.timedOut;
  return { ok, rejected: !ok && !out.timedOut && ERROR_LOCATION.test(out.text) };
}

function quoted(path: string): string {
  if (/["\n\\]/.test(path)) throw new Error(`unusable path for birdc: ${JSON.stringify(path)}`);
  return `"${path}"`;
}

/** Applies configs to one BIRD; see the module doc. */
export class BirdControl {
  readonly #o: Required<Omit<BirdControlOptions, "log" | "onAttempt">>;
  readonly #log: (fields: Record<string, unknown>) => void;
  readonly #onAttempt: (status: BirdReloadStatus) => void;
  /**
   * The text BIRD runs, as far as the control knows (undefined until the first success, and
   * again once the watch saw BIRD stop or restart: the config must then be applied anew).
   */
  #accepted?: string;
  /**
   * The text BIRD accepted last, kept across restarts: what bird.conf gets back when BIRD
   * refuses at `configure` a text that had already replaced it.
   */
  #lastAccepted?: string;
  /**
   * The text BIRD (or `bird -p`) found a fault in last: while it is the last one tried
   * (`status.result` is `rejected`) it is not sent again; a re-render of the same text would
   * otherwise run the check (and write `bird.conf.rejected`) every time.
   */
  #rejected?: string;
  /** The newest text asked for. */
  #wanted?: string;
  #pending = false;
  #waiters: ((s: BirdReloadStatus) => void)[] = [];
  #timer?: ReturnType<typeof setTimeout>;
  #retryTimer?: ReturnType<typeof setTimeout>;
  #running?: Promise<void>;
  #closed = false;
  #watchTimer?: ReturnType<typeof setInterval>;
  #probing = false;
  /** Identity of BIRD's control socket file when BIRD last accepted a config. */
  #socketId?: string;
  /**
   * The rejection errors logged since BIRD last accepted a config: each distinct one is logged
   * once (a config rendered anew with the same fault would log it at every render otherwise).
   */
  readonly #loggedRejections = new Set<string>();
  /** Reloads in a row that BIRD gave no verdict on (down, stopped, file not written). */
  readonly #outage: FailureStreak;
  /** What the last of those rounds ran into, to log a change of cause once. */
  #outageCause?: string;
  readonly status: BirdReloadStatus = { result: "never", reloads: 0, unchanged: 0 };

  constructor(options: BirdControlOptions) {
    this.#o = {
      birdcPath: "birdc",
      birdPath: "bird",
      coalesceMs: 50,
      retryMs: 2_000,
      retryMaxMs: 30_000,
      commandTimeoutMs: 10_000,
      watchMs: 0,
      // An option passed as undefined (NodeRouting forwards unset ones) keeps its default: a
      // retryMs of undefined would be a retry loop without pause.
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
    } as Required<Omit<BirdControlOptions, "log" | "onAttempt">>;
    this.#log = options.log ?? (() => {});
    this.#onAttempt = options.onAttempt ?? (() => {});
    this.#outage = new FailureStreak("bird reload", this.#log, "retrying with backoff");
    if (this.#o.watchMs > 0) {
      this.#watchTimer = setInterval(() => this.#probe(), this.#o.watchMs);
      Deno.unrefTimer(this.#watchTimer);
    }
  }

  /**
   * Asks for `text` to become BIRD's config. Resolves with the status once the reload that
   * includes it finished (later updates in the same window share that reload).
   */
  update(text: string): Promise<BirdReloadStatus> {
    if (this.#closed) return Promise.resolve({ ...this.status });
    this.#wanted = text;
    this.#pending = true;
    const { promise, resolve } = Promise.withResolvers<BirdReloadStatus>();
    this.#waiters.push(resolve);
    this.#schedule(this.#o.coalesceMs);
    return promise;
  }

  /** Waits until no reload is pending or running. */
  async settled(): Promise<BirdReloadStatus> {
    while (this.#pending || this.#running) {
      if (this.#running) await this.#running;
      else await new Promise((r) => setTimeout(r, this.#o.coalesceMs));
    }
    return { ...this.status };
  }

  /** Stops timers; pending waiters get the current status. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#watchTimer);
    clearTimeout(this.#timer);
    clearTimeout(this.#retryTimer);
    this.#timer = this.#retryTimer = undefined;
    await this.#running;
    this.#pending = false;
    for (const w of this.#waiters.splice(0)) w({ ...this.status });
  }

  #schedule(delayMs: number): void {
    if (this.#timer !== undefined || this.#running || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#running = this.#drain().finally(() => {
        this.#running = undefined;
        if (this.#pending) this.#schedule(0);
      });
    }, delayMs);
  }

  async #drain(): Promise<void> {
    while (this.#pending && !this.#closed) {
      this.#pending = false;
      const waiters = this.#waiters.splice(0);
      const text = this.#wanted!;
      if (this.#refusedLast(text) || this.#runsAlready(text)) {
        // Not sent again: no attempt to report (nor a reload for the metrics to count).
        this.status.unchanged++;
      } else {
        await this.#apply(text).catch((e) => this.#failed(e));
        this.#notify();
      }
      for (const w of waiters) w({ ...this.status });
    }
  }

  /** Whether BIRD found a fault in `text` at the last attempt: sent again, it would be again. */
  #refusedLast(text: string): boolean {
    return text === this.#rejected && this.status.result === "rejected";
  }

  /** Whether BIRD runs `text` already: handing it over again would change nothing. */
  #runsAlready(text: string): boolean {
    return text === this.#accepted && this.status.result === "ok";
  }

  async #apply(text: string): Promise<void> {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    const { configPath } = this.#o;
    const candidate = `${configPath}.new`;
    // The config may carry BGP passwords: readable by root only.
    await Deno.writeTextFile(candidate, text, { mode: 0o600 });
    const check = await this.#birdc(["configure", "check", quoted(candidate)]);
    if (check.timedOut) {
      this.#timedOut("configure check");
      return;
    }
    if (check.unreachable) {
      await this.#applyOffline(candidate, text, check.message);
      return;
    }
    if (check.rejected) {
      this.#birdAnswered();
      await this.#reject(candidate, text, check.message);
      return;
    }
    if (!check.ok) {
      this.#notTaken("configure check", check);
      return;
    }
    await Deno.rename(candidate, configPath);
    // Read before the configure, not after its reply: a BIRD restarted right after it took the
    // config would otherwise lend its new socket to the old one's success, and the watch would
    // never see that restart (it then runs the stale file it found). Read before, a restart in
    // between only costs one more reload.
    const socketId = await socketIdentity(this.#o.socketPath);
    const reply = await this.#birdc(["configure", quoted(configPath)]);
    if (reply.timedOut) {
      // The file is the checked candidate; BIRD may or may not read it once it wakes up, so
      // only a retry that BIRD answers says which config runs.
      this.#timedOut("configure");
      return;
    }
    const now = new Date().toISOString();
    this.status.lastAttempt = now;
    // Taken or judged: an outage is over. A reply without a verdict continues it.
    if (reply.ok || reply.rejected) this.#birdAnswered();
    if (reply.ok) {
      this.#accepted = this.#lastAccepted = text;
      Object.assign(this.status, {
        result: "ok",
        lastSuccess: now,
        reply: reply.message,
        error: undefined,
      });
      this.status.reloads++;
      this.#loggedRejections.clear();
      this.#socketId = socketId;
      this.#log({ msg: "bird reconfigured", reply: reply.message });
      return;
    }
    if (reply.unreachable) {
      this.#noVerdict("unreachable", reply.message, "bird not reachable");
    } else if (reply.rejected) {
      // Checked good a moment ago, so hardly ever: the file is the rejected text by now.
      this.#rejected = text;
      this.status.result = "rejected";
      this.status.error = reply.message;
      if (this.#newRejection(reply.message)) {
        this.#log({ level: "warn", msg: "bird configure failed", error: reply.message });
      }
      await this.#restoreAccepted(text);
    } else {
      // Shutting down, or gone mid-reply: the file holds the text for BIRD's next start, and the
      // retry has a BIRD that runs (or a restarted one) take it.
      this.#notTaken("configure", reply);
    }
  }

  /**
   * BIRD answered `step` without taking the config and without a verdict on it (`0006` while
   * shutting down, the connection closed mid-reply, a file it could not open): retried.
   */
  #notTaken(step: string, reply: ConfigureReply): void {
    const error = `BIRD did not take the config at '${step}' and found no fault in it ` +
      `(${reply.message}); ${this.#retryNote()}`;
    this.#noVerdict("failed", error, "bird reload not taken");
  }

  /** BIRD is down: check the candidate offline; a good one replaces the file BIRD will read. */
  async #applyOffline(candidate: string, text: string, why: string): Promise<void> {
    const parsed = await runCommand(
      this.#o.birdPath,
      ["-p", "-c", candidate],
      this.#o.commandTimeoutMs,
    );
    if (parsed.timedOut) {
      this.#timedOut("bird -p");
      return;
    }
    const judged = parseOfflineCheck(parsed);
    if (judged.rejected) {
      await this.#reject(candidate, text, parsed.text);
      return;
    }
    if (!judged.ok) {
      this.#failed(new Error(`bird -p exited with ${parsed.code}: ${parsed.text}`));
      return;
    }
    await Deno.rename(candidate, this.#o.configPath);
    this.#noVerdict("unreachable", why, "bird not reachable; config written for its start");
  }

  async #reject(candidate: string, text: string, message: string): Promise<void> {
    this.#rejected = text;
    await Deno.rename(candidate, `${this.#o.configPath}.rejected`).catch(() => {});
    this.status.lastAttempt = new Date().toISOString();
    this.status.result = "rejected";
    this.status.error = message;
    if (!this.#newRejection(message)) return;
    this.#log({
      level: "error",
      msg: "bird rejected the new config; the previous one stays active (the same error is " +
        "logged once until BIRD takes a config)",
      error: message,
      rejectedFile: `${this.#o.configPath}.rejected`,
    });
  }

  /**
   * BIRD refused at `configure` a text that had replaced bird.conf already: a BIRD restart would
   * fail on that file. The refused text goes to `bird.conf.rejected` (as a refused check's does)
   * and the last accepted one back to bird.conf; with none accepted yet, the log says so.
   */
  async #restoreAccepted(refused: string): Promise<void> {
    const { configPath } = this.#o;
    try {
      await this.#replaceFile(`${configPath}.rejected`, refused);
      if (this.#lastAccepted === undefined) {
        this.#log({
          level: "error",
          msg: "bird refused a config at 'configure' that bird.conf holds now, and no config " +
            "was accepted before to put back: a BIRD restart fails on this file until a config " +
            "is accepted",
          file: configPath,
          rejectedFile: `${configPath}.rejected`,
        });
        return;
      }
      await this.#replaceFile(configPath, this.#lastAccepted);
      this.#log({
        msg: "bird refused a config at 'configure' after its check passed: the last accepted " +
          "one is back in bird.conf",
        rejectedFile: `${configPath}.rejected`,
      });
    } catch (e) {
      this.#log({
        level: "error",
        msg: "cannot put the last accepted bird.conf back: a BIRD restart reads the refused one",
        error: String(e),
      });
    }
  }

  /** Replaces `path` with `text` whole (a temp file renamed over it), readable by root only. */
  async #replaceFile(path: string, text: string): Promise<void> {
    const temp = `${this.#o.configPath}.new`;
    // The config may carry BGP passwords: readable by root only.
    await Deno.writeTextFile(temp, text, { mode: 0o600 });
    await Deno.rename(temp, path);
  }

  /** Whether `error` was not logged since BIRD last took a config (and records it). */
  #newRejection(error: string): boolean {
    if (this.#loggedRejections.has(error)) return false;
    // Bounded: errors that differ every time (none BIRD gives so far) are logged all the same.
    if (this.#loggedRejections.size >= MAX_LOGGED_REJECTIONS) this.#loggedRejections.clear();
    this.#loggedRejections.add(error);
    return true;
  }

  /**
   * The config could not be written or moved (directory missing, disk full): BIRD keeps the
   * running one. Reported and retried; thrown on, it would end the agent (and CNI with it).
   */
  #failed(e: unknown): void {
    const error = `cannot apply ${this.#o.configPath}: ${(e as Error)?.message ?? e}; ` +
      this.#retryNote();
    this.#noVerdict("failed", error, "bird config not applied", "error");
  }

  /**
   * BIRD took the connection but did not answer in time (busy, or stopped): it judged nothing,
   * so this is no rejection. Reported and retried until BIRD answers.
   */
  #timedOut(step: string): void {
    const error = `BIRD did not answer '${step}' within ${this.#o.commandTimeoutMs} ms ` +
      `(busy or stopped); ${this.#retryNote()}`;
    this.#noVerdict("failed", error, "bird reload timed out");
  }

  /**
   * A reload BIRD gave no verdict on (`cause`): the status says so with `error`, the outage
   * counts one more round, and the retry is scheduled.
   */
  #noVerdict(
    result: "failed" | "unreachable",
    error: string,
    cause: string,
    level = "warn",
  ): void {
    this.status.lastAttempt = new Date().toISOString();
    this.status.result = result;
    this.status.error = error;
    this.#outageRound(cause, error, level);
    this.#retry();
  }

  /**
   * One more reload BIRD gave no verdict on (`cause` says why). Logged at the outage's start,
   * every 60th round and when the cause changes: a retry logging each time would fill the log
   * for as long as BIRD is down.
   */
  #outageRound(cause: string, error: string, level = "warn"): void {
    const changed = this.#outage.failures > 0 && cause !== this.#outageCause;
    this.#outageCause = cause;
    const retryInMs = this.#retryPauseMs(this.#outage.failures + 1);
    const logged = this.#outage.failed(error, { level, cause, retryInMs });
    if (changed && !logged) {
      this.#log({
        level,
        msg: `bird reload still failing, now: ${cause}`,
        failures: this.#outage.failures,
        error,
      });
    }
  }

  /** BIRD answered (took or judged a config): an outage is over, and logged as such. */
  #birdAnswered(): void {
    this.#outage.succeeded();
    this.#outageCause = undefined;
  }

  /**
   * One check of {@link BirdControlOptions.watchMs}: is the BIRD that took the config still
   * the one running? Skipped while a reload is pending, running or waiting for its retry.
   */
  async #probe(): Promise<void> {
    if (this.#probing) return;
    if (this.#waitingForBird) {
      this.#probing = true;
      await this.#retryNowIfBirdAnswers().finally(() => this.#probing = false);
      return;
    }
    if (!this.#settled) return;
    this.#probing = true;
    try {
      const id = await socketIdentity(this.#o.socketPath);
      const up = id !== undefined && await answers(this.#o.socketPath);
      // A reload may have started while the socket was looked at: it decides, not this probe.
      if (!this.#settled) return;
      if (up && (this.#socketId === undefined || id === this.#socketId)) {
        this.#socketId ??= id;
        return;
      }
      // Down, or restarted on whatever bird.conf it found: apply the wanted config again.
      this.#accepted = undefined;
      this.#socketId = undefined;
      if (!up) {
        this.status.lastAttempt = new Date().toISOString();
        this.status.result = "unreachable";
        this.status.error = `BIRD's control socket ${this.#o.socketPath} does not answer`;
        this.#log({ level: "warn", msg: "bird is down", error: this.status.error });
        this.#notify();
      } else {
        this.#log({ level: "warn", msg: "bird restarted; applying the config again" });
      }
      this.#pending = true;
      this.#schedule(0);
    } finally {
      this.#probing = false;
    }
  }

  /** A retry waits (backed off) after BIRD's control socket did not answer. */
  get #waitingForBird(): boolean {
    return !this.#closed && this.#retryTimer !== undefined && !this.#running &&
      this.status.result === "unreachable";
  }

  /**
   * While BIRD was not reachable: its control socket answering again (BIRD started) brings the
   * waiting retry forward, so the backoff spares `birdc` and `bird -p` runs while BIRD is down
   * without delaying the config once it is back. Only for an unreachable BIRD: one that accepts
   * connections but does not answer (stopped, busy) would bring every retry forward.
   */
  async #retryNowIfBirdAnswers(): Promise<void> {
    if (!await answers(this.#o.socketPath)) return;
    // A retry may have run meanwhile: it decides, not this probe.
    if (!this.#waitingForBird) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#pending = true;
    this.#schedule(0);
  }

  /** Open, BIRD runs the wanted config, and no reload is pending, running or waiting to retry. */
  get #settled(): boolean {
    return !this.#closed && this.status.result === "ok" && !this.#pending && !this.#running &&
      this.#retryTimer === undefined;
  }

  #notify(): void {
    try {
      this.#onAttempt({ ...this.status });
    } catch (e) {
      this.#log({ level: "error", msg: "bird reload hook failed", error: String(e) });
    }
  }

  /** Schedules the next try after an outage round (the pause grows with the outage's rounds). */
  #retry(): void {
    if (this.#closed) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      if (this.#wanted === undefined) return;
      this.#pending = true;
      this.#schedule(0);
    }, this.#retryPauseMs(this.#outage.failures));
    Deno.unrefTimer(this.#retryTimer);
  }

  /** The pause before the retry after `failures` (≥ 1) reloads in a row BIRD gave no verdict on. */
  #retryPauseMs(failures: number): number {
    const { retryMs, retryMaxMs } = this.#o;
    return backoffMs(failures, retryMs, Math.max(retryMs, retryMaxMs));
  }

  /** What a status error says of the retry the round being recorded schedules. */
  #retryNote(): string {
    return `retrying in ${this.#retryPauseMs(this.#outage.failures + 1)} ms (backing off)`;
  }

  async #birdc(command: string[]): Promise<ConfigureReply> {
    // -v: BIRD's reply codes, which tell a verdict on the config from a reload BIRD never judged.
    const out = await runCommand(
      this.#o.birdcPath,
      ["-v", "-s", this.#o.socketPath, ...command],
      this.#o.commandTimeoutMs,
    );
    return parseConfigureReply(out.code, out.text, out.timedOut);
  }
}

/**
 * Identifies a control socket file (inode and change time): BIRD unlinks and binds it anew at
 * every start. Undefined when there is none.
 */
async function socketIdentity(path: string): Promise<string | undefined> {
  try {
    const st = await Deno.lstat(path);
    return `${st.dev}:${st.ino}:${st.ctime?.getTime() ?? st.mtime?.getTime()}`;
  } catch {
    return undefined;
  }
}

/** Whether something accepts connections on the unix socket (BIRD greets; nothing is sent). */
async function answers(path: string): Promise<boolean> {
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/** One BGP session as `birdc show protocols all` reports it. */
export interface BgpSession {
  /** BIRD's protocol name (`peer_10_0_0_1`, `mesh_fd00_a__12`). */
  name: string;
  /** `up`, `start`, `down`, ... (BIRD's protocol state). */
  state: string;
  /** The BGP state (`Established`, `Active`, `Idle`, `Connect`, ...). */
  bgpState: string;
  established: boolean;
  neighborAddress?: string;
  neighborAs?: number;
  localAs?: number;
  /** When the protocol entered its state; needs `timeformat protocol iso long`. */
  since?: Date;
  /** Seconds in the current state, at the time of the call. */
  uptimeSeconds?: number;
  /** The info column (`Established`, or an error such as `Socket: Connection refused`). */
  info: string;
}

const ISO_LONG = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?$/;

/** Parses `birdc show protocols all` output into its BGP sessions. */
export function parseShowProtocols(text: string, now = new Date()): BgpSession[] {
  const sessions: BgpSession[] = [];
  let current: BgpSession | undefined;
  for (const line of text.split("\n")) {
    if (line === "" || /^BIRD [\d.]+ ready\.$/.test(line) || /^Name\s+Proto\s+Table/.test(line)) {
      continue;
    }
    if (!/^\s/.test(line)) {
      current = undefined;
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4 || cols[1] !== "BGP") continue;
      const [name, , , state, ...rest] = cols;
      let since: Date | undefined;
      let info = rest;
      if (rest.length >= 2 && ISO_LONG.test(`${rest[0]} ${rest[1]}`)) {
        const m = ISO_LONG.exec(`${rest[0]} ${rest[1]}`)!;
        // BIRD prints local time.
        since = new Date(
          +m[1],
          +m[2] - 1,
          +m[3],
          +m[4],
          +m[5],
          +m[6],
          m[7] ? +m[7].padEnd(3, "0") : 0,
        );
        info = rest.slice(2);
      }
      current = {
        name,
        state,
        bgpState: info[0] ?? "",
        established: false,
        info: info.join(" "),
      };
      if (since) {
        current.since = since;
        current.uptimeSeconds = Math.max(0, Math.round((now.getTime() - since.getTime()) / 1000));
      }
      sessions.push(current);
      continue;
    }
    if (!current) continue;
    const kv = /^\s+([A-Za-z ]+?):\s+(.*)$/.exec(line);
    if (!kv) continue;
    const [, key, value] = kv;
    if (key === "BGP state") current.bgpState = value.trim();
    else if (key === "Neighbor address") current.neighborAddress = value.trim().split("%")[0];
    else if (key === "Neighbor AS") current.neighborAs = Number(value);
    else if (key === "Local AS") current.localAs = Number(value);
  }
  for (const s of sessions) s.established = s.bgpState === "Established";
  return sessions;
}

/**
 * The BGP sessions of the BIRD behind `ctlPath` (`birdc -s ctlPath show protocols all`).
 * Throws when BIRD cannot be asked.
 */
export async function bgpSessions(
  ctlPath: string,
  opts: { birdcPath?: string; timeoutMs?: number } = {},
): Promise<BgpSession[]> {
  const out = await runCommand(
    opts.birdcPath ?? "birdc",
    ["-s", ctlPath, "show", "protocols", "all"],
    opts.timeoutMs ?? 10_000,
  );
  if (out.code !== 0) throw new Error(`birdc show protocols failed: ${out.text}`);
  return parseShowProtocols(out.text);
}
