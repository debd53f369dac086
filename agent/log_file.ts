/**
 * The plugin's own log file (`logFile` in the netconf): one JSON line appended per exec, on the
 * exec path of every pod start, so it stays a handful of syscalls. Bounded by one generation:
 * once the file reaches {@link LOG_ROTATE_BYTES} it is renamed to `<name>.1` (replacing the
 * previous one) and the next exec starts a new file. Root appends here, so a symbolic link at
 * the name or a directory others may write to is refused.
 *
 * @module
 */

import { writeAllSync } from "./bytes.ts";
import { assertSafeDirSync, checkOwnEntrySync, UnsafePathError } from "./safe_path.ts";

/** Size at which the log is rotated to `<name>.1`: at most about twice this on disk. */
export const LOG_ROTATE_BYTES = 10 * 1024 * 1024;

/**
 * Appends `line` (with its newline) to `path`, creating the file (0600) and a missing directory
 * (0700), then rotates the file if it has reached `maxBytes`.
 *
 * @throws {UnsafePathError} for a link or foreign file at `path` or an unsafe directory
 */
export function appendLogLineSync(path: string, line: string, maxBytes = LOG_ROTATE_BYTES): void {
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  // A regular file of ours, or missing: what it was is compared with what gets opened below.
  const checked = checkOwnEntrySync(path, "file");
  if (!checked) Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  // A group-writable root ancestor (Ubuntu's /var/log, 0775 root:syslog) is accepted: the
  // inode check below catches a file swapped in through it before anything is written.
  assertSafeDirSync(dir, "log directory", undefined, { rootGroupWritableAncestors: true });
  // A new file is created O_EXCL, which never follows a link planted since the check.
  using file = Deno.openSync(
    path,
    checked ? { append: true } : { append: true, createNew: true, mode: 0o600 },
  );
  const opened = file.statSync();
  if (checked && (opened.dev !== checked.dev || opened.ino !== checked.ino)) {
    throw new UnsafePathError(`refusing ${path}: it was replaced while flock opened it`);
  }
  writeAllSync(file, new TextEncoder().encode(line));
  const { size, ino } = file.statSync();
  // Only the file this exec wrote: a concurrent exec may have rotated it already, and renaming
  // its successor would drop the generation just rotated.
  if (size >= maxBytes && Deno.lstatSync(path).ino === ino) Deno.renameSync(path, `${path}.1`);
}
