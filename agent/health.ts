/**
 * What a CNI call would meet right now, for `/readyz` (and `/healthz`): the agent's socket is
 * still the one it listens on, the store's database file is still the one it has open, and the
 * last store write did not fail.
 *
 * - The socket file can be deleted or replaced at runtime (a cleanup script, a second agent
 *   started by hand): the agent still listens on its now nameless socket, and every CNI call
 *   fails to connect. The socket is not re-created in-process: a deleted socket makes
 *   `/healthz` fail too, so the kubelet restarts the agent, which binds it again at start (a
 *   restart keeps pods and, with graceful restart, routes); a socket replaced by another live
 *   one is left to its owner and only reported, as a restart could not bind it either.
 * - A deleted or replaced `flock.db` goes unnoticed by SQLite: it keeps writing to the unlinked
 *   inode, and every allocation since is lost at the next start. Two `lstat`s per probe find
 *   both cases without touching the database (no fsync per probe).
 * - A write that failed (disk full, read-only file system) is remembered until a later one
 *   succeeds.
 *
 * @module
 */

/**
 * The identity of a file: what stays the same while it is the same file. The birth time is
 * part of it because a file system reuses a freed inode number at once: a file deleted and
 * created again often has the same `ino`.
 */
export interface FileIdentity {
  dev: number;
  ino: number;
  /** ms since the epoch; null where the file system does not keep it. */
  born: number | null;
}

/** `path`'s identity (not following a symlink), or undefined when it does not exist. */
export function fileIdentity(path: string): FileIdentity | undefined {
  try {
    const st = Deno.lstatSync(path);
    return { dev: st.dev, ino: st.ino ?? 0, born: st.birthtime?.getTime() ?? null };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** Whether `error` is one SQLite raised (node:sqlite tags them `ERR_SQLITE_ERROR`). */
export function isStoreError(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === "ERR_SQLITE_ERROR";
}

/** How a file being watched differs from the one that was opened, if it does. */
function drift(path: string, opened: FileIdentity, what: string): string | undefined {
  let now: FileIdentity | undefined;
  try {
    now = fileIdentity(path);
  } catch (e) {
    return `${what} ${path} cannot be checked: ${(e as Error).message}`;
  }
  if (!now) return `${what} ${path} was deleted`;
  if (now.dev !== opened.dev || now.ino !== opened.ino || now.born !== opened.born) {
    return `${what} ${path} was replaced by another file`;
  }
  return undefined;
}

/** The agent's runtime health; see the module doc. */
export class RuntimeHealth {
  #socket?: { path: string; id: FileIdentity };
  #store?: { path: string; id: FileIdentity };
  #lastWriteFailure?: string;

  /** Records the socket the agent listens on (right after it bound it). */
  socketBound(path: string): void {
    const id = fileIdentity(path);
    this.#socket = id && { path, id };
  }

  /** Records the database file the store has open. */
  storeOpened(path: string): void {
    const id = fileIdentity(path);
    this.#store = id && { path, id };
  }

  /** A store write failed with `error`. */
  writeFailed(error: unknown): void {
    this.#lastWriteFailure = (error as Error)?.message ?? String(error);
  }

  /** Whether the last store write failed (the release sweep then probes for recovery). */
  get writeFailing(): boolean {
    return this.#lastWriteFailure !== undefined;
  }

  /** A store write went through: an earlier failure is over. */
  writeSucceeded(): void {
    this.#lastWriteFailure = undefined;
  }

  /** Why a CNI call would fail now, or undefined; two `lstat`s, no database access. */
  problem(): string | undefined {
    const socket = this.#socket && drift(this.#socket.path, this.#socket.id, "the agent's socket");
    if (socket) return `${socket}; CNI calls cannot reach the agent`;
    const store = this.#store && drift(this.#store.path, this.#store.id, "the store's database");
    if (store) return `${store}; what the agent writes now would be lost at its next start`;
    if (this.#lastWriteFailure !== undefined) {
      return `the last store write failed: ${this.#lastWriteFailure}`;
    }
    return undefined;
  }

  /**
   * Why the process should be restarted, or undefined: its socket is gone, which only a restart
   * (binding it again) repairs.
   */
  fatalProblem(): string | undefined {
    if (!this.#socket) return undefined;
    let now: FileIdentity | undefined;
    try {
      now = fileIdentity(this.#socket.path);
    } catch {
      return undefined;
    }
    return now ? undefined : `the agent's socket ${this.#socket.path} was deleted`;
  }
}
