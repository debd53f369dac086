/**
 * DEL answers before the pod's veth is gone (the kernel needs ~40 ms of RCU grace periods to
 * delete one): what a runtime and a user can rely on once DEL has returned, and how the veth's
 * deletion that is still running meets the next requests.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY, run } from "../helpers/exec.ts";
import { addLivePod, assertNodeHolds, resultIps, storeRecords } from "../helpers/node_state.ts";
import { hostIfaceName } from "../../agent/datapath.ts";
import { FAIL_VETH_DELETE_ENV, RELEASE_SWEEP_ENV } from "../../agent/test_faults.ts";
import type { StatusSnapshot } from "../../agent/status_snapshot.ts";
import { assertCniError } from "../helpers/cni_output.ts";
import { eventually } from "../helpers/eventually.ts";
import type { IpLink, IpRoute } from "../helpers/iproute.ts";

Deno.test({
  name: "DEL in the background: the pod is off the network at the answer, the veth goes after",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:db::/64", cidr4: "10.219.0.0/24" },
    });
    await using peer = await TestNamespace.create("flk-dbp");
    await using pod = await TestNamespace.create("flk-dba");
    const peerPod = await addLivePod(node, "peer", peer.path);

    const add = await node.cni("ADD", { containerId: "victim", netns: pod.path });
    assert.equal(add.code, 0, add.stdout);
    const ips = resultIps(add.json);
    for (const ip of ips) assert.ok(await ping(peer, ip), `peer → ${ip} before DEL`);

    const del = await node.cni("DEL", { containerId: "victim", netns: pod.path });
    assert.equal(del.code, 0, del.stdout);
    // Read the node at once, without settling: the veth may still be there, but down, and the
    // node no longer routes to the pod.
    const host = hostIfaceName("victim");
    const links = await node.ns.ipJson<IpLink[]>(["link", "show"]);
    const left = links.find((l) => l.ifname === host);
    if (left) assert.ok(!left.flags.includes("UP"), `${host} is still up: ${left.flags}`);
    for (const family of ["-4", "-6"]) {
      const routes = await node.ns.ipJson<IpRoute[]>([family, "route", "show", "proto", "201"]);
      for (const ip of ips) {
        assert.ok(!routes.some((r) => r.dst === ip), `the node still routes to ${ip}`);
      }
    }

    await node.settled();
    await assertNodeHolds(node, [peerPod], "after the DEL settled");

    // Re-ADD right after DEL, same container and netns: it waits for the veth to go (the
    // interface name eth0 is reused), then the pod is back on the network.
    assert.equal((await node.cni("ADD", { containerId: "victim", netns: pod.path })).code, 0);
    assert.equal((await node.cni("DEL", { containerId: "victim", netns: pod.path })).code, 0);
    const again = await node.cni("ADD", { containerId: "victim", netns: pod.path });
    assert.equal(again.code, 0, again.stdout);
    for (const ip of resultIps(again.json)) assert.ok(await ping(peer, ip), `peer → ${ip}`);

    // Another container into the same netns right after the DEL (a runtime reusing it).
    assert.equal((await node.cni("DEL", { containerId: "victim", netns: pod.path })).code, 0);
    const successor = await addLivePod(node, "successor", pod.path);
    await assertNodeHolds(node, [peerPod, successor]);
    assert.equal((await node.cni("DEL", { containerId: "successor", netns: pod.path })).code, 0);

    // CHECK of a container whose DEL was answered: it has no attachment.
    const check = await node.cni("CHECK", { containerId: "successor", netns: pod.path });
    assert.equal(check.code, 1, check.stdout);
    assert.equal(check.json?.code, 3, check.stdout);
    await assertNodeHolds(node, [peerPod]);
  },
});

Deno.test({
  name: "DEL in the background: 12 concurrent DELs settle to an empty node, then GC and restart",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:dc::/64", cidr4: "10.220.0.0/24" },
    });
    const namespaces = await Promise.all(
      Array.from({ length: 12 }, () => TestNamespace.create("flk-dbc")),
    );
    try {
      const adds = await Promise.all(
        namespaces.map((ns, i) => node.cni("ADD", { containerId: `c${i}`, netns: ns.path })),
      );
      for (const r of adds) assert.equal(r.code, 0, r.stdout);
      const dels = await Promise.all(
        namespaces.map((ns, i) => node.cni("DEL", { containerId: `c${i}`, netns: ns.path })),
      );
      for (const r of dels) assert.equal(r.code, 0, r.stdout);
      // A GC right behind the DELs waits for their veth deletions and finds nothing to do.
      const gc = await node.cni("GC", {
        ifname: "",
        extraConfig: { cniVersion: "1.1.0", "cni.dev/valid-attachments": [] },
      });
      assert.equal(gc.code, 0, gc.stdout);
      await assertNodeHolds(node, [], "after 12 concurrent DELs");
      // Every address came back (cooldown 0): a pod asking for the lowest gets the first ones.
      const fresh = await node.cni("ADD", {
        containerId: "fresh",
        netns: namespaces[0].path,
        extraConfig: {
          runtimeConfig: {
            "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/ip-algo": "lowest" },
          },
        },
      });
      assert.equal(fresh.code, 0, fresh.stdout);
      assert.deepEqual(resultIps(fresh.json).sort(), ["10.220.0.1", "fd00:dc::1"]);
      await node.restartAgent();
      await assertNodeHolds(node, [{ containerId: "fresh", ips: resultIps(fresh.json) }]);
      assert.equal((await node.cni("DEL", { containerId: "fresh" })).code, 0);
      await assertNodeHolds(node, []);
    } finally {
      for (const ns of namespaces) await ns.remove().catch(() => {});
    }
  },
});

/** Env that makes the agent's first background veth deletion fail (agent/test_faults.ts). */
const FAIL_FIRST_VETH_DELETE = { [FAIL_VETH_DELETE_ENV]: "1" };
/** Log line of a background veth deletion that failed (agent/pod_handler.ts). */
const STUCK_LOG = /veth deletion after DEL failed; the attachment stays releasing/;

