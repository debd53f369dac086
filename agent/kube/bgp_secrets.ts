/**
 * BGP peer passwords kept in Secrets (cluster mode): a peer of the NodeConfig may name
 * `passwordSecretRef: {name, key}` instead of giving `password`, so that the password is not
 * readable by everyone who can read NodeConfigs. The Secret lives in the agent's own namespace.
 *
 * The agent reads each referenced Secret with a GET when its NodeConfig is applied (before
 * bird.conf is rendered) and then again every {@link SECRET_REFRESH_MS}, or every
 * {@link SECRET_RETRY_MS} while one is unavailable (backing off, up to the refresh period, while
 * the only problems are Secrets whose passwords are kept). A periodic GET rather than a watch: a GET
 * by name needs only `get` on secrets, while a watch needs `list` and `watch`, which RBAC cannot
 * narrow to the names an operator picks, so the agent could enumerate and stream every Secret
 * of its namespace (kube-system holds the cluster's most sensitive ones). The cost is one small
 * GET per referenced Secret per node per minute, and a rotated password reaches BIRD within a
 * minute (TCP MD5 has no hitless rotation anyway: both ends must change).
 *
 * A Secret or key that is missing, unreadable or unusable leaves its peers out of bird.conf
 * (never rendered with no password), is reported (one error line when it starts, a condition in
 * the NodeConfig status) and comes back on its own once it is fixed. While the API server cannot
 * be reached, the passwords last read stay in force: an outage must not drop a BGP session.
 * The same holds while a Secret that was read cannot be read any more (deleted, as in a rotation
 * by delete + create or by mistake, or forbidden): nothing says the router's side changed, so the
 * peers keep the password last read, and this is reported (a warning line, the condition) until
 * the Secret is back: the Secret is read again {@link SECRET_RETRY_MS} later, then after twice
 * as long each time, up to {@link SECRET_REFRESH_MS} (a Secret deleted for good costs no more
 * GETs than one that is there, and a rotation by delete + create within seconds is still seen
 * within seconds; with no watch, a longer cap would delay a recreated Secret's new password by
 * as much). Only what a Secret that exists says (a key removed, an unusable value) takes
 * a password away. A password kept this way lives in memory only: an agent restart while the
 * Secret is gone leaves the peer out.
 *
 * Passwords never leave this module except to the routing layer: no log line, status field or
 * metric carries one.
 *
 * @module
 */

import {
  bgpPasswordFault,
  MAX_BGP_PASSWORD_BYTES,
  type NodeConfig,
  secretKeyId,
  type SecretKeyRef,
} from "../config.ts";
import { describeApiError, httpStatusOf } from "./api.ts";
import { backoffMs } from "../backoff.ts";

/** How often the referenced Secrets are read again when all of them were usable. */
export const SECRET_REFRESH_MS = 60_000;

/** How often while one of them is not (a Secret created after the NodeConfig). */
export const SECRET_RETRY_MS = 5_000;

/** One referenced key that has no usable password now. */
export interface PasswordProblem {
  /** `namespace/name` of the Secret. */
  secret: string;
  key: string;
  /** The addresses of the peers left out of bird.conf because of it. */
  peers: string[];
  /** What is wrong, for a human (never the value). */
  reason: string;
  /** The peers run on the password last read (the Secret could not be read), not left out. */
  kept: boolean;
}

/** Reads the `data` of one Secret (base64 values); a missing one throws with status 404. */
export type ReadSecret = (namespace: string, name: string) => Promise<Record<string, string>>;

/** Options of {@link BgpSecrets}. */
export interface BgpSecretsOptions {
  /** The agent's namespace, where the Secrets are; undefined when unknown. */
  namespace: string | undefined;
  readSecret: ReadSecret;
  /** Called after a periodic read changed the passwords or the problems. */
  onChange: () => void;
  log: (fields: Record<string, unknown>) => void;
  refreshMs?: number;
  retryMs?: number;
}

/** A referenced key and the peers that use it. */
interface RefUse {
  ref: SecretKeyRef;
  peers: string[];
}

/**
 * The `passwordSecretRef`s of one or more configs, by {@link secretKeyId}, with the peers using
 * each (a peer named by two configs is listed once).
 */
export function secretRefsOf(...configs: (NodeConfig | undefined)[]): Map<string, RefUse> {
  const out = new Map<string, RefUse>();
  for (const peer of configs.flatMap((c) => c?.spec.bgp?.peers ?? [])) {
    const ref = peer.passwordSecretRef;
    if (!ref) continue;
    const id = secretKeyId(ref);
    const use = out.get(id) ?? { ref, peers: [] };
    if (!use.peers.includes(peer.address)) use.peers.push(peer.address);
    out.set(id, use);
  }
  return out;
}

