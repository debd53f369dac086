/**
 * Whether two paths name the same file once links are followed, by device and inode. Two paths
 * to one network namespace often differ as strings (`/var/run/netns/x` and `/run/netns/x`
 * through the /var/run symlink, a second bind mount, `/proc/<pid>/ns/net`) but resolve to the
 * same nsfs inode.
 *
 * @module
 */

/** What identifies a file on this host: its device and inode. */
export interface StatIdentity {
  dev: number;
  ino: number | null;
}

/** Device and inode of what `path` resolves to, or undefined when it cannot be read. */
export function statIdentity(path: string): StatIdentity | undefined {
  try {
    const { dev, ino } = Deno.statSync(path);
    return { dev, ino };
  } catch {
    return undefined;
  }
}

/** Whether both identities are known and name one file (an unknown inode matches nothing). */
export function sameIdentity(a: StatIdentity | undefined, b: StatIdentity | undefined): boolean {
  return a !== undefined && b !== undefined && a.ino !== null && a.dev === b.dev &&
    a.ino === b.ino;
}
