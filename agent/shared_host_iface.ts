/**
 * Records that share one host veth name, which only a store from before schema 3 can hold.
 *
 * Two container IDs can hash to the same host name (FNV-1a-32). Before schema 3 the agent gave
 * both pods that name, and the second ADD deleted the first pod's veth as a stale one of its own
 * (the first pod's interface and host routes went with it) and made its own: one veth, two
 * records. Left so, start-up's repair rebuilt the first pod's veth on top of the second's (which
 * took the live pod off the network, and the next start swapped them back), and a DEL of either
 * deleted the other's veth.
 *
 * Start-up separates them before anything else touches a veth: the record whose netns holds the
 * veth's other end (the live pod) keeps the name; failing that (no such veth, or joined to none
 * of them) the newest record, whose ADD made the name last. Every other record gets a name of its
 * own, as an ADD today would pick it (the first candidate no record holds, hash(`<id>/1`) for
 * the second of a pair); then reconcile goes on as for any record: a committed one whose netns
 * exists is set up again under its new name, a pending or releasing one is released. A committed
 * one whose netns is gone is released here, its addresses cooling down: nothing of it has been on
 * the network since the other pod's ADD, and no runtime can use that sandbox again. So is one in
 * the keeper's own netns (two interfaces of one container, named alike): one flock interface per
 * netns is all an ADD gives today.
 *
 * @module
 */

import { getLinkByName } from "../netlink/mod.ts";
import { type Datapath, hostIfaceCandidate } from "./datapath.ts";
import type { Attachment, Store } from "./store.ts";
import { isNetnsGone } from "./netns_path.ts";

/** How many candidate names to try for a record; a second collision is already ~2^-32. */
const NAME_ATTEMPTS = 8;

/** What {@link separateSharedHostIfaces} did. */
export interface SeparationReport {
  /** Records given a name of their own. */
  renamed: number;
  /** Records released because their netns is gone. */
  released: number;
  /** One line per record changed (expected: a store from before schema 3). */
  notes: string[];
  /** One line per group that could not be handled (its records still share the name). */
  problems: string[];
}

/** Inputs of {@link separateSharedHostIfaces}. */
export interface SeparationDeps {
  store: Store;
  /** The node's datapath: its namespace holds the host veths, and it tells whose each is. */
  datapath: Pick<Datapath, "node" | "podOwning">;
  /** Release time for the records released (ms epoch). */
  now: number;
}

/** Gives every record sharing a host veth name but one a name of its own; see the module doc. */
export function separateSharedHostIfaces(d: SeparationDeps): SeparationReport {
  const report: SeparationReport = { renamed: 0, released: 0, notes: [], problems: [] };
  const shared = d.store.sharedHostIfaces();
  // Nearly every start: nothing shared, one index scan and no record read.
  if (shared.length === 0) return report;
  const byName = Map.groupBy(
    d.store.list().filter((r) => shared.includes(r.hostIface)),
    (r) => r.hostIface,
  );
  for (const [name, group] of byName) {
    try {
      separate(d, name, group, report);
    } catch (e) {
      report.problems.push(
        `cannot separate the records sharing host interface ${name} ` +
          `(${group.map(key).join(", ")}): ${(e as Error).message}`,
      );
    }
  }
  return report;
}

function separate(
  d: SeparationDeps,
  name: string,
  group: Attachment[],
  report: SeparationReport,
): void {
  // list() is oldest first: the last one's ADD made the name last.
  const keeper = liveOwner(d.datapath, name, group) ?? group[group.length - 1];
  for (const rec of group) {
    if (rec === keeper) continue;
    const fresh = freeName(d.store, rec.containerId);
    d.store.renameHostIface(rec.containerId, rec.ifname, fresh);
    report.renamed++;
    let note = `${key(rec)} shared host interface ${name} with ${key(keeper)} ` +
      `(a store from before schema 3): ${keeper.containerId} keeps it, this one is now ${fresh}`;
    const gone = isNetnsGone(rec.netns);
    // Two interfaces of one container (one netns) shared the name too: today's ADD refuses a
    // second flock interface in a netns, so the one the kernel no longer has is not rebuilt.
    const beside = !gone && rec.netns === keeper.netns;
    if (rec.state === "committed" && (gone || beside)) {
      const addresses = [rec.ipv6, rec.ipv4].filter((ip) => ip !== undefined);
      d.store.finishRelease(rec.containerId, rec.ifname, addresses, d.now);
      report.released++;
      note += gone
        ? `; its netns ${rec.netns} is gone: released`
        : `; its netns has ${key(keeper)} already (one flock interface per netns): released`;
    }
    report.notes.push(note);
  }
}

/**
 * The record whose pod interface is the other end of the node's veth `name`, as the datapath
 * pairs them for a release (Datapath.podOwning: the record's ifname in the record's netns).
 */
function liveOwner(
  datapath: SeparationDeps["datapath"],
  name: string,
  group: Attachment[],
): Attachment | undefined {
  const host = getLinkByName(datapath.node, name);
  if (!host) return undefined;
  // A record whose netns is gone holds nothing: the datapath skips it.
  const sides = () =>
    group.map((rec) => ({ label: key(rec), netns: rec.netns, ifname: rec.ifname }));
  const owner = datapath.podOwning(host, sides);
  return group.find((rec) => key(rec) === owner);
}

/** The first of the container's candidate names no record holds, as an ADD picks one. */
function freeName(store: Store, containerId: string): string {
  for (let attempt = 0; attempt < NAME_ATTEMPTS; attempt++) {
    const name = hostIfaceCandidate(containerId, attempt);
    if (!store.hostIfaceHolder(name)) return name;
  }
  throw new Error(`no free host interface name for ${containerId} in ${NAME_ATTEMPTS} candidates`);
}

function key(rec: Attachment): string {
  return `${rec.containerId}/${rec.ifname}`;
}
