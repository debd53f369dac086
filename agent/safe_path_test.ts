/**
 * The agent runs as root and creates its database and socket in directories an operator names:
 * a symbolic link planted there by someone else must never make it create, chmod or write
 * another file, and a directory others may write to is refused up front, naming the path.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { ensurePrivateFileSync } from "./private_file.ts";
import { RpcServer } from "./rpc_server.ts";
import { assertSafeDirSync, unsafeDirReason, UnsafePathError } from "./safe_path.ts";
import { DB_FILE, Store } from "./store.ts";

/** A temp dir (0700, under sticky /tmp) removed after `fn`, failing or not. */
async function withTempDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "flock-safe-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A file outside the directory under test, with content and mode to check afterwards. */
function plantTarget(dir: string): { path: string; untouched: () => void } {
  const path = join(dir, "victim");
  Deno.writeTextFileSync(path, "precious\n");
  Deno.chmodSync(path, 0o644);
  return {
    path,
    untouched: () => {
      assert.equal(Deno.readTextFileSync(path), "precious\n", "target content unchanged");
      assert.equal(Deno.statSync(path).mode! & 0o7777, 0o644, "target mode unchanged");
    },
  };
}

Deno.test("unsafeDirReason: owner root or self, no group/other write unless sticky", () => {
  assert.equal(unsafeDirReason({ uid: 0, mode: 0o40755 }, 0), undefined);
  assert.equal(unsafeDirReason({ uid: 1000, mode: 0o40700 }, 1000), undefined);
  assert.equal(unsafeDirReason({ uid: 0, mode: 0o41777 }, 0), undefined, "sticky /tmp");
  assert.match(unsafeDirReason({ uid: 0, mode: 0o40777 }, 0)!, /writable by others \(mode 0777\)/);
  assert.match(unsafeDirReason({ uid: 0, mode: 0o40775 }, 0)!, /writable by its group/);
  assert.match(unsafeDirReason({ uid: 1000, mode: 0o40755 }, 0)!, /owned by uid 1000/);
  // Without the uid (the plugin has no --allow-sys), only root's directories count as safe.
  assert.match(unsafeDirReason({ uid: 1000, mode: 0o40700 }, undefined)!, /owned by uid 1000/);
});

Deno.test("assertSafeDirSync: a world-writable ancestor is named; a sticky one is fine", async () => {
  await withTempDir((dir) => {
    const open = join(dir, "open");
    Deno.mkdirSync(join(open, "state"), { recursive: true });
    Deno.chmodSync(open, 0o777);
    assert.throws(
      () => assertSafeDirSync(join(open, "state"), "state directory"),
      (e: Error) =>
        e instanceof UnsafePathError && e.message.includes(`lies under ${open}`) &&
        /writable by others \(mode 0777\)/.test(e.message),
    );
    Deno.chmodSync(open, 0o1777);
    assertSafeDirSync(join(open, "state"), "state directory");
  });
});

Deno.test("Store.open: a world-writable state dir is refused, naming it, before any file", async () => {
  await withTempDir((dir) => {
    const state = join(dir, "state");
    Deno.mkdirSync(state);
    Deno.chmodSync(state, 0o777);
    assert.throws(
      () => Store.open(state),
      (e: Error) => e instanceof UnsafePathError && e.message.includes(`state directory ${state}`),
    );
    assert.deepEqual([...Deno.readDirSync(state)], [], "nothing created");
  });
});

Deno.test("Store.open: a symlink planted at flock.db or its -wal/-shm is refused, target untouched", async () => {
  for (const suffix of ["", "-wal", "-shm"]) {
    await withTempDir((dir) => {
      const target = plantTarget(dir);
      // A sticky, world-writable state dir (as /tmp): others can add names there, so the
      // directory check passes and only the no-follow open stands between them and root.
      const state = join(dir, "state");
      Deno.mkdirSync(state);
      Deno.chmodSync(state, 0o1777);
      Deno.symlinkSync(target.path, join(state, DB_FILE + suffix));
      assert.throws(
        () => Store.open(state),
        (e: Error) =>
          e instanceof UnsafePathError &&
          e.message.includes(`${join(state, DB_FILE + suffix)}: it is a symbolic link`),
        `flock.db${suffix}`,
      );
      target.untouched();
    });
  }
});