/**
 * The password under `key` of a Secret's `data`, or why there is none usable. Messages never
 * contain the value.
 */
export function decodePassword(
  data: Record<string, string>,
  key: string,
): { password: string } | { problem: string } {
  const encoded = data[key];
  if (encoded === undefined) return { problem: `the Secret has no key "${key}"` };
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
  } catch {
    return { problem: `key "${key}" is not valid base64` };
  }
  let password: string;
  try {
    password = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return { problem: `key "${key}" is not UTF-8 text` };
  }
  switch (bgpPasswordFault(password)) {
    case "empty":
      return { problem: `key "${key}" is empty` };
    case "characters":
      return {
        problem: `key "${key}" contains a quote, backslash, line break or NUL (created from a ` +
          `file that ends in a newline?)`,
      };
    case "length":
      return { problem: `key "${key}" is longer than ${MAX_BGP_PASSWORD_BYTES} bytes` };
  }
  return { password };
}

/** The `BGPPasswordsAvailable` condition (without times), or undefined when no peer uses one. */
export function passwordCondition(
  refs: number,
  problems: readonly PasswordProblem[],
): { type: string; status: "True" | "False"; reason: string; message: string } | undefined {
  if (refs === 0) return undefined;
  if (problems.length === 0) {
    return {
      type: "BGPPasswordsAvailable",
      status: "True",
      reason: "PasswordsAvailable",
      message: `every BGP password referenced by passwordSecretRef (${refs}) was read`,
    };
  }
  return {
    type: "BGPPasswordsAvailable",
    status: "False",
    // A program can tell "sessions at risk on a restart" from "peers down now".
    reason: problems.every((p) => p.kept) ? "LastPasswordKept" : "BGPPasswordUnavailable",
    message: problems.map(describeProblem).join("; "),
  };
}

/** One problem as a sentence naming the Secret, the key and what became of its peers. */
export function describeProblem(p: PasswordProblem): string {
  const outcome = p.kept
    ? "keeps the password last read (an agent restart would leave it out)"
    : "left out of BIRD's config";
  return `secret ${p.secret} key "${p.key}": ${p.reason}; peer ${p.peers.join(", ")} ${outcome}`;
}

