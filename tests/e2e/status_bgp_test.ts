/**
 * `flock status` and `/metrics` on a node with pods and a BGP session: the agent drives a real
 * BIRD that peers with a gobgpd top-of-rack router, all inside namespaces this test creates.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY, run } from "../helpers/exec.ts";
import { TestNamespace } from "../helpers/flock.ts";
import { startBgpNode } from "../helpers/bgp_lab.ts";
import { GobgpTor } from "../helpers/gobgp.ts";

const TOR_AS = 65000;
const NODE_AS = 65011;

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

Deno.test({
  name: "flock status: BGP session (BIRD ↔ gobgpd ToR), last BIRD reload, pods; metrics agree",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using cleanup = new AsyncDisposableStack();
    const tor = await GobgpTor.start({
      asn: TOR_AS,
      routerId: "10.0.0.1",
      addresses: ["10.0.0.1/24"],
      neighbors: [{ address: "10.0.0.11", asn: NODE_AS }],
    });
    cleanup.use(tor);
    const { flock: node } = await startBgpNode(tor, {
      name: "status-bgp",
      ipv4: "10.0.0.11",
      ipv6: "fd00:10::11", // unused by the IPv4 session; the lab gives every node both
      spec: {
        cidr6: "fd00:71::/64",
        cidr4: "10.71.0.0/24",
        bgp: { asn: NODE_AS, routerID: "10.0.0.11", peers: [{ address: "10.0.0.1", asn: TOR_AS }] },
      },
    }, cleanup);
    const pod = await TestNamespace.create("flk-stbp");
    cleanup.use(pod);
    const add = await node.cni("ADD", {
      containerId: "ctr-status-bgp",
      netns: pod.path,
      args: "K8S_POD_NAMESPACE=edge;K8S_POD_NAME=gw-0",
    });
    assert.equal(add.code, 0, add.stdout + add.stderr);

    const status = (...args: string[]) =>
      run([node.executable, "status", "--socket", node.socketPath, ...args], { timeoutMs: 30_000 });
    // BIRD needs a moment to open the session; status shows it as soon as it is up.
    // deno-lint-ignore no-explicit-any
    const snap: any = await waitFor("an Established session in flock status --json", async () => {
      const r = await status("--json");
      const s = JSON.parse(r.stdout);
      return s.bgp?.sessions?.some((b: { up: boolean }) => b.up) ? s : undefined;
    });
    assert.equal(snap.bgp.available, true);
    assert.deepEqual([snap.bgp.routerId, snap.bgp.routerIdSource], ["10.0.0.11", "bgp.routerID"]);
    assert.equal(snap.bgp.sessions.length, 1);
    const session = snap.bgp.sessions[0];
    assert.equal(session.state, "Established");
    assert.equal(session.peer, "10.0.0.1");
    assert.equal(session.asn, TOR_AS);
    assert.equal(typeof session.uptimeSeconds, "number");
    assert.equal(snap.lastBirdReload.ok, true);
    assert.equal(snap.attachments[0].pod, "gw-0");

    const table = await status();
    assert.equal(table.code, 0, table.stdout);
    assert.match(
      table.stdout,
      new RegExp(`^ {2}${session.name} +10\\.0\\.0\\.1 +65000 +Established +\\d+s`, "m"),
    );
    assert.match(table.stdout, /^Last BIRD reload: \S+ ok/m);
    assert.match(table.stdout, /^ {2}edge\/gw-0 /m);

    const metrics = (await node.httpGet("/metrics")).body;
    assert.match(metrics, /^flock_bgp_sessions_up 1$/m);
    assert.match(metrics, /^flock_bgp_sessions\{state="Established"\} 1$/m);
    assert.match(metrics, /^flock_bird_reloads_total\{result="ok"\} [1-9]\d*$/m);
    assert.match(metrics, /^flock_attachments\{state="committed"\} 1$/m);
  },
});
