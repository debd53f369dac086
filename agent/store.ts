/**
 * Node-local attachment store on `node:sqlite`.
 *
 * One row per CNI attachment, keyed by (container ID, ifname), with UNIQUE IPv6 and IPv4 columns
 * so the database itself refuses to hand one address to two pods. Every mutation is a single
 * `BEGIN IMMEDIATE … COMMIT` transaction in WAL mode with `synchronous=FULL`, so a crash at any
 * instant leaves either the old or the new state, and a committed answer survives power loss.
 * The one exception is the pending insert, which is never an answer: it commits without its own
 * fsync (see {@linkcode Store.insertPending}).
 *
 * The API is synchronous on purpose: the agent drives netlink synchronously on one thread, and
 * `BEGIN IMMEDIATE` serialises it against any other process (a CLI) opening the same file.
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import { join } from "node:path";
import { ensurePrivateFileSync } from "./private_file.ts";
import { assertSafeDirSync } from "./safe_path.ts";
import {
  AF_INET,
  AF_INET6,
  type Family,
  formatIP,
  InvalidAddressError,
  parseIP,
} from "../netlink/ip.ts";

/**
 * Lifecycle of an attachment: written `pending` before the datapath is built, `committed`
 * after; `releasing` once a DEL has taken it off the network and answered, while its veth is
 * still being deleted (its addresses are held until the veth is gone).
 */
export type AttachmentState = "pending" | "committed" | "releasing";

/** One pod interface as the agent remembers it. */
export interface Attachment {
  containerId: string;
  ifname: string;
  state: AttachmentState;
  /** Path of the pod's network namespace. */
  netns: string;
  /** Name of the host-side veth. */
  hostIface: string;
  podNamespace?: string;
  podName?: string;
  /** Canonical text, no prefix length. */
  ipv6?: string;
  /** Canonical text, no prefix length. */
  ipv4?: string;
  /** Anycast addresses this attachment holds; several attachments may hold the same one. */
  anycast: string[];
  /** Creation time, ms since the epoch. */
  createdAt: number;
  /**
   * The CNI network (the config's `name`) the attachment was made for. Absent on records from
   * before schema 4, which did not keep it: such a record is any network's until one claims it
   * (see PodHandler's GC).
   */
  network?: string;
}

/** What anycast routing needs of one attachment holding an anycast address. */
export type AnycastHolder = Pick<
  Attachment,
  "containerId" | "ifname" | "hostIface" | "ipv4" | "ipv6"
>;

/** Raised when an address is already held by another attachment. */
export class AddressConflictError extends Error {
  /** The canonical address that is taken. */
  readonly address: string;
  /** Key of the attachment holding it. */
  readonly holder: { containerId: string; ifname: string };
  constructor(address: string, holder: { containerId: string; ifname: string }) {
    super(`address ${address} is already used by ${holder.containerId}/${holder.ifname}`);
    this.name = "AddressConflictError";
    this.address = address;
    this.holder = holder;
  }
}

/** Raised when inserting an attachment whose (container ID, ifname) already exists. */
export class AttachmentExistsError extends Error {
  constructor(containerId: string, ifname: string) {
    super(`attachment ${containerId}/${ifname} already exists`);
    this.name = "AttachmentExistsError";
  }
}

/** Raised when inserting an attachment whose host interface name another attachment has. */
export class HostIfaceConflictError extends Error {
  constructor(hostIface: string, holder: { containerId: string; ifname: string }) {
    super(
      `host interface ${hostIface} is already used by ${holder.containerId}/${holder.ifname}`,
    );
    this.name = "HostIfaceConflictError";
  }
}

/** Raised when committing an attachment that is not in the store. */
export class AttachmentNotFoundError extends Error {
  constructor(containerId: string, ifname: string) {
    super(`attachment ${containerId}/${ifname} not found`);
    this.name = "AttachmentNotFoundError";
  }
}

/**
 * Raised when the database was written by a newer schema than this binary knows (a downgrade):
 * an older agent cannot tell what the newer one's records mean, so it touches nothing.
 */
export class SchemaVersionError extends Error {
  constructor(found: number, known: number, path = DB_FILE) {
    super(
      `${path} has store schema version ${found}, newer than this flock's ${known}: it was ` +
        `written by a newer flock, and downgrades are not supported; run that version or a ` +
        `newer one (the file is left as it is)`,
    );
    this.name = "SchemaVersionError";
  }
}

