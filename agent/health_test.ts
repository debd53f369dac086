import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { fileIdentity, isStoreError, RuntimeHealth } from "./health.ts";
import { handleHttp } from "./http_server.ts";

Deno.test("RuntimeHealth: socket and database deleted or replaced, a failed write until the next good one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flk-health-" });
  try {
    const socket = join(dir, "agent.sock");
    const db = join(dir, "flock.db");
    const listener = Deno.listen({ transport: "unix", path: socket });
    await Deno.writeTextFile(db, "");
    const health = new RuntimeHealth();
    assert.equal(health.problem(), undefined, "nothing recorded: nothing to compare");
    health.socketBound(socket);
    health.storeOpened(db);
    assert.equal(health.problem(), undefined);
    assert.equal(health.fatalProblem(), undefined);

    health.writeFailed(new Error("database or disk is full"));
    assert.equal(health.problem(), "the last store write failed: database or disk is full");
    health.writeSucceeded();
    assert.equal(health.problem(), undefined);

    await Deno.remove(db);
    assert.match(health.problem()!, /database .*flock\.db was deleted/);
    await Deno.writeTextFile(db, "");
    assert.match(health.problem()!, /database .*flock\.db was replaced by another file/);

    listener.close(); // removes nothing: Deno leaves the socket file
    await Deno.remove(socket).catch(() => {});
    assert.match(health.problem()!, /socket .*agent\.sock was deleted/);
    assert.match(health.fatalProblem()!, /socket .*agent\.sock was deleted/);
    const other = Deno.listen({ transport: "unix", path: socket });
    try {
      assert.match(health.problem()!, /socket .*agent\.sock was replaced/);
      assert.equal(health.fatalProblem(), undefined, "another live socket: a restart cannot help");
    } finally {
      other.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("isStoreError: what node:sqlite throws, not other errors", () => {
  const db = new DatabaseSync(":memory:");
  try {
    let thrown: unknown;
    try {
      db.exec("INSERT INTO missing VALUES (1)");
    } catch (e) {
      thrown = e;
    }
    assert.ok(isStoreError(thrown));
    assert.ok(!isStoreError(new Error("no")));
    assert.ok(!isStoreError(undefined));
  } finally {
    db.close();
  }
  assert.equal(fileIdentity("/nonexistent/flk"), undefined);
});

Deno.test("/healthz: 503 with the reason when the source says the process must be restarted", async () => {
  const probe: { live?: string } = {};
  const source = {
    notReadyReason: () => undefined,
    notLiveReason: () => probe.live,
    metrics: () => Promise.resolve(""),
  };
  const get = () => handleHttp(new Request("http://x/healthz"), source);
  assert.equal((await get()).status, 200);
  probe.live = "the agent's socket /run/flock/flock.sock was deleted";
  const r = await get();
  assert.equal(r.status, 503);
  assert.equal(await r.text(), `not live: ${probe.live}\n`);
});
