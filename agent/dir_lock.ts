/**
 * An exclusive flock(2) on a directory itself (so nothing is left in a CNI bin dir), taken with
 * LOCK_NB and retried until a deadline: Deno's `FsFile.lock` blocks a thread until the lock is
 * free and cannot be abandoned, so an install stuck behind another one would wait forever.
 *
 * @module
 */

import {
  closeFd,
  EAGAIN,
  EINTR,
  flockFd,
  O_CLOEXEC,
  O_DIRECTORY,
  O_RDONLY,
  openPath,
  SyscallError,
} from "../netlink/ffi.ts";

const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
const O_RDONLY_DIRECTORY_CLOEXEC = O_RDONLY | O_DIRECTORY | O_CLOEXEC;

/** Bound on waiting for another install's lock unless told otherwise. */
export const DEFAULT_DIR_LOCK_TIMEOUT_MS = 30_000;

/** Another process held the directory's lock for the whole bound. */
export class DirLockTimeoutError extends Error {
  override name = "DirLockTimeoutError";
}

/** Options of {@link lockDirectory}. */
export interface DirLockOptions {
  /** How long to wait for another holder; default {@link DEFAULT_DIR_LOCK_TIMEOUT_MS}. */
  timeoutMs?: number;
  /** Pause between tries. */
  pollMs?: number;
}

/**
 * Takes an exclusive flock(2) of `dir`, retrying while someone else holds it; dispose the result
 * to release it.
 *
 * @throws {DirLockTimeoutError} when it is still held after `timeoutMs`
 * @throws {SyscallError} when `dir` cannot be opened (missing, not a directory)
 */
export async function lockDirectory(dir: string, opts: DirLockOptions = {}): Promise<Disposable> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_DIR_LOCK_TIMEOUT_MS;
  const pollMs = opts.pollMs ?? 100;
  const fd = openPath(dir, O_RDONLY_DIRECTORY_CLOEXEC);
  const deadline = performance.now() + timeoutMs;
  try {
    for (;;) {
      const code = flockFd(fd, LOCK_EX | LOCK_NB);
      if (code === 0) break;
      if (code !== EAGAIN && code !== EINTR) throw new SyscallError("flock", code, dir);
      if (performance.now() >= deadline) {
        throw new DirLockTimeoutError(
          `another flock install holds the lock on ${dir} (flock(2) of the directory) and did ` +
            `not let go within ${timeoutMs / 1000} s; let it finish, or find the process ` +
            "holding it (lslocks lists it) and stop it",
        );
      }
      await new Promise((resolve) => setTimeout(resolve, pollMs));
    }
  } catch (e) {
    closeFd(fd);
    throw e;
  }
  return {
    [Symbol.dispose]() {
      flockFd(fd, LOCK_UN);
      closeFd(fd);
    },
  };
}
