/**
 * Store upgrades and downgrades as an operator meets them: a busy node's schema-2 database
 * (before the host-interface index and the network column) upgraded in one go, a `kill -9` in
 * the middle of that upgrade leaving the old schema whole, a database from a newer flock refused
 * without being changed, and the records an older agent let share a host veth name found.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { HostIfaceConflictError, SCHEMA_VERSION, SchemaVersionError, Store } from "./store.ts";
import {
  manyOldRecords,
  schemaOf,
  setUserVersion,
  writeSchema2Store,
} from "../tests/helpers/old_store.ts";
import { run } from "../tests/helpers/exec.ts";
import { denoPath, REPO_ROOT } from "../tests/helpers/tools.ts";

const RECORDS = 1_000;

async function withStateDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "flock-migrate-" });
  try {
    await fn(join(dir, "state"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The schema-2 store of 1,000 pods, two of which share a host veth name as the old agent did. */
function busyOldStore(stateDir: string): void {
  const records = manyOldRecords(RECORDS);
  records[RECORDS - 1].hostIface = records[7].hostIface;
  writeSchema2Store(stateDir, records);
}

const SCHEMA_2 = {
  userVersion: 2,
  columns: [
    "container_id",
    "ifname",
    "state",
    "netns",
    "host_iface",
    "pod_namespace",
    "pod_name",
    "ipv6",
    "ipv4",
    "created_at",
    "releasing_at",
  ],
  indexes: ["anycast_address", "attachment_state", "release_at"],
  rows: RECORDS,
};

Deno.test("a schema-2 store of 1,000 pods is upgraded whole: every record kept", () =>
  withStateDir((dir) => {
    busyOldStore(dir);
    assert.deepEqual(schemaOf(dir), SCHEMA_2);
    const store = Store.open(dir);
    try {
      assert.equal(store.pragmas().userVersion, SCHEMA_VERSION);
      assert.equal(store.count(), RECORDS);
      const first = store.list()[0];
      assert.equal(first.state, "committed");
      assert.equal(first.ipv6, "fd00:9::1");
      assert.equal("network" in first, false, "records from before schema 4 name no network");
      assert.equal(store.integrityCheck(), "ok");
      assert.deepEqual(store.sharedHostIfaces(), [manyOldRecords(8)[7].hostIface]);
    } finally {
      store.close();
    }
    const after = schemaOf(dir);
    assert.ok(after.columns.includes("network"));
    assert.ok(after.indexes.includes("attachment_host_iface"));
  }));

for (const killedAt of [3, SCHEMA_VERSION]) {
  Deno.test(`kill -9 in the upgrade's transaction (after the step to ${killedAt}) leaves schema 2 whole`, () =>
    withStateDir(async (dir) => {
      busyOldStore(dir);
      const child = await run([
        denoPath(),
        "run",
        "-A",
        "--no-lock",
        join(REPO_ROOT, "tests/helpers/migrate_and_die.ts"),
        dir,
        String(killedAt),
      ], { timeoutMs: 30_000 });
      assert.equal(child.code, 137, `killed by SIGKILL: ${child.stdout}${child.stderr}`);
      assert.deepEqual(schemaOf(dir), SCHEMA_2, "the old schema, nothing half-applied");
      // The next start upgrades it as if nothing had happened.
      const store = Store.open(dir);
      try {
        assert.equal(store.pragmas().userVersion, SCHEMA_VERSION);
        assert.equal(store.count(), RECORDS);
        assert.equal(store.integrityCheck(), "ok");
      } finally {
        store.close();
      }
    }));
}

Deno.test("a store from a newer flock is refused with the file, its version and ours, untouched", () =>
  withStateDir((dir) => {
    busyOldStore(dir);
    Store.open(dir).close();
    setUserVersion(dir, SCHEMA_VERSION + 1);
    const before = schemaOf(dir);
    assert.throws(
      () => Store.open(dir),
      (e: unknown) => {
        assert.ok(e instanceof SchemaVersionError);
        assert.match(e.message, new RegExp(`${dir}/flock\\.db has store schema version`));
        assert.match(e.message, new RegExp(`${SCHEMA_VERSION + 1}, newer than this flock's`));
        assert.match(e.message, /downgrades are not supported/);
        return true;
      },
    );
    assert.deepEqual(schemaOf(dir), before);
  }));

Deno.test("renameHostIface gives a record a name of its own, never one another record holds", () =>
  withStateDir((dir) => {
    const records = manyOldRecords(3);
    records[2].hostIface = records[0].hostIface;
    writeSchema2Store(dir, records);
    const store = Store.open(dir);
    try {
      const [a, b, c] = store.list();
      assert.deepEqual(store.sharedHostIfaces(), [a.hostIface]);
      assert.throws(
        () => store.renameHostIface(c.containerId, "eth0", b.hostIface),
        HostIfaceConflictError,
      );
      assert.equal(store.renameHostIface(c.containerId, "eth0", "flockfeedbeef"), true);
      assert.equal(store.get(c.containerId, "eth0")?.hostIface, "flockfeedbeef");
      assert.deepEqual(store.sharedHostIfaces(), []);
      assert.equal(store.renameHostIface(a.containerId, "eth0", a.hostIface), true, "its own");
      assert.equal(store.renameHostIface("nobody", "eth0", "flock00000bad"), false);
    } finally {
      store.close();
    }
  }));
