import assert from "node:assert/strict";
import { ApiError } from "./api.ts";
import { silentApiServer } from "../../tests/helpers/silent_api_server.ts";

/**
 * An API server address that accepts connections and never answers (a peer gone without a
 * reset looks the same to the client): every request must end within its bound.
 */
Deno.test("KubeApi: a list, a Node read and a status patch to a silent server end within their bound", async () => {
  await using server = await silentApiServer({ requestTimeoutMs: 300 });
  const api = server.api;
  for (
    const [what, call] of [
      ["list", () => api.listNodeConfigs({})],
      ["node read", () => api.nodePodCIDRs("n1")],
      ["status patch", () => api.patchNodeConfigStatus("n1", { ready: true })],
    ] as const
  ) {
    const started = performance.now();
    await assert.rejects(call(), (e: unknown) => {
      assert.ok(e instanceof ApiError, `${what}: ${e}`);
      assert.match(e.message, /no answer in time/);
      return true;
    });
    const ms = performance.now() - started;
    assert.ok(ms < 5_000, `${what} ended after ${Math.round(ms)} ms (bound 300 ms)`);
  }
  // Each timed-out request dropped its connection: every request made a new one.
  assert.ok(server.connections() >= 3, `${server.connections()} connections for 3 requests`);
});
