/**
 * Where flock creates files as root (state database, RPC socket, the plugin's log): a
 * directory that someone else can write to lets them plant a symbolic link at the name flock
 * is about to create, chmod or append to, and so make root write or chmod a file of their
 * choosing. These checks refuse such a directory before anything is created in it.
 *
 * The plugin's exec path imports this module, so it imports nothing.
 *
 * @module
 */

/** A path flock refuses to create files in or write to; the message names the path. */
export class UnsafePathError extends Error {
  override name = "UnsafePathError";
}

/**
 * The process's effective uid, or undefined where asking is not permitted (the bundled plugin
 * runs without `--allow-sys`; then only root-owned directories count as safe).
 */
export function currentUid(): number | undefined {
  try {
    return Deno.uid() ?? undefined;
  } catch {
    return undefined;
  }
}

/** The owner and mode bits of a directory, as `Deno.stat` reports them. */
export interface DirOwnership {
  uid: number | null;
  mode: number | null;
}

/**
 * Why files must not be created in a directory with this owner and mode, or undefined when it
 * is safe: owned by root or by `uid`, and writable by nobody else unless sticky (as /tmp, where
 * others can add names but never remove or replace ours).
 */
export function unsafeDirReason(dir: DirOwnership, uid: number | undefined): string | undefined {
  const owner = dir.uid;
  if (owner !== null && owner !== 0 && owner !== uid) {
    return `owned by uid ${owner}, not by root${uid ? ` or uid ${uid}` : ""}`;
  }
  const mode = dir.mode ?? 0;
  const sticky = (mode & 0o1000) !== 0;
  if ((mode & 0o022) !== 0 && !sticky) {
    const who = (mode & 0o002) !== 0 ? "others" : "its group";
    return `writable by ${who} (mode ${(mode & 0o7777).toString(8).padStart(4, "0")}) ` +
      "without the sticky bit";
  }
  return undefined;
}

/** The parent of an absolute, normalised path ("/" for "/"). */
function parentOf(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}

/** How {@link assertSafeDirSync} judges the directories above the one it checks. */
export interface SafeDirOptions {
  /**
   * Accept an ancestor owned by root that only its group may write, as Ubuntu's /var/log
   * (0775 root:syslog) under the plugin's log directory: root gave that group the ancestor's
   * names, and the directory itself must still be flock's alone. Only for a caller that checks
   * what it opened (the log verifies an existing file's inode after opening it).
   */
  rootGroupWritableAncestors?: boolean;
}

/**
 * Throws {@link UnsafePathError} unless `dir` and every directory above it (after resolving
 * symlinks) pass {@link unsafeDirReason}: whoever may rename an ancestor may swap the whole
 * subtree. `what` names the directory's role in the message (e.g. "state directory").
 */
export function assertSafeDirSync(
  dir: string,
  what: string,
  uid = currentUid(),
  options: SafeDirOptions = {},
): void {
  const real = Deno.realPathSync(dir);
  for (let path = real;; path = parentOf(path)) {
    const info = Deno.statSync(path);
    const reason = path !== real && options.rootGroupWritableAncestors &&
        isRootOwnedGroupWritable(info)
      ? undefined
      : unsafeDirReason(info, uid);
    if (reason) {
      const where = path === real ? `${dir} is` : `${dir} lies under ${path}, which is`;
      throw new UnsafePathError(
        `refusing ${what} ${dir}: ${where} ${reason}, so another user could plant a symbolic ` +
          "link where flock creates its files (make it owned by root, mode 0755 or tighter)",
      );
    }
    if (path === "/") return;
  }
}

/** Owned by root and writable by its group but not by others (mode 0775 and the like). */
function isRootOwnedGroupWritable(dir: DirOwnership): boolean {
  const mode = dir.mode ?? 0;
  return dir.uid === 0 && (mode & 0o002) === 0;
}

/**
 * Throws {@link UnsafePathError} when `path` exists but is a symbolic link or another kind than
 * `kind`, or belongs to someone else; returns what lstat(2) said of it, or undefined when it does
 * not exist. Never follows a link.
 */
export function checkOwnEntrySync(
  path: string,
  kind: "file" | "socket",
  uid = currentUid(),
): Deno.FileInfo | undefined {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  const isKind = kind === "file" ? info.isFile : info.isSocket === true;
  if (!isKind) {
    const is = info.isSymlink
      ? "a symbolic link"
      : `not a ${kind === "file" ? "regular file" : kind}`;
    throw new UnsafePathError(`refusing ${path}: it is ${is}; flock never follows or replaces it`);
  }
  if (info.uid !== null && info.uid !== (uid ?? 0)) {
    throw new UnsafePathError(`refusing ${path}: it belongs to uid ${info.uid}, not to flock`);
  }
  return info;
}
