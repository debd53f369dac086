import assert from "node:assert/strict";
import { type ListPage, PODS_PATH } from "./api.ts";
import { Reflector, type ReflectorSource } from "./reflector.ts";
import { silentApiServer } from "../../tests/helpers/silent_api_server.ts";

/** Waits (bounded) until the server has accepted a connection: a request is in flight. */
async function untilConnected(connections: () => number): Promise<void> {
  const deadline = performance.now() + 5_000;
  while (connections() === 0) {
    assert.ok(performance.now() < deadline, "the reflector never connected");
    await new Promise((r) => setTimeout(r, 10));
  }
  // The TLS client hello is on its way: the request is now waiting for the server.
  await new Promise((r) => setTimeout(r, 50));
}

/** Starts a reflector on `source`, stops it once a request hangs; returns stop()'s duration. */
async function stopWhileHung(source: ReflectorSource, connections: () => number) {
  const logs: Record<string, unknown>[] = [];
  const reflector = new Reflector({
    name: "pods",
    source,
    project: (o) => o,
    log: (f) => logs.push(f),
  });
  reflector.start();
  await untilConnected(connections);
  const started = performance.now();
  await reflector.stop();
  return { ms: performance.now() - started, logs };
}

Deno.test("Reflector.stop() aborts a list the API server never answers, at once", async () => {
  await using server = await silentApiServer();
  const { ms, logs } = await stopWhileHung({
    path: PODS_PATH,
    list: (q) => server.api.listPods(q),
    watch: (...args) => server.api.watch(...args),
  }, server.connections);
  assert.ok(ms < 1_000, `stop() took ${Math.round(ms)} ms with a list in flight`);
  // A stop is no failure to reach the API server.
  assert.deepEqual(logs.filter((l) => l.level === "warn"), []);
});

Deno.test("Reflector.stop() aborts a watch connect the API server never answers, at once", async () => {
  await using server = await silentApiServer();
  let lists = 0;
  const { ms, logs } = await stopWhileHung({
    path: PODS_PATH,
    list: (): Promise<ListPage> => {
      lists++;
      return Promise.resolve({ items: [], resourceVersion: "7", continueToken: "" });
    },
    watch: (...args) => server.api.watch(...args),
  }, server.connections);
  assert.equal(lists, 1);
  assert.ok(ms < 1_000, `stop() took ${Math.round(ms)} ms with a watch connect in flight`);
  assert.deepEqual(logs.filter((l) => l.level === "warn"), []);
});

Deno.test("KubeApi.watch with an already aborted signal ends at once without connecting", async () => {
  await using server = await silentApiServer();
  const done = Promise.withResolvers<unknown>();
  const handle = await server.api.watch(
    PODS_PATH,
    "1",
    { signal: AbortSignal.abort() },
    () => assert.fail("no event expected"),
    done.resolve,
  );
  assert.equal(await done.promise, undefined);
  handle.stop();
  assert.equal(server.connections(), 0);
});
