import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { InvalidAddressError } from "../netlink/ip.ts";
import {
  AddressConflictError,
  type Attachment,
  AttachmentExistsError,
  AttachmentNotFoundError,
  DB_FILE,
  HostIfaceConflictError,
  SCHEMA_VERSION,
  SchemaVersionError,
  Store,
} from "./store.ts";

type NewAttachment = Omit<Attachment, "state" | "createdAt">;

function attachment(id: string, extra: Partial<NewAttachment> = {}): NewAttachment {
  return {
    containerId: id,
    ifname: "eth0",
    netns: `/var/run/netns/${id}`,
    hostIface: `flk${id}.${extra.ifname ?? "eth0"}`,
    anycast: [],
    ...extra,
  };
}

/** Runs `fn` with a store in a fresh temp dir that is removed afterwards. */
async function withStore(fn: (store: Store, dir: string) => void | Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "flock-store-" });
  const store = Store.open(join(dir, "state"));
  try {
    await fn(store, join(dir, "state"));
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("round trip keeps every field and canonicalises addresses", () =>
  withStore((store) => {
    const before = Date.now();
    store.insertPending(attachment("c1", {
      podNamespace: "default",
      podName: "web-0",
      ipv6: "FD00:0:0:0::0A",
      ipv4: "10.1.2.3",
      anycast: ["fd00:ac::1", "10.99.0.1", "FD00:AC:0::1"],
    }));
    const got = store.get("c1", "eth0");
    assert.ok(got);
    assert.ok(got.createdAt >= before && got.createdAt <= Date.now());
    assert.deepEqual(got, {
      containerId: "c1",
      ifname: "eth0",
      state: "pending",
      netns: "/var/run/netns/c1",
      hostIface: "flkc1.eth0",
      podNamespace: "default",
      podName: "web-0",
      ipv6: "fd00::a",
      ipv4: "10.1.2.3",
      anycast: ["10.99.0.1", "fd00:ac::1"],
      createdAt: got.createdAt,
    });
    assert.equal(store.get("c1", "eth1"), undefined);
    assert.equal(store.get("c2", "eth0"), undefined);

    store.insertPending(attachment("c2"));
    const bare = store.get("c2", "eth0");
    assert.ok(bare);
    assert.equal("ipv6" in bare || "ipv4" in bare || "podName" in bare, false);
    assert.deepEqual(bare.anycast, []);
    assert.equal(store.count(), 2);
    assert.deepEqual(store.list().map((a) => a.containerId), ["c1", "c2"]);
  }));

Deno.test("UNIQUE addresses: conflicts name the address, for both families", () =>
  withStore((store) => {
    store.insertPending(attachment("a", { ipv6: "fd00::1", ipv4: "10.0.0.1" }));

    const v6 = assert.throws(
      () => store.insertPending(attachment("b", { ipv6: "fd00:0::1", ipv4: "10.0.0.2" })),
      (e: unknown) =>
        e instanceof AddressConflictError && e.address === "fd00::1" &&
        e.holder.containerId === "a" && e.message.includes("fd00::1"),
    );
    void v6;
    assert.throws(
      () => store.insertPending(attachment("b", { ipv6: "fd00::2", ipv4: "10.0.0.1" })),
      (e: unknown) =>
        e instanceof AddressConflictError && e.address === "10.0.0.1" &&
        e.message.includes("10.0.0.1"),
    );
    // A rejected insert leaves nothing behind, not even its anycast rows.
    assert.equal(store.get("b", "eth0"), undefined);
    assert.equal(store.count(), 1);
    // Same container, second interface, distinct addresses: allowed.
    store.insertPending(attachment("a", { ifname: "net1", ipv6: "fd00::2", ipv4: "10.0.0.2" }));
    assert.equal(store.count(), 2);
  }));

Deno.test("insertPending rejects an existing key and wrong-family addresses", () =>
  withStore((store) => {
    store.insertPending(attachment("a", { ipv6: "fd00::1" }));
    assert.throws(
      () => store.insertPending(attachment("a", { ipv6: "fd00::9" })),
      AttachmentExistsError,
    );
    assert.throws(
      () => store.insertPending(attachment("x", { ipv6: "10.0.0.1" })),
      InvalidAddressError,
    );
    assert.throws(
      () => store.insertPending(attachment("x", { ipv4: "fd00::5" })),
      InvalidAddressError,
    );
    assert.throws(
      () => store.insertPending(attachment("x", { anycast: ["nope"] })),
      InvalidAddressError,
    );
    assert.equal(store.count(), 1);
    assert.equal(store.get("a", "eth0")?.ipv6, "fd00::1");
  }));

Deno.test("pending -> committed, listByState, commit of a missing key", () =>
  withStore((store) => {
    store.insertPending(attachment("a"));
    store.insertPending(attachment("b"));
    store.commit("a", "eth0");
    assert.equal(store.get("a", "eth0")?.state, "committed");
    store.commit("a", "eth0"); // idempotent
    assert.deepEqual(store.listByState("committed").map((a) => a.containerId), ["a"]);
    assert.deepEqual(store.listByState("pending").map((a) => a.containerId), ["b"]);
    assert.throws(() => store.commit("zz", "eth0"), AttachmentNotFoundError);
  }));

Deno.test("delete frees the addresses and cascades the anycast rows", () =>
  withStore((store) => {
    store.insertPending(attachment("a", { ipv6: "fd00::1", anycast: ["fd00:ac::1"] }));
    assert.equal(store.delete("a", "eth0"), true);
    assert.equal(store.delete("a", "eth0"), false);
    assert.equal(store.count(), 0);
    store.insertPending(attachment("b", { ipv6: "fd00::1" }));
    assert.deepEqual(store.get("b", "eth0")?.anycast, []);
    assert.equal(store.integrityCheck(), "ok");
  }));

Deno.test("one anycast address can be held by two attachments", () =>
  withStore((store) => {
    store.insertPending(attachment("a", { anycast: ["fd00:ac::1", "10.99.0.1"] }));
    store.insertPending(attachment("b", { anycast: ["fd00:ac::1"] }));
    assert.deepEqual(store.get("a", "eth0")?.anycast, ["10.99.0.1", "fd00:ac::1"]);
    assert.deepEqual(store.get("b", "eth0")?.anycast, ["fd00:ac::1"]);
    store.delete("a", "eth0");
    assert.deepEqual(store.get("b", "eth0")?.anycast, ["fd00:ac::1"]);
  }));

Deno.test("releases are remembered, keep the latest time, and prune", () =>
  withStore((store) => {
    store.recordRelease("fd00::1", 1000);
    store.recordRelease("FD00::0:1", 3000);
    store.recordRelease("fd00::1", 2000); // older than the stored one: ignored
    store.recordRelease("10.0.0.1", 1500);
    assert.deepEqual(store.recentReleases(0), [
      { ip: "10.0.0.1", at: 1500 },
      { ip: "fd00::1", at: 3000 },
    ]);
    assert.deepEqual(store.recentReleases(2000), [{ ip: "fd00::1", at: 3000 }]);
    store.pruneReleases(2000);
    assert.deepEqual(store.recentReleases(0), [{ ip: "fd00::1", at: 3000 }]);
  }));

Deno.test("data persists across reopen", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-store-" });
  try {
    const first = Store.open(dir);
    first.insertPending(
      attachment("a", { ipv6: "fd00::1", ipv4: "10.0.0.1", anycast: ["fd00:ac::1"] }),
    );
    first.commit("a", "eth0");
    first.insertPending(attachment("b", { ipv6: "fd00::2" }));
    first.recordRelease("fd00::9", 42);
    const snapshot = first.list();
    first.close();
    first.close(); // idempotent

    const second = Store.open(dir);
    try {
      assert.deepEqual(second.list(), snapshot);
      assert.deepEqual(second.recentReleases(0), [{ ip: "fd00::9", at: 42 }]);
      assert.throws(
        () => second.insertPending(attachment("c", { ipv6: "fd00::1" })),
        AddressConflictError,
      );
      assert.equal(second.integrityCheck(), "ok");
    } finally {
      second.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("WAL, synchronous=FULL, foreign keys and schema version are in effect", () =>
  withStore((store) => {
    assert.deepEqual(store.pragmas(), {
      journalMode: "wal",
      synchronous: 2, // FULL
      foreignKeys: 1,
      userVersion: SCHEMA_VERSION,
    });
    // journal_mode=WAL is persistent: an independent connection sees it too.
    const raw = new DatabaseSync(store.path, { readOnly: true });
    try {
      assert.deepEqual({ ...raw.prepare("PRAGMA journal_mode").get() }, { journal_mode: "wal" });
    } finally {
      raw.close();
    }
  }));

Deno.test("host interface names: looked up by name, and no two attachments share one", () =>
  withStore((store) => {
    store.insertPending(attachment("first", { hostIface: "flock91061e8b" }));
    assert.deepEqual(store.hostIfaceHolder("flock91061e8b"), {
      containerId: "first",
      ifname: "eth0",
    });
    assert.equal(store.hostIfaceHolder("flock00000000"), undefined);
    assert.throws(
      () => store.insertPending(attachment("second", { hostIface: "flock91061e8b" })),
      (e: Error) =>
        e instanceof HostIfaceConflictError && /flock91061e8b .* first\/eth0/.test(e.message),
    );
    assert.equal(store.get("second", "eth0"), undefined, "nothing of the refused one is kept");
    store.delete("first", "eth0");
    assert.equal(store.hostIfaceHolder("flock91061e8b"), undefined);
  }));

Deno.test("a pending insert, failed or not, leaves the connection at synchronous=FULL", () =>
  withStore((store) => {
    const rec = attachment("sync", { ipv6: "fd00::51", ipv4: "10.0.0.51" });
    store.insertPending(rec);
    assert.equal(store.pragmas().synchronous, 2);
    assert.throws(() => store.insertPending(rec), AttachmentExistsError);
    assert.equal(store.pragmas().synchronous, 2);
    store.commit(rec.containerId, rec.ifname);
    assert.equal(store.get(rec.containerId, rec.ifname)?.state, "committed");
  }));

Deno.test("state dir is 0700, database files are 0600", async () => {
  const parent = await Deno.makeTempDir({ prefix: "flock-store-" });
  const oldUmask = Deno.umask(0o022);
  try {
    const dir = join(parent, "a", "b");
    const store = Store.open(dir);
    try {
      store.insertPending(attachment("a")); // makes sure the -wal file exists
      assert.equal(store.path, join(dir, DB_FILE));
      assert.equal(Deno.statSync(dir).mode! & 0o777, 0o700);
      for (const suffix of ["", "-wal", "-shm"]) {
        assert.equal(Deno.statSync(store.path + suffix).mode! & 0o777, 0o600, `flock.db${suffix}`);
      }
    } finally {
      store.close();
    }
    // An existing directory keeps its mode; an existing database file is tightened.
    const shared = join(parent, "shared");
    Deno.mkdirSync(shared, { mode: 0o755 });
    Deno.writeFileSync(join(shared, DB_FILE), new Uint8Array(), { mode: 0o644 });
    Store.open(shared).close();
    assert.equal(Deno.statSync(shared).mode! & 0o777, 0o755);
    assert.equal(Deno.statSync(join(shared, DB_FILE)).mode! & 0o777, 0o600);
  } finally {
    Deno.umask(oldUmask);
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("releasing: marked after commit, listed by state, out of anycast, finished in one go", () =>
  withStore((store) => {
    store.insertPending(
      attachment("r1", { ipv6: "fd00::1", ipv4: "10.0.0.1", anycast: ["10.9.9.9"] }),
    );
    assert.equal(store.markReleasing("r1", "eth0", 1000), false, "a pending record is not");
    store.commit("r1", "eth0");
    store.insertPending(attachment("r2", { ipv6: "fd00::2", anycast: ["10.9.9.9"] }));
    store.commit("r2", "eth0");
    assert.deepEqual(store.listAnycastHolders("10.9.9.9").map((h) => h.containerId), ["r1", "r2"]);

    assert.equal(store.markReleasing("r1", "eth0", 1000), true);
    assert.equal(store.get("r1", "eth0")?.state, "releasing");
    assert.deepEqual(store.listByState("releasing").map((a) => a.containerId), ["r1"]);
    assert.deepEqual(store.listByState("committed").map((a) => a.containerId), ["r2"]);
    assert.deepEqual(store.list().map((a) => a.state), ["releasing", "committed"]);
    assert.deepEqual(store.listAnycastHolders("10.9.9.9").map((h) => h.containerId), ["r2"]);
    store.commit("r1", "eth0");
    assert.equal(store.get("r1", "eth0")?.state, "releasing", "commit does not undo it");
    assert.throws(
      () => store.insertPending(attachment("r3", { ipv6: "fd00::1" })),
      AddressConflictError,
      "a releasing record still holds its addresses",
    );

    assert.equal(store.finishRelease("r1", "eth0", ["FD00::1", "10.0.0.1"], 2000), true);
    assert.equal(store.get("r1", "eth0"), undefined);
    assert.deepEqual(store.recentReleases(0), [
      { ip: "10.0.0.1", at: 2000 },
      { ip: "fd00::1", at: 2000 },
    ]);
    assert.equal(store.finishRelease("r1", "eth0", [], 3000), false);
  }));

Deno.test("a schema-1 database (before releasing) is migrated and keeps its records", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-store-" });
  try {
    Store.open(dir).close();
    // Back to what schema 1 wrote: no releasing_at column.
    const raw = new DatabaseSync(join(dir, DB_FILE));
    raw.exec(
      "DROP INDEX attachment_host_iface; ALTER TABLE attachment DROP COLUMN releasing_at; " +
        "ALTER TABLE attachment DROP COLUMN network; PRAGMA user_version = 1",
    );
    raw.exec(`INSERT INTO attachment (container_id, ifname, state, netns, host_iface, ipv6,
      created_at) VALUES ('old', 'eth0', 'committed', '/x', 'flkold', 'fd00::9', 1)`);
    raw.close();
    const store = Store.open(dir);
    try {
      assert.equal(store.pragmas().userVersion, SCHEMA_VERSION);
      assert.equal(store.get("old", "eth0")?.state, "committed");
      assert.equal(store.markReleasing("old", "eth0", 5), true);
      assert.equal(store.get("old", "eth0")?.state, "releasing");
    } finally {
      store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a schema-3 database (before networks) is migrated: its records name no network", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-store-" });
  try {
    Store.open(dir).close();
    const raw = new DatabaseSync(join(dir, DB_FILE));
    raw.exec("ALTER TABLE attachment DROP COLUMN network; PRAGMA user_version = 3");
    raw.exec(`INSERT INTO attachment (container_id, ifname, state, netns, host_iface, ipv6,
      created_at) VALUES ('old', 'eth0', 'committed', '/x', 'flkold', 'fd00::9', 1)`);
    raw.close();
    const store = Store.open(dir);
    try {
      assert.equal(store.pragmas().userVersion, SCHEMA_VERSION);
      const old = store.get("old", "eth0");
      assert.equal(old?.state, "committed");
      assert.equal(old && "network" in old, false);
      assert.deepEqual(store.interfacesOf("old"), [{ ifname: "eth0" }]);
      // The first network to name it claims it; a second cannot take it over.
      assert.equal(store.claimNetwork("old", "eth0", "net-a"), true);
      assert.equal(store.claimNetwork("old", "eth0", "net-b"), false);
      assert.equal(store.get("old", "eth0")?.network, "net-a");
      assert.deepEqual(store.interfacesOf("old"), [{ ifname: "eth0", network: "net-a" }]);
      assert.equal(store.claimNetwork("none", "eth0", "net-a"), false);
    } finally {
      store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an attachment keeps the network it was made for", () =>
  withStore((store) => {
    store.insertPending(attachment("n1", { network: "net-a" }));
    store.insertPending(attachment("n2"));
    assert.equal(store.get("n1", "eth0")?.network, "net-a");
    assert.equal(store.claimNetwork("n1", "eth0", "net-b"), false, "a named record stays named");
    assert.deepEqual(store.list().map((a) => a.network), ["net-a", undefined]);
    assert.deepEqual(store.interfacesOf("n1"), [{ ifname: "eth0", network: "net-a" }]);
    assert.deepEqual(store.interfacesOf("n2"), [{ ifname: "eth0" }]);
    assert.deepEqual(store.interfacesOf("n3"), []);
  }));

Deno.test("a database from a newer schema is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-store-" });
  try {
    Store.open(dir).close();
    const raw = new DatabaseSync(join(dir, DB_FILE));
    raw.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();
    assert.throws(() => Store.open(dir), SchemaVersionError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("insert + commit cost (WAL, synchronous=FULL)", () =>
  withStore((store) => {
    const n = 300;
    let insertMs = 0;
    let commitMs = 0;
    for (let i = 0; i < n; i++) {
      const rec = attachment(`p${i}`, {
        ipv6: `fd00::${(i + 1).toString(16)}`,
        ipv4: `10.0.${i >> 8}.${i & 255}`,
        anycast: ["fd00:ac::1"],
      });
      let t = performance.now();
      store.insertPending(rec);
      insertMs += performance.now() - t;
      t = performance.now();
      store.commit(rec.containerId, rec.ifname);
      commitMs += performance.now() - t;
    }
    console.log(
      `store: ${n} × insertPending mean ${(insertMs / n).toFixed(3)} ms, ` +
        `commit mean ${(commitMs / n).toFixed(3)} ms`,
    );
    // Loose bound: only catches a gross regression, not a slow shared disk.
    assert.ok((insertMs + commitMs) / n < 50);
  }));

/** Child program for the crash test: churns the store until it is killed or its budget ends. */
const CRASH_CHILD = `
import { Store } from ${JSON.stringify(new URL("./store.ts", import.meta.url).href)};
const [dir, runText] = Deno.args;
const run = Number(runText);
const store = Store.open(dir);
const live = [];
const deadline = Date.now() + 10_000;
for (let i = 0; i < 200_000 && Date.now() < deadline; i++) {
  // 64 address slots per run with at most 40 live rows, so freed addresses get reused.
  const slot = i % 64;
  const id = "r" + run + "-" + i;
  store.insertPending({
    containerId: id, ifname: "eth0", netns: "/var/run/netns/" + id, hostIface: "flk" + run + "-" + i,
    ipv6: "fd00::" + run + ":" + slot.toString(16), ipv4: "10." + run + ".0." + slot,
    anycast: ["fd00:ac::1", "10.99.0.1"],
  });
  store.commit(id, "eth0");
  // "ready" only once a row is durable: under load the first fsync can take longer than the kill delay.
  if (i === 0) console.log("ready");
  live.push([id, slot]);
  if (live.length > 40) {
    const [old, oldSlot] = live.shift();
    store.delete(old, "eth0");
    store.recordRelease("10." + run + ".0." + oldSlot, Date.now());
  }
}
store.close();
`;

/** Reads the child's stdout until it says "ready"; false if it never does within `ms`. */
async function waitReady(child: Deno.ChildProcess, ms: number): Promise<boolean> {
  const reader = child.stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), ms));
  try {
    for (let i = 0; i < 100 && !text.includes("ready"); i++) {
      const chunk = await Promise.race([reader.read(), timeout]);
      if (chunk === "timeout" || chunk.done) return false;
      text += decoder.decode(chunk.value);
    }
    return text.includes("ready");
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
}

Deno.test("SIGKILL during churn leaves a consistent database", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-store-crash-" });
  const script = join(dir, "child.ts");
  await Deno.writeTextFile(script, CRASH_CHILD);
  const stateDir = join(dir, "state");
  try {
    for (let run = 1; run <= 3; run++) {
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--no-lock",
          "--no-config",
          "--allow-read",
          "--allow-write",
          // Store.open creates its files through flock's libc binding (agent/private_file.ts).
          "--allow-ffi",
          script,
          stateDir,
          `${run}`,
        ],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      let status: Deno.CommandStatus;
      try {
        assert.ok(await waitReady(child, 15_000), "child never became ready");
        const delay = 200 + Math.floor(Math.random() * 400);
        await new Promise((r) => setTimeout(r, delay));
      } finally {
        try {
          child.kill("SIGKILL");
        } catch {
          // already exited
        }
        status = await child.status;
        await child.stdout.cancel().catch(() => {});
      }
      assert.equal(status.signal, "SIGKILL", "child should still have been running");

      const store = Store.open(stateDir);
      try {
        assert.equal(store.integrityCheck(), "ok");
        const all = store.list();
        const mine = all.filter((a) => a.containerId.startsWith(`r${run}-`));
        assert.ok(mine.length > 0, `run ${run} wrote nothing`);
        assert.ok(mine.length <= 41, `run ${run} left ${mine.length} rows`);
        // Only the row between insertPending and commit can be pending.
        assert.ok(store.listByState("pending").length <= 1);
        for (const a of all) {
          const [, r, i] = a.containerId.match(/^r(\d)-(\d+)$/)!;
          const slot = Number(i) % 64;
          assert.equal(a.ipv6, `fd00::${r}:${slot.toString(16)}`);
          assert.equal(a.ipv4, `10.${r}.0.${slot}`);
          assert.equal(a.netns, `/var/run/netns/${a.containerId}`);
          assert.deepEqual(a.anycast, ["10.99.0.1", "fd00:ac::1"], a.containerId);
        }
        // Remove the pending leftover, as the agent's reconcile would.
        for (const p of store.listByState("pending")) store.delete(p.containerId, p.ifname);
        console.log(`crash run ${run}: ${mine.length} rows of this run, ${all.length} in total`);
      } finally {
        store.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("abandon: a failed ADD's pending record turns releasing, its addresses still held", () =>
  withStore((store) => {
    store.insertPending(attachment("a1", { ipv6: "fd00::a1", ipv4: "10.0.0.161" }));
    assert.equal(store.abandon("a1", "eth0", 1000), true);
    assert.equal(store.get("a1", "eth0")?.state, "releasing");
    assert.deepEqual(store.listByState("releasing").map((a) => a.containerId), ["a1"]);
    assert.equal(store.abandon("a1", "eth0", 2000), false, "already releasing");
    assert.throws(() => store.insertPending(attachment("a2", { ipv6: "fd00::a1" })), /in use|used/);
    store.commit("a1", "eth0");
    assert.equal(store.get("a1", "eth0")?.state, "releasing", "a late commit does not revive it");
    assert.equal(store.abandon("none", "eth0", 1000), false);
  }));
