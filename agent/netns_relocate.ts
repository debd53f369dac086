/**
 * The agent's periodic sweep learns back where the veths of "unknown" records (see
 * netns_identity.ts: after a restart, their path names no netns holding their veth) have their
 * other end, so that new pods' ADDs stop paying a link dump of their netns on their account
 * without waiting for a CHECK (kubelet rarely sends one) or the record's DEL.
 *
 * One sweep costs one dump of the node's links for all the records it looks at. Each record is
 * looked for first where its path points (it may name the netns again), then among the netns the
 * runtimes name under /run/netns (containerd, CRI-O and podman mount pod netns there), matched by
 * the kernel's id of the netns holding the veth's peer: one open, statx and RTM_GETNSID per entry,
 * the scan ending once every id looked for is found. A record found nowhere (its netns lives on
 * only through an fd or a mount elsewhere) stays unknown and is looked at again after 1, 2, 4 …
 * {@link MAX_BACKOFF_SWEEPS} sweeps, not at every one.
 *
 * @module
 */

import { closeFd, O_CLOEXEC, O_NONBLOCK, O_RDONLY, openPathOrNone } from "../netlink/ffi.ts";
import { type Handle, type Link, netnsIdOfFd } from "../netlink/mod.ts";
import type { Datapath } from "./datapath.ts";
import { type NetnsIdentities, type NetnsIdentity, netnsIdentityOfFd } from "./netns_identity.ts";
import type { Attachment } from "./store.ts";

/** Where the runtimes mount the pods' netns (one directory on most hosts: /var/run is /run). */
export const RUNTIME_NETNS_DIRS: readonly string[] = ["/run/netns", "/var/run/netns"];

/** The most sweeps a record found nowhere waits before it is looked for again. */
export const MAX_BACKOFF_SWEEPS = 32;

/** The most unknown records one sweep looks for (the others wait for the next sweeps). */
const MAX_RECORDS_PER_SWEEP = 1024;

/** The most netns entries one sweep opens while looking for them. */
const MAX_NETNS_SCANNED = 4096;

/** What one sweep did. */
export interface RelocateReport {
  /** Unknown records it looked for. */
  lookedFor: number;
  /** Of those, found in a netns: known again. */
  located: number;
  /** Of those, whose veth is gone (or has its other end on the node): nothing of them in a pod. */
  vanished: number;
  /** Of those, found nowhere: looked for again after a back-off. */
  notFound: number;
  /** Runtime netns entries opened. */
  scanned: number;
}

/** What {@link UnknownNetnsRelocator} works on. */
export interface RelocateDeps {
  identities: NetnsIdentities;
  datapath: Datapath;
  /** The stored records of those keys still in the store, by key (one read for many keys). */
  recordsOf: (
    keys: readonly string[],
  ) => ReadonlyMap<string, Pick<Attachment, "hostIface" | "netns">>;
  /** Where runtimes mount pod netns (default {@link RUNTIME_NETNS_DIRS}). */
  netnsDirs?: readonly string[];
}

const NOTHING: RelocateReport = { lookedFor: 0, located: 0, vanished: 0, notFound: 0, scanned: 0 };

/** Looks for the unknown records' netns, a sweep at a time, backing off from those found nowhere. */
export class UnknownNetnsRelocator {
  #sweeps = 0;
  /** Records found nowhere: how often in a row, and the sweep they are looked for again at. */
  readonly #backoff = new Map<string, { misses: number; dueAt: number }>();

  constructor(private readonly deps: RelocateDeps) {}

