/**
 * An API server that accepts connections and never answers (hung, or a peer gone without a
 * reset looks the same to the client), and a KubeApi pointed at it through a kubeconfig, for
 * tests proving that requests and stops are bounded.
 *
 * @module
 */

import { join } from "node:path";
import { KubeApi } from "../../agent/kube/api.ts";

/** A silent server, the client pointed at it, and how many connections it has accepted. */
export interface SilentApiServer extends AsyncDisposable {
  api: KubeApi;
  /** Connections accepted so far (each waits for an answer that never comes). */
  connections(): number;
}

/**
 * Starts a silent server on 127.0.0.1 and a KubeApi for it (`requestTimeoutMs` as given, else
 * KubeApi's default bound). Dispose it to close the server, its connections and the kubeconfig.
 */
export async function silentApiServer(
  opts: { requestTimeoutMs?: number } = {},
): Promise<SilentApiServer> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn);
  })();
  const dir = await Deno.makeTempDir({ prefix: "flock-silent-api-" });
  const close = async () => {
    listener.close();
    await accepting.catch(() => {});
    for (const conn of held) conn.close();
    await Deno.remove(dir, { recursive: true });
  };
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
    return {
      api: new KubeApi({ kubeconfig, requestTimeoutMs: opts.requestTimeoutMs }),
      connections: () => held.length,
      [Symbol.asyncDispose]: close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}
