/**
 * Creating (or tightening) a root-only file without ever following a symbolic link: the open is
 * `O_NOFOLLOW` and the mode is set on the open descriptor (`fchmod`), never by path, so a link
 * planted at the name cannot redirect the create or the chmod to another file.
 *
 * The calls go through flock's libc binding (netlink/ffi.ts), not `node:fs`: importing `node:fs`
 * loads Deno's Node file-system layer, 1.25 MiB of live V8 heap the agent would keep for its
 * whole life for three calls at start-up (docs/benchmarks.md, "Memory").
 *
 * @module
 */

import {
  closeFd,
  ELOOP,
  fchmodFd,
  fstatFd,
  O_CLOEXEC,
  O_CREAT,
  O_NOFOLLOW,
  O_NONBLOCK,
  O_RDWR,
  openPath,
  S_IFMT,
  S_IFREG,
  SyscallError,
} from "../netlink/ffi.ts";
import { currentUid, UnsafePathError } from "./safe_path.ts";

/**
 * Makes sure `path` is a regular file of this process's user with exactly `mode`, creating it
 * empty when missing.
 *
 * @throws {UnsafePathError} when `path` is a symbolic link, not a regular file or someone
 *   else's
 */
export function ensurePrivateFileSync(path: string, mode = 0o600, uid = currentUid()): void {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO planted at the name must not hang the open.
    fd = openPath(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode);
  } catch (e) {
    if (e instanceof SyscallError && e.errno === ELOOP) {
      throw new UnsafePathError(
        `refusing ${path}: it is a symbolic link; flock never follows or replaces it`,
      );
    }
    throw e;
  }
  try {
    // The open file itself, not whatever the name points to by now.
    const st = fstatFd(fd);
    if ((st.mode & S_IFMT) !== S_IFREG) {
      throw new UnsafePathError(`refusing ${path}: it is not a regular file`);
    }
    if (st.uid !== (uid ?? 0)) {
      throw new UnsafePathError(`refusing ${path}: it belongs to uid ${st.uid}, not to flock`);
    }
    if ((st.mode & 0o7777) !== mode) fchmodFd(fd, mode);
  } finally {
    closeFd(fd);
  }
}