  /**
   * One sweep. Synchronous on purpose: no ADD, DEL or CHECK runs between its link dump and what
   * it notes, and all it changes is additive knowledge (a netns a record's veth is in right now,
   * or that its veth is gone), so it needs no container's turn. `freshNodeLinks`: a dump of the
   * node's links taken in the same synchronous run (nothing changed since), used instead of one.
   */
  sweep(freshNodeLinks?: ReadonlyMap<string, Link>): RelocateReport {
    const sweep = ++this.#sweeps;
    const { identities, datapath } = this.deps;
    for (const key of this.#backoff.keys()) {
      if (!identities.isUnknown(key)) this.#backoff.delete(key);
    }
    const due = identities.unknownKeys()
      .filter((key) => (this.#backoff.get(key)?.dueAt ?? 0) <= sweep)
      .slice(0, MAX_RECORDS_PER_SWEEP);
    if (!due.length) return NOTHING;
    // Without the dump this sweep looks for nobody (no lookup per record); the next one tries.
    const nodeLinks = freshNodeLinks ??
      datapath.nodeLinksOrNone("learning the netns of unknown records");
    if (!nodeLinks) return NOTHING;
    const report = { ...NOTHING, lookedFor: due.length };
    /** Records whose veth's peer lives in a netns their path does not name, by the netns's id. */
    const byNsid = new Map<number, string[]>();
    const records = this.deps.recordsOf(due);
    for (const key of due) {
      const rec = records.get(key);
      if (!rec) {
        identities.forget(key);
        continue;
      }
      const where = this.#locateByPath(rec, nodeLinks);
      if (where.identity !== undefined) {
        identities.located(key, where.identity);
        report.located++;
      } else if (!where.unknown) {
        identities.noLongerUnknown(key);
        report.vanished++;
      } else {
        const nsid = nodeLinks.get(rec.hostIface)?.peerNetnsId;
        if (nsid === undefined) this.#missed(key, sweep, report);
        else byNsid.set(nsid, [...byNsid.get(nsid) ?? [], key]);
      }
    }
    if (!byNsid.size) return report;
    const found = netnsByNsid(datapath.node, new Set(byNsid.keys()), this.deps.netnsDirs);
    report.scanned = found.scanned;
    for (const [nsid, keys] of byNsid) {
      const identity = found.identities.get(nsid);
      for (const key of keys) {
        if (identity === undefined) this.#missed(key, sweep, report);
        else {
          identities.located(key, identity);
          report.located++;
        }
      }
    }
    return report;
  }

  #locateByPath(
    rec: Pick<Attachment, "hostIface" | "netns">,
    nodeLinks: ReadonlyMap<string, Link>,
  ): ReturnType<Datapath["locatePeerNetns"]> {
    try {
      return this.deps.datapath.locatePeerNetns(rec.hostIface, rec.netns, nodeLinks);
    } catch {
      return { unknown: true };
    }
  }

  /** The record was found nowhere: looked for again after twice the wait of its last miss. */
  #missed(key: string, sweep: number, report: RelocateReport): void {
    const misses = (this.#backoff.get(key)?.misses ?? 0) + 1;
    const wait = Math.min(2 ** (misses - 1), MAX_BACKOFF_SWEEPS);
    this.#backoff.set(key, { misses, dueAt: sweep + wait });
    report.notFound++;
  }
}

/**
 * The identities of the netns named in `dirs` whose id (as the node `node` numbers them) is one
 * of `wanted`: each entry opened once (non-blocking: a FIFO there must not block the only JS
 * thread), stopping once all are found or {@link MAX_NETNS_SCANNED} entries were opened. The id
 * and the identity are read from one fd, so an entry replaced meanwhile cannot mix two netns.
 */
export function netnsByNsid(
  node: Handle,
  wanted: ReadonlySet<number>,
  dirs: readonly string[] = RUNTIME_NETNS_DIRS,
): { identities: Map<number, NetnsIdentity>; scanned: number } {
  const identities = new Map<number, NetnsIdentity>();
  let scanned = 0;
  const seenDirs = new Set<string>();
  for (const dir of dirs) {
    let real: string;
    let entries: Deno.DirEntry[];
    try {
      real = Deno.realPathSync(dir);
      if (seenDirs.has(real)) continue;
      seenDirs.add(real);
      entries = [...Deno.readDirSync(real)];
    } catch {
      continue;
    }
    for (const entry of entries) {
      if (identities.size === wanted.size || scanned >= MAX_NETNS_SCANNED) break;
      if (entry.isDirectory) continue;
      scanned++;
      const path = `${real}/${entry.name}`;
      const fd = openPathOrNone(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
      if (fd === undefined) continue;
      try {
        const nsid = netnsIdOfFd(node, fd, path);
        if (nsid !== undefined && wanted.has(nsid) && !identities.has(nsid)) {
          identities.set(nsid, netnsIdentityOfFd(fd));
        }
      } catch {
        // Not a netns (a file left where a mount failed): nothing to learn from it.
      } finally {
        closeFd(fd);
      }
    }
  }
  return { identities, scanned };
}