function sameMap(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

/** The passwords of the peers' Secrets, kept current; see the module doc. */
export class BgpSecrets {
  #refs = new Map<string, RefUse>();
  #passwords: ReadonlyMap<string, string> = new Map();
  #problems: PasswordProblem[] = [];
  #timer?: ReturnType<typeof setTimeout>;
  #chain: Promise<void> = Promise.resolve();
  #stopped = false;
  /** Consecutive reads whose only problems were kept passwords (their Secrets gone). */
  #keptOnlyReads = 0;

  constructor(readonly options: BgpSecretsOptions) {}

  /** The usable passwords, by {@link secretKeyId}: hand these to the routing layer only. */
  get passwords(): ReadonlyMap<string, string> {
    return this.#passwords;
  }

  /** The referenced keys without a usable password now. */
  get problems(): readonly PasswordProblem[] {
    return this.#problems;
  }

  /** How many distinct keys the config references. */
  get referenced(): number {
    return this.#refs.size;
  }

  /**
   * Follows the references of `config` (the config about to be applied) and reads them now;
   * resolves once {@link passwords} and {@link problems} are current for it. Does not call
   * `onChange`: the caller applies the result together with the config.
   *
   * `inForce`, while a change from it to `config` is being applied, is followed too: the agent
   * renders bird.conf from whichever of the two is in force, and leaves out a peer whose
   * password it lacks. Once the change resolves, call this again with the config then in force
   * alone.
   */
  use(config: NodeConfig | undefined, inForce?: NodeConfig): Promise<void> {
    this.#refs = secretRefsOf(config, inForce);
    return this.#read(false);
  }

  /** Stops the periodic reads. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  #read(notify: boolean): Promise<void> {
    const run = this.#chain.then(() => this.#readAll(notify));
    this.#chain = run.catch(() => {});
    return run;
  }

  async #readAll(notify: boolean): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#stopped) return;
    const { namespace, readSecret } = this.options;
    const byName = new Map<string, RefUse[]>();
    for (const use of this.#refs.values()) {
      byName.set(use.ref.name, [...byName.get(use.ref.name) ?? [], use]);
    }
    const passwords = new Map<string, string>();
    const problems: PasswordProblem[] = [];
    for (const [name, uses] of byName) {
      let data: Record<string, string> | undefined;
      let failure: string | undefined;
      /** The Secret could not be read: nothing says its password changed. */
      let unread = false;
      /** ... because the API server is away (its informers report that). */
      let transient = false;
      if (namespace === undefined) {
        failure = "the agent does not know its namespace (set POD_NAMESPACE)";
      } else {
        try {
          data = await readSecret(namespace, name);
        } catch (e) {
          const status = httpStatusOf(e);
          unread = true;
          if (status === 404) failure = "the Secret does not exist";
          else if (status === 403) {
            failure = "reading it is forbidden (the agent's Role needs get on secrets)";
          } else {
            transient = true;
            failure = `cannot read it: ${describeApiError(e)}`;
          }
        }
      }
      for (const use of uses) {
        const id = secretKeyId(use.ref);
        const known = this.#passwords.get(id);
        // The API server is away, or the Secret is (deleted, forbidden): keep the session
        // running on what was read before. An outage is not this module's to report.
        if (unread && known !== undefined) {
          passwords.set(id, known);
          if (!transient) {
            problems.push({
              secret: `${namespace}/${name}`,
              key: use.ref.key,
              peers: use.peers,
              reason: failure!,
              kept: true,
            });
          }
          continue;
        }
        let reason = failure;
        if (data) {
          const r = decodePassword(data, use.ref.key);
          if ("password" in r) passwords.set(id, r.password);
          else reason = r.problem;
        }
        if (reason !== undefined) {
          problems.push({
            secret: `${namespace ?? "?"}/${name}`,
            key: use.ref.key,
            peers: use.peers,
            reason,
            kept: false,
          });
        }
      }
    }
    if (this.#stopped) return;
    const changed = this.#report(passwords, problems);
    this.#passwords = passwords;
    this.#problems = problems;
    const keptOnly = problems.length > 0 && problems.every((p) => p.kept);
    this.#keptOnlyReads = keptOnly ? this.#keptOnlyReads + 1 : 0;
    if (this.#refs.size > 0) {
      const { refreshMs = SECRET_REFRESH_MS, retryMs = SECRET_RETRY_MS } = this.options;
      // Peers left out retry at the short period (the Secret may be created any moment); peers
      // running on a kept password lose nothing by a slower look, so it backs off.
      const delayMs = problems.length === 0
        ? refreshMs
        : keptOnly
        ? backoffMs(this.#keptOnlyReads, retryMs, Math.max(retryMs, refreshMs))
        : retryMs;
      this.#timer = setTimeout(() => {
        this.#read(true).catch((e) => {
          this.options.log({
            level: "error",
            msg: "BGP password refresh failed",
            error: String(e),
          });
        });
      }, delayMs);
    }
    if (notify && changed) this.options.onChange();
  }

  /** Logs what changed (never a value); whether anything did. */
  #report(passwords: ReadonlyMap<string, string>, problems: PasswordProblem[]): boolean {
    const { log } = this.options;
    const before = new Map(this.#problems.map((p) => [`${p.secret}/${p.key}`, p]));
    for (const p of problems) {
      const old = before.get(`${p.secret}/${p.key}`);
      if (old?.reason === p.reason && old.peers.join() === p.peers.join() && old.kept === p.kept) {
        continue;
      }
      log({
        level: p.kept ? "warn" : "error",
        msg: p.kept
          ? "BGP password Secret unavailable; its peers keep the password last read"
          : "BGP password unavailable; its peers are left out of BIRD's config",
        secret: p.secret,
        key: p.key,
        peers: p.peers,
        reason: p.reason,
      });
    }
    const unavailable = new Set(problems.map((p) => `${p.secret}/${p.key}`));
    for (const [id, value] of passwords) {
      const ref = this.#refs.get(id)?.ref;
      if (!ref) continue;
      const secret = `${this.options.namespace}/${ref.name}`;
      // A kept password is still a problem: not "available" until its Secret is read again.
      if (unavailable.has(`${secret}/${ref.key}`)) continue;
      const old = this.#passwords.get(id);
      if (before.has(`${secret}/${ref.key}`)) {
        log({ level: "info", msg: "BGP password available", secret, key: ref.key });
      } else if (old !== undefined && old !== value) {
        log({ level: "info", msg: "BGP password changed", secret, key: ref.key });
      }
    }
    return !sameMap(passwords, this.#passwords) ||
      JSON.stringify(problems) !== JSON.stringify(this.#problems);
  }
}
