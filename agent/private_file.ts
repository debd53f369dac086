/**
 * Creating (or tightening) a root-only file without ever following a symbolic link: the open is
 * `O_NOFOLLOW` and the mode is set on the open descriptor (`fchmod`), never by path, so a link
 * planted at the name cannot redirect the create or the chmod to another file.
 *
 * @module
 */

import { closeSync, constants, fchmodSync, fstatSync, openSync } from "node:fs";
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
    fd = openSync(
      path,
      constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK,
      mode,
    );
  } catch (e) {
    if ((e as { code?: string }).code === "ELOOP") {
      throw new UnsafePathError(
        `refusing ${path}: it is a symbolic link; flock never follows or replaces it`,
      );
    }
    throw e;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) {
      throw new UnsafePathError(`refusing ${path}: it is not a regular file`);
    }
    if (st.uid !== (uid ?? 0)) {
      throw new UnsafePathError(`refusing ${path}: it belongs to uid ${st.uid}, not to flock`);
    }
    if ((st.mode & 0o7777) !== mode) fchmodSync(fd, mode);
  } finally {
    closeSync(fd);
  }
}