/** The agent's state as `flock status --json` prints it. */
async function flockStatusJson(node: FlockNode): Promise<StatusSnapshot> {
  const r = await run([node.executable, "status", "--json", "--socket", node.socketPath], {
    timeoutMs: 30_000,
  });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

/** The flock host links of the node now, without waiting for releases to settle. */
async function linksNow(node: FlockNode): Promise<IpLink[]> {
  return (await node.ns.ipJson<IpLink[]>(["link", "show"]))
    .filter((l) => l.ifname.startsWith("flock"));
}

Deno.test({
  name: "DEL in the background: a failed veth deletion stays releasing until the sweep finishes it",
  ...ROOT_ONLY,
  async fn() {
    // Long enough for the checks of the stuck state below to run before the first sweep.
    const sweepMs = 3_000;
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:dd::/64", cidr4: "10.221.0.0/24" },
      // Released addresses cool for a minute: "cooling" proves the sweep released them.
      cooldownMs: 60_000,
      startAgent: false,
    });
    await node.startAgent({
      env: { ...FAIL_FIRST_VETH_DELETE, [RELEASE_SWEEP_ENV]: String(sweepMs) },
    });
    await using peer = await TestNamespace.create("flk-dsp");
    await using pod = await TestNamespace.create("flk-dsa");
    await using other = await TestNamespace.create("flk-dso");
    const peerPod = await addLivePod(node, "peer", peer.path);
    const add = await node.cni("ADD", { containerId: "stuck", netns: pod.path });
    assert.equal(add.code, 0, add.stdout);
    const ips = resultIps(add.json);
    const [ipv6, ipv4] = [
      ips.find((ip) => ip.includes(":"))!,
      ips.find((ip) => !ip.includes(":"))!,
    ];

    /** Another pod asking for the stuck pod's IPv6 address by annotation. */
    const pinnedAdd = () =>
      node.cni("ADD", {
        containerId: "thief",
        netns: other.path,
        extraConfig: {
          runtimeConfig: {
            "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/ipv6": ipv6 },
          },
        },
      });

    const del = await node.cni("DEL", { containerId: "stuck", netns: pod.path });
    const answeredAt = performance.now();
    assert.equal(del.code, 0, `DEL succeeds although its veth deletion fails: ${del.stdout}`);

    // Stuck: what an operator sees, read concurrently so that it all happens before the sweep.
    const [status, metrics, pinned, links, routes] = await Promise.all([
      eventually(
        "the failed deletion",
        async () => ({ status: await flockStatusJson(node), log: await node.agentLog() }),
        (s) => STUCK_LOG.test(s.log),
        5_000,
        50,
      ).then((s) => s.status),
      node.httpGet("/metrics"),
      // Another pod pinning the held IPv6 address is refused: the address is still taken.
      pinnedAdd(),
      linksNow(node),
      node.ns.ipJson<IpRoute[]>(["-6", "route", "show", "proto", "201"]),
    ]);
    const stuckCheckedMs = Math.round(performance.now() - answeredAt);
    const why = `read ${stuckCheckedMs} ms after DEL (sweep every ${sweepMs} ms)`;
    const stuck = status.attachments.find((a) => a.containerId === "stuck");
    assert.deepEqual(
      stuck && { state: stuck.state, ipv6: stuck.ipv6, ipv4: stuck.ipv4 },
      { state: "releasing", ipv6, ipv4 },
      `flock status: the attachment is releasing, its addresses held (${why})`,
    );
    assert.deepEqual(
      status.pools.map((p) => [p.family, p.allocated, p.cooling]),
      [["ipv6", 2, 0], ["ipv4", 2, 0]],
      `flock status: the peer's and the stuck pod's addresses are allocated (${why})`,
    );
    assert.match(metrics.body, /^flock_attachments\{state="releasing"\} 1$/m, why);
    assertCniError(pinned, 7, new RegExp(`flock\\.fritzlab\\.net/ipv6.*${ipv6}.*in use`));
    const host = links.find((l) => l.ifname === hostIfaceName("stuck"));
    assert.ok(host, `the stuck veth is still there (${why})`);
    assert.ok(!host.flags.includes("UP"), `the stuck veth is down: ${host.flags}`);
    assert.ok(!routes.some((r) => r.dst === ipv6), "the node no longer routes to the stuck pod");

    // The sweep finishes it within one interval (plus slack for a loaded machine).
    await eventually(
      "the sweep to finish the stuck release",
      () => Promise.resolve(storeRecords(node).map((r) => r.containerId)),
      (ids) => !ids.includes("stuck"),
      sweepMs + 10_000,
      50,
    );
    const sweptMs = Math.round(performance.now() - answeredAt);
    console.log(
      `stuck state read ${stuckCheckedMs} ms after DEL answered; ` +
        `the sweep (every ${sweepMs} ms) finished the release ${sweptMs} ms after it`,
    );
    assert.match(await node.agentLog(), /finished a stuck release/);
    await assertNodeHolds(node, [peerPod], "after the sweep");
    const after = await flockStatusJson(node);
    assert.deepEqual(
      after.pools.map((p) => [p.family, p.allocated, p.cooling]),
      [["ipv6", 1, 1], ["ipv4", 1, 1]],
      "the stuck pod's addresses are released and cooling",
    );
    // Released: now the pinned ADD gets the address, and the pod works.
    const reused = await pinnedAdd();
    assert.equal(reused.code, 0, reused.stdout);
    assert.ok(resultIps(reused.json).includes(ipv6));
    assert.ok(await ping(peer, ipv6), `peer → ${ipv6} on its new pod`);
    assert.equal((await node.cni("DEL", { containerId: "thief", netns: other.path })).code, 0);
    await assertNodeHolds(node, [peerPod], "at the end");
  },
});

