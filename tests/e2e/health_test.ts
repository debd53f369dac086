/**
 * Probes and shutdown an operator can trust, through the real agent process:
 *
 * - `/readyz` answers 503 (and why) once a CNI call would fail: the agent's socket deleted or
 *   replaced, its `flock.db` deleted, a store write failed (the WAL file made immutable); it is
 *   200 again once a write goes through. `/healthz` fails only when the socket is gone (a
 *   restart binds it again).
 * - SIGTERM while the API server accepts connections and never answers (a hung API server
 *   behind a load balancer) ends the agent within the shutdown budget (10 s), cleanly (its
 *   socket removed, "stopped" logged), well inside the kubelet's 30 s grace period.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { FlockNode, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY, runOk } from "../helpers/exec.ts";
import { eventually } from "../helpers/eventually.ts";
import { startKubeWithFlock } from "../helpers/kube.ts";
import { renderKubeconfig } from "../helpers/kube_pki.ts";
import { SHUTDOWN_BUDGET_MS } from "../../agent/shutdown.ts";

const SPEC = { cidr6: "fd00:4e::/64", cidr4: "10.78.0.0/24" };

async function probe(node: FlockNode, path: "/readyz" | "/healthz") {
  const r = await node.httpGet(path);
  return { status: r.status, body: r.body.trim() };
}

Deno.test({
  name: "health: a deleted or replaced socket makes /readyz 503; a deleted one /healthz too",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using node = await FlockNode.start({ config: SPEC });
    assert.deepEqual(await probe(node, "/readyz"), { status: 200, body: "ready" });
    assert.deepEqual(await probe(node, "/healthz"), { status: 200, body: "ok" });

    await Deno.remove(node.socketPath);
    const deleted = await probe(node, "/readyz");
    assert.equal(deleted.status, 503);
    assert.match(deleted.body, /socket .*flock\.sock was deleted; CNI calls cannot reach/);
    const dead = await probe(node, "/healthz");
    assert.equal(dead.status, 503);
    assert.match(dead.body, /^not live: the agent's socket .* was deleted$/);
    // What the kubelet's restart would meet: a plugin call that cannot reach the agent.
    assert.notEqual((await node.cni("STATUS")).code, 0);

    // Someone else's socket in its place: not ready, but alive (a restart could not bind it).
    const other = Deno.listen({ transport: "unix", path: node.socketPath });
    try {
      const replaced = await probe(node, "/readyz");
      assert.equal(replaced.status, 503);
      assert.match(replaced.body, /socket .* was replaced by another file/);
      assert.equal((await probe(node, "/healthz")).status, 200);
    } finally {
      other.close();
      await Deno.remove(node.socketPath).catch(() => {});
    }
  },
});

Deno.test({
  name: "health: a deleted flock.db makes /readyz 503 (SQLite would write on to the lost inode)",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using node = await FlockNode.start({ config: SPEC });
    assert.equal((await probe(node, "/readyz")).status, 200);
    await Deno.remove(join(node.stateDir, "flock.db"));
    const r = await probe(node, "/readyz");
    assert.equal(r.status, 503);
    assert.match(
      r.body,
      /database .*flock\.db was deleted; what the agent writes now would be lost/,
    );
    assert.equal((await probe(node, "/healthz")).status, 200);
  },
});

Deno.test({
  name: "health: a failed store write makes /readyz 503 until a later write goes through",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using node = await FlockNode.start({ config: SPEC });
    await using podA = await TestNamespace.create("flk-hlth-a");
    await using podB = await TestNamespace.create("flk-hlth-b");
    const wal = join(node.stateDir, "flock.db-wal");
    // Immutable: even root's writes through the open descriptor fail (EPERM), as on a
    // read-only remount.
    await runOk(["chattr", "+i", wal]);
    try {
      const failed = await node.cni("ADD", { containerId: "hlth-a", netns: podA.path });
      assert.notEqual(failed.code, 0, failed.stdout);
      const r = await probe(node, "/readyz");
      assert.equal(r.status, 503);
      assert.match(r.body, /^not ready: the last store write failed: /);
    } finally {
      await runOk(["chattr", "-i", wal]);
    }
    const ok = await node.cni("ADD", { containerId: "hlth-b", netns: podB.path });
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.deepEqual(await probe(node, "/readyz"), { status: 200, body: "ready" });
    assert.equal((await node.cni("DEL", { containerId: "hlth-b", netns: podB.path })).code, 0);
    await node.cni("DEL", { containerId: "hlth-a", netns: podA.path });
  },
});

/**
 * A TCP relay to the API server that can be made to hang: {@link freeze} cuts every relayed
 * connection and from then on accepts new ones and never answers (nor closes them).
 */