Deno.test("Store.open: a dangling symlink at flock.db creates nothing at its target", async () => {
  await withTempDir((dir) => {
    const state = join(dir, "state");
    Deno.mkdirSync(state);
    Deno.symlinkSync(join(dir, "created-through-link"), join(state, DB_FILE));
    assert.throws(() => Store.open(state), UnsafePathError);
    assert.throws(() => Deno.lstatSync(join(dir, "created-through-link")), Deno.errors.NotFound);
  });
});

Deno.test("ensurePrivateFileSync: creates a missing file 0600 despite the umask, tightens a 0644 one", async () => {
  await withTempDir((dir) => {
    const fresh = join(dir, "fresh");
    const loose = join(dir, "loose");
    Deno.writeTextFileSync(loose, "kept");
    Deno.chmodSync(loose, 0o644);
    const umask = Deno.umask(0o000);
    try {
      ensurePrivateFileSync(fresh);
      ensurePrivateFileSync(loose);
    } finally {
      Deno.umask(umask);
    }
    assert.equal(Deno.statSync(fresh).mode! & 0o7777, 0o600);
    assert.equal(Deno.statSync(fresh).size, 0);
    assert.equal(Deno.statSync(loose).mode! & 0o7777, 0o600);
    assert.equal(Deno.readTextFileSync(loose), "kept");
  });
});

Deno.test("ensurePrivateFileSync: a FIFO at the name is refused at once, not waited on", async () => {
  await withTempDir(async (dir) => {
    const fifo = join(dir, "fifo");
    const mk = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.ok(mk.success);
    assert.throws(() => ensurePrivateFileSync(fifo), /not a regular file/);
  });
});

Deno.test({
  name: "ensurePrivateFileSync: another user's file is refused and keeps its mode",
  ...ROOT_ONLY,
  fn: () =>
    withTempDir((dir) => {
      const path = join(dir, "theirs");
      Deno.writeTextFileSync(path, "x");
      Deno.chmodSync(path, 0o644);
      Deno.chownSync(path, 65534, 65534);
      assert.throws(() => ensurePrivateFileSync(path), /belongs to uid 65534/);
      assert.equal(Deno.statSync(path).mode! & 0o777, 0o644);
    }),
});

Deno.test("RpcServer.start: a world-writable socket dir is refused, naming it", async () => {
  await withTempDir(async (dir) => {
    const sockets = join(dir, "run");
    Deno.mkdirSync(sockets);
    Deno.chmodSync(sockets, 0o777);
    const server = new RpcServer({
      path: join(sockets, "flock.sock"),
      handler: () => Promise.resolve({ ok: true }),
    });
    await assert.rejects(
      server.start(),
      (e: Error) =>
        e instanceof UnsafePathError && e.message.includes(`socket directory ${sockets}`),
    );
    assert.deepEqual([...Deno.readDirSync(sockets)], [], "no socket bound");
  });
});

Deno.test("RpcServer.start: a symlink planted at the socket's name is refused, target untouched", async () => {
  await withTempDir(async (dir) => {
    const target = plantTarget(dir);
    const sockets = join(dir, "run");
    Deno.mkdirSync(sockets, { mode: 0o1777 });
    Deno.chmodSync(sockets, 0o1777);
    const path = join(sockets, "flock.sock");
    Deno.symlinkSync(target.path, path);
    const server = new RpcServer({ path, handler: () => Promise.resolve({ ok: true }) });
    await assert.rejects(server.start(), /not a socket/);
    target.untouched();
    assert.ok(Deno.lstatSync(path).isSymlink, "the link is left for the operator to see");
  });
});