Deno.test({
  name: "DEL in the background: an ADD of the same container finishes its stuck release",
  ...ROOT_ONLY,
  async fn() {
    // The default 30 s sweep never runs here: only the ADD can finish the release.
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:de::/64", cidr4: "10.222.0.0/24" },
      startAgent: false,
    });
    await node.startAgent({ env: FAIL_FIRST_VETH_DELETE });
    await using peer = await TestNamespace.create("flk-dsp");
    await using pod = await TestNamespace.create("flk-dsa");
    const peerPod = await addLivePod(node, "peer", peer.path);
    assert.equal((await node.cni("ADD", { containerId: "again", netns: pod.path })).code, 0);

    const del = await node.cni("DEL", { containerId: "again", netns: pod.path });
    assert.equal(del.code, 0, del.stdout);
    await eventually("the failed deletion", () => node.agentLog(), (log) => STUCK_LOG.test(log));
    assert.deepEqual(
      storeRecords(node).filter((r) => r.containerId === "again").map((r) => r.state),
      ["releasing"],
    );
    assert.equal((await linksNow(node)).length, 2, "the stuck veth is still there");

    // The runtime starts the same sandbox again (same container ID and netns).
    const again = await node.cni("ADD", { containerId: "again", netns: pod.path });
    assert.equal(again.code, 0, again.stdout);
    const pod2 = { containerId: "again", ips: resultIps(again.json) };
    for (const ip of pod2.ips) assert.ok(await ping(peer, ip), `peer → ${ip} after the re-ADD`);
    await assertNodeHolds(node, [peerPod, pod2], "after the re-ADD");

    // Its next DEL goes the ordinary way (the fault was armed once).
    assert.equal((await node.cni("DEL", { containerId: "again", netns: pod.path })).code, 0);
    await assertNodeHolds(node, [peerPod], "after the second DEL");
  },
});
