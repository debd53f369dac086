import assert from "node:assert/strict";
import { join } from "node:path";
import { ApiError, KubeApi } from "./api.ts";

/**
 * An API server address that accepts connections and never answers (a peer gone without a
 * reset looks the same to the client): every request must end within its bound.
 */
Deno.test("KubeApi: a list, a Node read and a status patch to a silent server end within their bound", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn);
  })();
  const dir = await Deno.makeTempDir({ prefix: "flock-kubeapi-" });
  try {
    const kubeconfig = join(dir, "kubeconfig");
    await Deno.writeTextFile(
      kubeconfig,
      `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:${listener.addr.port}"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`,
    );
    const api = new KubeApi({ kubeconfig, requestTimeoutMs: 300 });
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
    assert.ok(held.length >= 3, `${held.length} connections for 3 requests`);
  } finally {
    listener.close();
    await accepting.catch(() => {});
    for (const conn of held) conn.close();
    await Deno.remove(dir, { recursive: true });
  }
});