class FreezableRelay implements AsyncDisposable {
  readonly #listener: Deno.TcpListener;
  readonly #conns = new Set<Deno.Conn>();
  #frozen = false;

  constructor(readonly upstreamPort: number) {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    void this.#accept();
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  async #accept(): Promise<void> {
    for await (const conn of this.#listener) {
      this.#conns.add(conn);
      if (this.#frozen) continue; // held open, never read, never answered
      void this.#relay(conn);
    }
  }

  async #relay(conn: Deno.Conn): Promise<void> {
    let up: Deno.Conn;
    try {
      up = await Deno.connect({ hostname: "127.0.0.1", port: this.upstreamPort });
    } catch {
      conn.close();
      return;
    }
    this.#conns.add(up);
    const pipe = (from: Deno.Conn, to: Deno.Conn) =>
      from.readable.pipeTo(to.writable).catch(() => {});
    await Promise.all([pipe(conn, up), pipe(up, conn)]);
  }

  freeze(): void {
    this.#frozen = true;
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
    this.#conns.clear();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.freeze();
    this.#listener.close();
    return Promise.resolve();
  }
}

Deno.test({
  name: "shutdown: SIGTERM during a hung API server ends the agent within 10 s, cleanly",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using kube = await startKubeWithFlock();
    const nodeName = "flk-hlth-node";
    await kube.apply([{
      apiVersion: "flock.fritzlab.net/v1alpha1",
      kind: "NodeConfig",
      metadata: { name: nodeName },
      spec: SPEC,
    }]);
    await using relay = new FreezableRelay(kube.apiserverPort);
    const kubeconfig = join(kube.dir, "relayed.kubeconfig");
    await Deno.writeTextFile(
      kubeconfig,
      renderKubeconfig(`https://127.0.0.1:${relay.port}`, kube.caPem, {
        token: await kube.tokenFor("kube-system", "flock"),
      }),
      { mode: 0o600 },
    );
    await using node = await FlockNode.start({ name: nodeName, config: SPEC, kubeconfig });
    await eventually(
      "the agent's informers listed",
      () => node.agentLog(),
      (log) => log.includes('"msg":"ready"'),
    );
    relay.freeze();
    // The informers see their watches cut and reconnect into the hung server: lists and watch
    // connects that no answer ends (60 s list timeout, 75 s watch idle bound).
    await eventually(
      "the informers lost the API server",
      () => node.agentLog(),
      (log) => log.includes("informer cannot reach the API server"),
      20_000,
    );
    await new Promise((r) => setTimeout(r, 1_000));
    const started = performance.now();
    await node.kill("SIGTERM");
    const ms = performance.now() - started;
    const log = await node.agentLog();
    assert.ok(ms < SHUTDOWN_BUDGET_MS, `exited after ${Math.round(ms)} ms\n${log}`);
    assert.match(log, /"msg":"stopped"/);
    // A clean exit removes its socket (a SIGKILL would leave it).
    await assert.rejects(Deno.lstat(node.socketPath), Deno.errors.NotFound);
  },
});
