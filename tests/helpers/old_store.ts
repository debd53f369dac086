/**
 * Databases as an older flock wrote them, for upgrade tests: the current schema taken back to
 * schema 2 (before the host-interface index of schema 3 and the network column of schema 4),
 * then filled with rows written straight in SQL, as the older binary did, without the checks
 * today's {@linkcode Store.insertPending} makes (two records may share a host veth name).
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { DB_FILE, Store } from "../../agent/store.ts";

/** One attachment row of a schema-2 database. */
export interface OldRecord {
  containerId: string;
  ifname?: string;
  /** Default "committed"; "releasing" sets `releasing_at` on a committed row, as schema 2 did. */
  state?: "pending" | "committed" | "releasing";
  netns: string;
  hostIface: string;
  ipv6?: string;
  ipv4?: string;
  createdAt: number;
}

/** Path of the database file in `stateDir`. */
export function dbPath(stateDir: string): string {
  return join(stateDir, DB_FILE);
}

/**
 * Creates `<stateDir>/flock.db` at schema 2 holding `records`; the state dir is made as the agent
 * makes it (0700). Rows go in one transaction.
 */
export function writeSchema2Store(stateDir: string, records: OldRecord[]): void {
  Store.open(stateDir).close();
  const db = new DatabaseSync(dbPath(stateDir));
  try {
    db.exec(
      "DROP INDEX attachment_host_iface; ALTER TABLE attachment DROP COLUMN network; " +
        "PRAGMA user_version = 2",
    );
    const insert = db.prepare(
      `INSERT INTO attachment (container_id, ifname, state, netns, host_iface, ipv6, ipv4,
         created_at, releasing_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    db.exec("BEGIN");
    for (const r of records) {
      const state = r.state ?? "committed";
      insert.run(
        r.containerId,
        r.ifname ?? "eth0",
        state === "pending" ? "pending" : "committed",
        r.netns,
        r.hostIface,
        r.ipv6 ?? null,
        r.ipv4 ?? null,
        r.createdAt,
        state === "releasing" ? r.createdAt + 1 : null,
      );
    }
    db.exec("COMMIT");
  } finally {
    db.close();
  }
}

/** What an older binary would see of the database: its version, tables' columns and indexes. */
export function schemaOf(stateDir: string): {
  userVersion: number;
  columns: string[];
  indexes: string[];
  rows: number;
} {
  const db = new DatabaseSync(dbPath(stateDir), { readOnly: true });
  try {
    const one = (sql: string) => Object.values(db.prepare(sql).get() ?? {})[0];
    const columns = (db.prepare("PRAGMA table_info(attachment)").all() as { name: string }[])
      .map((c) => c.name);
    const indexes = (db.prepare(
      "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    ).all() as { name: string }[]).map((i) => i.name);
    return {
      userVersion: Number(one("PRAGMA user_version")),
      columns,
      indexes,
      rows: Number(one("SELECT count(*) FROM attachment")),
    };
  } finally {
    db.close();
  }
}

/** `n` committed records with distinct names and addresses, as a busy node's store holds them. */
export function manyOldRecords(n: number): OldRecord[] {
  return Array.from({ length: n }, (_, i) => ({
    containerId: `c${i.toString(16).padStart(63, "0")}`,
    netns: `/var/run/netns/cni-${i}`,
    hostIface: `flock${i.toString(16).padStart(8, "0")}`,
    ipv6: `fd00:9::${(i + 1).toString(16)}`,
    ipv4: `10.9.${(i + 1) >> 8}.${(i + 1) & 255}`,
    createdAt: 1_000 + i,
  }));
}

/** Sets `PRAGMA user_version` of `<stateDir>/flock.db`, as a newer (or older) flock left it. */
export function setUserVersion(stateDir: string, version: number): void {
  const db = new DatabaseSync(dbPath(stateDir));
  try {
    db.exec(`PRAGMA user_version = ${Math.trunc(version)}`);
  } finally {
    db.close();
  }
}