/** Test-only options of {@linkcode Store.open}. */
export interface StoreOpenOptions {
  /**
   * Called inside the migration's transaction after each step, with the version it reached
   * (tests kill the process there to prove a migration is all or nothing).
   */
  afterMigrationStep?: (version: number) => void;
}

/** Default state directory of the agent. */
export const DEFAULT_STATE_DIR = "/var/lib/flock";
/** Database file name inside the state directory. */
export const DB_FILE = "flock.db";

/**
 * Schema migrations; entry i upgrades `user_version` i to i+1. Append only, never edit a
 * released step: existing nodes replay only the steps after their stored version.
 */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE attachment (
     container_id  TEXT NOT NULL,
     ifname        TEXT NOT NULL,
     state         TEXT NOT NULL CHECK (state IN ('pending', 'committed')),
     netns         TEXT NOT NULL,
     host_iface    TEXT NOT NULL,
     pod_namespace TEXT,
     pod_name      TEXT,
     ipv6          TEXT UNIQUE,
     ipv4          TEXT UNIQUE,
     created_at    INTEGER NOT NULL,
     PRIMARY KEY (container_id, ifname)
   ) STRICT;
   CREATE INDEX attachment_state ON attachment (state);
   CREATE TABLE anycast (
     container_id TEXT NOT NULL,
     ifname       TEXT NOT NULL,
     address      TEXT NOT NULL,
     PRIMARY KEY (container_id, ifname, address),
     FOREIGN KEY (container_id, ifname) REFERENCES attachment (container_id, ifname)
       ON DELETE CASCADE
   ) STRICT;
   CREATE INDEX anycast_address ON anycast (address);
   CREATE TABLE release (
     ip TEXT PRIMARY KEY,
     at INTEGER NOT NULL
   ) STRICT;
   CREATE INDEX release_at ON release (at);`,
  // A committed attachment whose DEL has been answered while its veth is still going away
  // (state "releasing"): since when. A column, because the state's CHECK cannot be altered.
  `ALTER TABLE attachment ADD COLUMN releasing_at INTEGER`,
  // Host interface names are unique per node: the agent looks a name up before it takes it (two
  // container IDs can hash to the same one). Not a UNIQUE index: a database from before may hold
  // such a pair, and the agent must still start with it.
  `CREATE INDEX IF NOT EXISTS attachment_host_iface ON attachment (host_iface)`,
  // The CNI network each attachment was made for: GC's valid list names only the attachments of
  // its own network, so GC must know which ones those are. NULL for the records made before.
  `ALTER TABLE attachment ADD COLUMN network TEXT`,
  // Addresses a release could not give back because the node still routes them through another
  // pod's host veth (the record named that veth wrongly): that pod may be using them. Kept
  // until that veth no longer routes them, so a restart does not hand them out again. IF NOT
  // EXISTS as schema 3's index: a store set back to an older version by hand keeps its table.
  `CREATE TABLE IF NOT EXISTS withheld (
     ip         TEXT PRIMARY KEY,
     host_iface TEXT NOT NULL,
     owner      TEXT NOT NULL,
     at         INTEGER NOT NULL
   ) STRICT`,
];

/** Schema version this code writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * An address a release withheld from IPAM: the node routes it through the host veth
 * `hostIface`, whose other end is in `owner`'s netns (another pod's veth that the released record
 * named wrongly). It stays out of IPAM until that veth no longer routes it.
 */
export interface WithheldAddress {
  /** Canonical text, no prefix length. */
  ip: string;
  hostIface: string;
  /** The pod whose netns holds the veth's other end (`<containerId>/<ifname>`). */
  owner: string;
  /** When the release withheld it, ms since the epoch. */
  at: number;
}

/** One attachment holding a host veth name (see {@link Store.hostIfaceHolders}). */
export interface HostIfaceHolder {
  containerId: string;
  ifname: string;
  /** Path of its pod's network namespace. */
  netns: string;
  state: AttachmentState;
}

interface AttachmentRow {
  container_id: string;
  ifname: string;
  state: AttachmentState;
  netns: string;
  host_iface: string;
  pod_namespace: string | null;
  pod_name: string | null;
  ipv6: string | null;
  ipv4: string | null;
  created_at: number;
  anycast: string | null;
  network: string | null;
}

/** The state as the API sees it: a committed row with `releasing_at` set is "releasing". */
const STATE = `CASE WHEN a.releasing_at IS NULL THEN a.state ELSE 'releasing' END`;

const SELECT_ATTACHMENT = `SELECT a.container_id, a.ifname, ${STATE} AS state, a.netns,
    a.host_iface, a.pod_namespace, a.pod_name, a.ipv6, a.ipv4, a.created_at, a.network,
    (SELECT group_concat(y.address, ' ' ORDER BY y.address) FROM anycast y
      WHERE y.container_id = a.container_id AND y.ifname = a.ifname) AS anycast
  FROM attachment a`;

function canonical(text: string, family?: Family): string {
  const ip = parseIP(text);
  if (family !== undefined && ip.family !== family) {
    const want = family === AF_INET6 ? "IPv6" : "IPv4";
    throw new InvalidAddressError(`${text} is not an ${want} address`);
  }
  return formatIP(ip);
}

/**
 * Creates the state directory when missing (0700), checks that it is a directory only root may
 * write to. A file at its path, or above it, is refused with an error naming the state
 * directory: the error shows in `flock status` and in cluster mode's CNI answers, where SQLite's
 * own "flock.db: Not a directory" one step later left the operator guessing.
 */
function prepareStateDir(stateDir: string): void {
  try {
    // An existing directory is left alone: it may be shared (say the caller passed "/tmp").
    if (!exists(stateDir)) {
      Deno.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      Deno.chmodSync(stateDir, 0o700);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotADirectory)) throw e;
    const file = firstNonDirectory(stateDir) ?? "a part of its path";
    throw new Deno.errors.NotADirectory(
      `cannot create state directory ${stateDir}: ${file} is not a directory`,
    );
  }
  // Root writes here: a directory others may write to would let them plant links below.
  assertSafeDirSync(stateDir, "state directory");
  const info = Deno.statSync(stateDir);
  if (!info.isDirectory) {
    throw new Deno.errors.NotADirectory(
      `state directory ${stateDir} is not a directory${info.isFile ? " (it is a file)" : ""}`,
    );
  }
}

/** The first path above `path` (from the root down) that exists and is no directory. */
function firstNonDirectory(path: string): string | undefined {
  const parts = path.split("/");
  for (let i = 0; i < parts.length; i++) {
    const prefix = parts.slice(0, i + 1).join("/");
    if (!prefix) continue;
    try {
      if (!Deno.statSync(prefix).isDirectory) return prefix;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

interface WithheldRow {
  ip: string;
  host_iface: string;
  owner: string;
  at: number;
}

function fromWithheldRow(r: WithheldRow): WithheldAddress {
  return { ip: r.ip, hostIface: r.host_iface, owner: r.owner, at: r.at };
}

function fromRow(r: AttachmentRow): Attachment {
  const a: Attachment = {
    containerId: r.container_id,
    ifname: r.ifname,
    state: r.state,
    netns: r.netns,
    hostIface: r.host_iface,
    anycast: r.anycast ? r.anycast.split(" ") : [],
    createdAt: r.created_at,
  };
  if (r.pod_namespace !== null) a.podNamespace = r.pod_namespace;
  if (r.pod_name !== null) a.podName = r.pod_name;
  if (r.ipv6 !== null) a.ipv6 = r.ipv6;
  if (r.ipv4 !== null) a.ipv4 = r.ipv4;
  if (r.network !== null) a.network = r.network;
  return a;
}

/** The node-local attachment database. Not safe to share across threads; one per process. */
export class Store {
  /** Path of the database file. */
  readonly path: string;
  #db: DatabaseSync;
  #stmts: ReturnType<typeof prepareAll>;
  /**
   * Diagnostic statements, prepared on first use and kept: Deno 2.9.6's node:sqlite does not
   * give a statement's native memory back when the statement is garbage-collected (~27 KiB
   * for an integrity check), so preparing per call grew the agent by ~55 KiB per
   * `flock status` (bench/README.md, "Memory").
   */
  readonly #diagnostics = new Map<string, StatementSync>();

  private constructor(path: string, db: DatabaseSync) {
    this.path = path;
    this.#db = db;
    this.#stmts = prepareAll(db);
  }

  /**
   * Opens (creating if needed) `<stateDir>/flock.db` in WAL mode with `synchronous=FULL` and
   * applies pending migrations. A directory it creates is 0700 and the database files are 0600,
   * because the addresses and netns paths of every pod are in them.
   */
  static open(stateDir: string, options: StoreOpenOptions = {}): Store {
    prepareStateDir(stateDir);
    const path = join(stateDir, DB_FILE);
    // SQLite creates the -wal and -shm files with the main file's mode and follows a link at
    // their names, so all three are made here first: private regardless of umask, and never
    // through a link (SQLite then opens the files that are already there).
    for (const file of [path, `${path}-wal`, `${path}-shm`]) ensurePrivateFileSync(file);
    const db = new DatabaseSync(path, { enableForeignKeyConstraints: true });
    try {
      db.exec("PRAGMA busy_timeout = 5000");
      const mode = db.prepare("PRAGMA journal_mode = WAL").get() as { journal_mode: string };
      if (mode.journal_mode !== "wal") {
        throw new Error(`cannot switch ${path} to WAL (journal_mode=${mode.journal_mode})`);
      }
      db.exec("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON");
      migrate(db, path, options.afterMigrationStep);
      return new Store(path, db);
    } catch (e) {
      db.close();
      throw e;
    }
  }

  /** Effective connection settings, for diagnostics and tests. */
  pragmas(): {
    journalMode: string;
    synchronous: number;
    foreignKeys: number;
    userVersion: number;
  } {
    const one = (sql: string) => Object.values(this.#diagnostic(sql).get() ?? {})[0];
    return {
      journalMode: String(one("PRAGMA journal_mode")),
      synchronous: Number(one("PRAGMA synchronous")),
      foreignKeys: Number(one("PRAGMA foreign_keys")),
      userVersion: Number(one("PRAGMA user_version")),
    };
  }

  /** The attachment with this key, if any. */
  get(containerId: string, ifname: string): Attachment | undefined {
    const row = this.#stmts.get.get(containerId, ifname) as AttachmentRow | undefined;
    return row ? fromRow(row) : undefined;
  }

  /** The interfaces a container has attachments for, by ifname, with their networks. */
  interfacesOf(containerId: string): { ifname: string; network?: string }[] {
    const rows = this.#stmts.interfacesOf.all(containerId) as {
      ifname: string;
      network: string | null;
    }[];
    return rows.map((r) =>
      r.network === null ? { ifname: r.ifname } : { ifname: r.ifname, network: r.network }
    );
  }

  /**
   * The attachment whose host-side veth is `hostIface`, if any; the oldest one when several hold
   * it (a store from before schema 3, or edited by hand: see {@link hostIfaceHolders}).
   */
  hostIfaceHolder(hostIface: string): { containerId: string; ifname: string } | undefined {
    const row = this.#stmts.holderOfHostIface.get(hostIface) as
      | { container_id: string; ifname: string }
      | undefined;
    return row && { containerId: row.container_id, ifname: row.ifname };
  }

  /**
   * The attachment whose own IPv6 or IPv4 address is `address` (canonical text, formatIP's; the
   * family told by its colon), whatever its state; anycast addresses are not looked at. One
   * indexed look-up (the address columns are UNIQUE).
   */
  addressHolder(address: string): { containerId: string; ifname: string } | undefined {
    const statement = address.includes(":") ? this.#stmts.holderV6 : this.#stmts.holderV4;
    const row = statement.get(address) as { container_id: string; ifname: string } | undefined;
    return row && { containerId: row.container_id, ifname: row.ifname };
  }

  /**
   * Every attachment holding the host veth name `hostIface`, oldest first: one at most in a
   * store this schema wrote, more only in one from before schema 3 or edited by hand.
   */
  hostIfaceHolders(hostIface: string): HostIfaceHolder[] {
    const rows = this.#stmts.holdersOfHostIface.all(hostIface) as unknown as Pick<
      AttachmentRow,
      "container_id" | "ifname" | "netns" | "state"
    >[];
    return rows.map((r) => ({
      containerId: r.container_id,
      ifname: r.ifname,
      netns: r.netns,
      state: r.state,
    }));
  }

  /**
   * Host interface names more than one attachment holds, sorted. Only a database written before
   * schema 3 can hold such a pair (see agent/shared_host_iface.ts); one index scan.
   */
  sharedHostIfaces(): string[] {
    return (this.#stmts.sharedHostIfaces.all() as { host_iface: string }[])
      .map((r) => r.host_iface);
  }

  /**
   * Gives an attachment another host interface name; false if there is no such attachment.
   * @throws {HostIfaceConflictError} if another attachment holds `hostIface`.
   */
  renameHostIface(containerId: string, ifname: string, hostIface: string): boolean {
    return this.#transaction(() => {
      const holder = this.hostIfaceHolder(hostIface);
      if (holder && (holder.containerId !== containerId || holder.ifname !== ifname)) {
        throw new HostIfaceConflictError(hostIface, holder);
      }
      return Number(this.#stmts.renameHostIface.run(hostIface, containerId, ifname).changes) > 0;
    });
  }

  /** Every attachment, oldest first. */
  list(): Attachment[] {
    return (this.#stmts.list.all() as unknown as AttachmentRow[]).map(fromRow);
  }

  /** Attachments in one state, oldest first. */
  listByState(state: AttachmentState): Attachment[] {
    return (this.#stmts.listByState.all(state) as unknown as AttachmentRow[]).map(fromRow);
  }

  /**
   * Committed attachments holding the anycast address `address` (canonical text), oldest first.
   * Uses the anycast address index, so it stays cheap on a node with many pods.
   */
  listAnycastHolders(address: string): AnycastHolder[] {
    const rows = this.#stmts.anycastHolders.all(canonical(address)) as unknown as Pick<
      AttachmentRow,
      "container_id" | "ifname" | "host_iface" | "ipv6" | "ipv4"
    >[];
    return rows.map((r) => {
      const h: AnycastHolder = {
        containerId: r.container_id,
        ifname: r.ifname,
        hostIface: r.host_iface,
      };
      if (r.ipv6 !== null) h.ipv6 = r.ipv6;
      if (r.ipv4 !== null) h.ipv4 = r.ipv4;
      return h;
    });
  }

  /** Every anycast address at least one committed attachment holds, sorted. */
  listAnycastAddresses(): string[] {
    return (this.#stmts.anycastAddresses.all() as { address: string }[]).map((r) => r.address);
  }

  /** Number of attachments in any state. */
  count(): number {
    return (this.#stmts.count.get() as { n: number }).n;
  }

  /**
   * Records a new attachment as pending, with its anycast rows, in one transaction.
   *
   * The transaction is atomic but not fsynced on its own (`synchronous=NORMAL` for this one
   * commit), which takes ~0.3–0.5 ms off every ADD. Nothing is lost by it:
   * - a crashed or killed agent loses nothing (the commit is in the OS's page cache);
   * - the ADD's `commit` is fsynced, and WAL frames are written in order, so that fsync makes this
   *   row durable too before any answer goes out;
   * - only a power loss or kernel crash in between can drop the row, and that reboot also takes
   *   the half-made veth with it; start-up's sweep removes any flock link without a record.
   * @throws {AttachmentExistsError} if the key exists.
   * @throws {AddressConflictError} if its IPv6 or IPv4 address belongs to another attachment.
   * @throws {HostIfaceConflictError} if its host interface name belongs to another attachment.
   * @throws {InvalidAddressError} if an address does not parse or is of the wrong family.
   */
  insertPending(a: Omit<Attachment, "state" | "createdAt">): void {
    const ipv6 = a.ipv6 == null ? null : canonical(a.ipv6, AF_INET6);
    const ipv4 = a.ipv4 == null ? null : canonical(a.ipv4, AF_INET);
    const anycast = [...new Set(a.anycast.map((x) => canonical(x)))];
    const s = this.#stmts;
    this.#transaction(() => {
      if (s.get.get(a.containerId, a.ifname)) {
        throw new AttachmentExistsError(a.containerId, a.ifname);
      }
      const ifaceHolder = this.hostIfaceHolder(a.hostIface);
      if (ifaceHolder) throw new HostIfaceConflictError(a.hostIface, ifaceHolder);
      for (const [addr, holderOf] of [[ipv6, s.holderV6], [ipv4, s.holderV4]] as const) {
        if (addr === null) continue;
        const h = holderOf.get(addr) as { container_id: string; ifname: string } | undefined;
        if (h) {
          throw new AddressConflictError(addr, { containerId: h.container_id, ifname: h.ifname });
        }
      }
      s.insert.run(
        a.containerId,
        a.ifname,
        a.netns,
        a.hostIface,
        a.podNamespace ?? null,
        a.podName ?? null,
        ipv6,
        ipv4,
        Date.now(),
        a.network ?? null,
      );
      for (const addr of anycast) s.insertAnycast.run(a.containerId, a.ifname, addr);
    }, { durable: false });
  }

  /**
   * Marks a pending attachment committed; committing a committed one is a no-op.
   * @throws {AttachmentNotFoundError} if the key does not exist.
   */
  commit(containerId: string, ifname: string): void {
    this.#transaction(() => {
      const r = this.#stmts.commit.run(containerId, ifname);
      if (Number(r.changes) === 0 && !this.#stmts.get.get(containerId, ifname)) {
        throw new AttachmentNotFoundError(containerId, ifname);
      }
    });
  }

  /**
   * Records the netns an attachment's pod interface now lives in (an ADD retried by the runtime
   * with a new sandbox netns moved it there); false if there is no such attachment.
   */
  setNetns(containerId: string, ifname: string, netns: string): boolean {
    return this.#transaction(() =>
      Number(this.#stmts.setNetns.run(netns, containerId, ifname).changes) > 0
    );
  }

  /**
   * Records the network of an attachment that has none (made before schema 4); false if there is
   * no such attachment or it already has a network.
   */
  claimNetwork(containerId: string, ifname: string, network: string): boolean {
    return this.#transaction(() =>
      Number(this.#stmts.claimNetwork.run(network, containerId, ifname).changes) > 0
    );
  }

  /**
   * Marks a committed attachment `releasing` (DEL took it off the network; its veth is still
   * being deleted). False if there is no such committed attachment.
   */
  markReleasing(containerId: string, ifname: string, at: number): boolean {
    return this.#transaction(() =>
      Number(this.#stmts.markReleasing.run(at, containerId, ifname).changes) > 0
    );
  }

  /**
   * Marks a pending or committed attachment `releasing` after an ADD that failed and could not
   * remove its veth: its addresses stay held (the veth may still carry them in the pod's netns)
   * until a release finishes it (the sweep, a DEL, a retried ADD, GC or the next start). False
   * if there is no such attachment that is not releasing already.
   */
  abandon(containerId: string, ifname: string, at: number): boolean {
    return this.#transaction(() =>
      Number(this.#stmts.abandon.run(at, containerId, ifname).changes) > 0
    );
  }

  /**
   * Removes an attachment and records the release of its addresses (for IPAM cooldown) in one
   * transaction, with the addresses it `withheld` (still routed through another pod's veth; their
   * `at` is this `at`); false if there was no attachment.
   */
  finishRelease(
    containerId: string,
    ifname: string,
    released: string[],
    at: number,
    withheld: Omit<WithheldAddress, "at">[] = [],
  ): boolean {
    const addresses = released.map((ip) => canonical(ip));
    const kept = withheld.map((w) => ({ ...w, ip: canonical(w.ip) }));
    return this.#transaction(() => {
      const deleted = Number(this.#stmts.delete.run(containerId, ifname).changes) > 0;
      for (const ip of addresses) this.#stmts.recordRelease.run(ip, at);
      for (const w of kept) this.#stmts.withhold.run(w.ip, w.hostIface, w.owner, at);
      return deleted;
    });
  }

  /** Every withheld address, oldest first (see {@link WithheldAddress}); normally none. */
  withheld(): WithheldAddress[] {
    return (this.#stmts.withheld.all() as unknown as WithheldRow[]).map(fromWithheldRow);
  }

  /** The withheld entry of `ip` (any spelling), if it is withheld. */
  withheldAddress(ip: string): WithheldAddress | undefined {
    const row = this.#stmts.withheldOne.get(canonical(ip)) as WithheldRow | undefined;
    return row && fromWithheldRow(row);
  }

  /**
   * Gives withheld addresses back: each stops being withheld and is recorded released at `at`, so
   * it cools down like any other release (and across restarts), in one transaction.
   */
  freeWithheld(ips: string[], at: number): void {
    const addresses = ips.map((ip) => canonical(ip));
    this.#transaction(() => {
      for (const ip of addresses) {
        if (Number(this.#stmts.unwithhold.run(ip).changes) > 0) {
          this.#stmts.recordRelease.run(ip, at);
        }
      }
    });
  }

  /** Removes an attachment and its anycast rows; false if there was none. */
  delete(containerId: string, ifname: string): boolean {
    return this.#transaction(() => Number(this.#stmts.delete.run(containerId, ifname).changes) > 0);
  }

  /**
   * Remembers that `ip` was released at `at` (ms epoch), so IPAM cooldown survives restarts.
   * Keeps only the latest release per address.
   */
  recordRelease(ip: string, at: number): void {
    const addr = canonical(ip);
    this.#transaction(() => this.#stmts.recordRelease.run(addr, at));
  }

  /** Releases at or after `since` (ms epoch), oldest first; one entry per address, the latest. */
  recentReleases(since: number): { ip: string; at: number }[] {
    return (this.#stmts.recentReleases.all(since) as { ip: string; at: number }[])
      .map(({ ip, at }) => ({ ip, at }));
  }

  /** Forgets releases older than `before` (ms epoch). */
  pruneReleases(before: number): void {
    this.#transaction(() => this.#stmts.pruneReleases.run(before));
  }

  /**
   * Writes and fsyncs a transaction that changes nothing in the end (a release row added and
   * removed again), to learn whether the database takes writes again after one failed; throws
   * like any write.
   */
  probeWrite(): void {
    this.#transaction(() => {
      this.#stmts.recordRelease.run(WRITE_PROBE_KEY, 0);
      this.#stmts.forgetRelease.run(WRITE_PROBE_KEY);
    });
  }

  /** "ok", or the problems found by SQLite's integrity and foreign-key checks. */
  integrityCheck(): string {
    const integrity = this.#diagnostic("PRAGMA integrity_check").all() as Record<string, unknown>[];
    const problems = integrity.map((r) => String(Object.values(r)[0])).filter((m) => m !== "ok");
    const fk = this.#diagnostic("PRAGMA foreign_key_check").all() as Record<string, unknown>[];
    for (const r of fk) problems.push(`foreign key violation: ${JSON.stringify({ ...r })}`);
    return problems.length === 0 ? "ok" : problems.join("; ");
  }

  #diagnostic(sql: string): StatementSync {
    let statement = this.#diagnostics.get(sql);
    if (!statement) this.#diagnostics.set(sql, statement = this.#db.prepare(sql));
    return statement;
  }

  /** Closes the database; the store is unusable afterwards. Idempotent. */
  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }

  /** Runs `fn` in one transaction; `durable: false` commits it without an fsync of its own. */
  #transaction<T>(fn: () => T, { durable = true } = {}): T {
    const s = this.#stmts;
    if (!durable) s.syncNormal.run();
    try {
      s.begin.run();
      try {
        const result = fn();
        s.commitTx.run();
        return result;
      } catch (e) {
        if (this.#db.isTransaction) s.rollback.run();
        throw e;
      }
    } finally {
      if (!durable) s.syncFull.run();
    }
  }
}

/** The release row {@link Store.probeWrite} adds and removes: no address is spelled so. */
const WRITE_PROBE_KEY = "write-probe";

function prepareAll(db: DatabaseSync) {
  const p = (sql: string): StatementSync => db.prepare(sql);
  return {
    syncNormal: p("PRAGMA synchronous = NORMAL"),
    syncFull: p("PRAGMA synchronous = FULL"),
    begin: p("BEGIN IMMEDIATE"),
    commitTx: p("COMMIT"),
    rollback: p("ROLLBACK"),
    get: p(`${SELECT_ATTACHMENT} WHERE a.container_id = ? AND a.ifname = ?`),
    interfacesOf: p(
      `SELECT ifname, network FROM attachment WHERE container_id = ? ORDER BY ifname`,
    ),
    list: p(`${SELECT_ATTACHMENT} ORDER BY a.created_at, a.rowid`),
    listByState: p(`${SELECT_ATTACHMENT} WHERE ${STATE} = ? ORDER BY a.created_at, a.rowid`),
    count: p("SELECT count(*) AS n FROM attachment"),
    anycastAddresses: p(
      `SELECT DISTINCT h.address FROM anycast h JOIN attachment a
         ON a.container_id = h.container_id AND a.ifname = h.ifname
         WHERE a.state = 'committed' AND a.releasing_at IS NULL ORDER BY h.address`,
    ),
    anycastHolders: p(
      `SELECT a.container_id, a.ifname, a.host_iface, a.ipv6, a.ipv4 FROM anycast h
         JOIN attachment a ON a.container_id = h.container_id AND a.ifname = h.ifname
         WHERE h.address = ? AND a.state = 'committed' AND a.releasing_at IS NULL
         ORDER BY a.created_at, a.rowid`,
    ),
    holderV6: p("SELECT container_id, ifname FROM attachment WHERE ipv6 = ?"),
    holderOfHostIface: p(
      `SELECT container_id, ifname FROM attachment WHERE host_iface = ?
         ORDER BY created_at, rowid LIMIT 1`,
    ),
    holdersOfHostIface: p(
      `SELECT a.container_id, a.ifname, a.netns, ${STATE} AS state FROM attachment a
         WHERE a.host_iface = ? ORDER BY a.created_at, a.rowid`,
    ),
    sharedHostIfaces: p(
      `SELECT host_iface FROM attachment GROUP BY host_iface HAVING count(*) > 1
         ORDER BY host_iface`,
    ),
    renameHostIface: p(
      "UPDATE attachment SET host_iface = ? WHERE container_id = ? AND ifname = ?",
    ),
    holderV4: p("SELECT container_id, ifname FROM attachment WHERE ipv4 = ?"),
    insert: p(
      `INSERT INTO attachment (container_id, ifname, state, netns, host_iface, pod_namespace,
         pod_name, ipv6, ipv4, created_at, network)
         VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    insertAnycast: p("INSERT INTO anycast (container_id, ifname, address) VALUES (?, ?, ?)"),
    commit: p(
      `UPDATE attachment SET state = 'committed'
        WHERE container_id = ? AND ifname = ? AND state = 'pending'`,
    ),
    delete: p("DELETE FROM attachment WHERE container_id = ? AND ifname = ?"),
    setNetns: p("UPDATE attachment SET netns = ? WHERE container_id = ? AND ifname = ?"),
    claimNetwork: p(
      "UPDATE attachment SET network = ? WHERE container_id = ? AND ifname = ? AND network IS NULL",
    ),
    abandon: p(
      `UPDATE attachment SET releasing_at = ?
        WHERE container_id = ? AND ifname = ? AND releasing_at IS NULL`,
    ),
    markReleasing: p(
      `UPDATE attachment SET releasing_at = ?
        WHERE container_id = ? AND ifname = ? AND state = 'committed'`,
    ),
    recordRelease: p(
      `INSERT INTO release (ip, at) VALUES (?, ?)
         ON CONFLICT (ip) DO UPDATE SET at = max(at, excluded.at)`,
    ),
    recentReleases: p("SELECT ip, at FROM release WHERE at >= ? ORDER BY at, ip"),
    withhold: p(
      `INSERT INTO withheld (ip, host_iface, owner, at) VALUES (?, ?, ?, ?)
         ON CONFLICT (ip) DO UPDATE SET host_iface = excluded.host_iface,
           owner = excluded.owner, at = excluded.at`,
    ),
    withheld: p("SELECT ip, host_iface, owner, at FROM withheld ORDER BY at, ip"),
    withheldOne: p("SELECT ip, host_iface, owner, at FROM withheld WHERE ip = ?"),
    unwithhold: p("DELETE FROM withheld WHERE ip = ?"),
    pruneReleases: p("DELETE FROM release WHERE at < ?"),
    forgetRelease: p("DELETE FROM release WHERE ip = ?"),
  };
}

/** Every pending step and the new version in one transaction: a crash leaves the old schema. */
function migrate(
  db: DatabaseSync,
  path: string,
  afterStep?: StoreOpenOptions["afterMigrationStep"],
): void {
  db.exec("BEGIN IMMEDIATE");
  try {
    const { user_version: found } = db.prepare("PRAGMA user_version").get() as {
      user_version: number;
    };
    if (found > SCHEMA_VERSION) throw new SchemaVersionError(found, SCHEMA_VERSION, path);
    for (let v = found; v < SCHEMA_VERSION; v++) {
      db.exec(MIGRATIONS[v]);
      afterStep?.(v + 1);
    }
    // PRAGMA takes no bound parameters; SCHEMA_VERSION is a compile-time integer.
    if (found !== SCHEMA_VERSION) db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
    db.exec("COMMIT");
  } catch (e) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw e;
  }
}
