/**
 * DEL answers before the pod's veth is gone (the kernel needs ~40 ms of RCU grace periods to
 * delete one): what a runtime and a user can rely on once DEL has returned, and how the veth's
 * deletion that is still running meets the next requests.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import {
  addLivePod,
  assertNodeHolds,
  flockLinksNow,
  resultIps,
  storeRecords,
} from "../helpers/node_state.ts";
import { hostIfaceName } from "../../agent/datapath.ts";
import { FAIL_VETH_DELETE_ENV, RELEASE_SWEEP_ENV } from "../../agent/test_faults.ts";
import { assertCniError } from "../helpers/cni_output.ts";
import { eventually } from "../helpers/eventually.ts";
import type { IpLink, IpRoute } from "../helpers/iproute.ts";
import {
  agentEvents,
  assertStatusAnswered,
  flockStatusJson,
  loggedEvents,
  poolCounts,
  probeStatus,
  slowestStatusMs,
  type StatusProbe,
} from "../helpers/status_probe.ts";

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
      flockLinksNow(node),
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
      poolCounts(status),
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
    await loggedEvents(node, (e) => e.msg === "finished a stuck release");
    await assertNodeHolds(node, [peerPod], "after the sweep");
    const after = await flockStatusJson(node);
    assert.deepEqual(
      poolCounts(after),
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
    assert.equal((await flockLinksNow(node)).length, 2, "the stuck veth is still there");
    await assert.rejects(
      node.settled(300),
      /1 attachment\(s\) still releasing after \d+ ms \(limit 300 ms\): again\/eth0;/,
      "settled() names the stuck container when it gives up",
    );

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

/** Log events of the stuck-release sweep (agent/agent.ts), for one container or all. */
async function sweepEvents(
  node: FlockNode,
  msg: "retrying stuck releases" | "retrying a stuck release failed" | "finished a stuck release",
  containerId?: string,
): Promise<Record<string, unknown>[]> {
  return (await agentEvents(node)).filter((e) =>
    e.msg === msg && (containerId === undefined || e.containerId === containerId)
  );
}

Deno.test({
  name: "DEL in the background: a sweep whose retry fails too leaves the release stuck; the next " +
    "sweep finishes it, and STATUS is answered throughout",
  ...ROOT_ONLY,
  async fn() {
    // Long enough to read the state between the two sweeps, short enough for a quick test.
    const sweepMs = 1_500;
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:df::/64", cidr4: "10.223.0.0/24" },
      // Released addresses cool for a minute: "cooling" proves the sweep released them.
      cooldownMs: 60_000,
      startAgent: false,
    });
    // The DEL's background deletion fails, and so does the first sweep's retry of it.
    await node.startAgent({
      env: { [FAIL_VETH_DELETE_ENV]: "2", [RELEASE_SWEEP_ENV]: String(sweepMs) },
    });
    await using peer = await TestNamespace.create("flk-dsp");
    await using pod = await TestNamespace.create("flk-dsa");
    const peerPod = await addLivePod(node, "peer", peer.path);
    const add = await node.cni("ADD", { containerId: "stuck", netns: pod.path });
    assert.equal(add.code, 0, add.stdout);
    const host = hostIfaceName("stuck");
    const stuckState = () =>
      storeRecords(node).filter((r) => r.containerId === "stuck").map((r) => r.state);

    const probes = probeStatus(node);
    let allProbes: StatusProbe[] | undefined;
    try {
      const del = await node.cni("DEL", { containerId: "stuck", netns: pod.path });
      const answeredAt = performance.now();
      assert.equal(del.code, 0, del.stdout);
      await eventually(
        "the DEL's failed deletion",
        () => node.agentLog(),
        (l) => STUCK_LOG.test(l),
      );
      assert.deepEqual(stuckState(), ["releasing"], "after the DEL");

      // The first sweep retries and fails (the second armed fault): still releasing, logged.
      const [retryFailed] = await eventually(
        "the first sweep's failed retry",
        () => sweepEvents(node, "retrying a stuck release failed", "stuck"),
        (events) => events.length > 0,
        sweepMs + 10_000,
        50,
      );
      assert.match(String(retryFailed.error), /injected veth deletion failure/);
      assert.equal(retryFailed.level, "error");
      assert.deepEqual(stuckState(), ["releasing"], "after the first sweep");
      assert.ok(
        (await flockLinksNow(node)).some((l) => l.ifname === host),
        "the stuck veth is still there after the first sweep",
      );
      assert.deepEqual(
        await sweepEvents(node, "finished a stuck release"),
        [],
        "nothing finished by the first sweep",
      );

      // The second sweep finishes it.
      await eventually(
        "the second sweep to finish the stuck release",
        () => Promise.resolve(stuckState()),
        (states) => states.length === 0,
        sweepMs + 10_000,
        50,
      );
      const sweptMs = Math.round(performance.now() - answeredAt);
      allProbes = await probes.stop();
      console.log(
        `the second sweep (every ${sweepMs} ms) finished the release ${sweptMs} ms after DEL ` +
          `answered; ${allProbes.length} STATUS answered meanwhile, the slowest in ` +
          `${slowestStatusMs(allProbes)} ms`,
      );
    } finally {
      allProbes ??= await probes.stop();
    }
    assertStatusAnswered(allProbes, "from the DEL through both sweeps");
    const finishedStuck = await loggedEvents(
      node,
      (e) => e.msg === "finished a stuck release" && e.containerId === "stuck",
    );
    assert.equal(finishedStuck.length, 1);
    await assertNodeHolds(node, [peerPod], "after the second sweep");
    const after = await flockStatusJson(node);
    assert.deepEqual(
      poolCounts(after),
      [["ipv6", 1, 1], ["ipv4", 1, 1]],
      "the stuck pod's addresses are released and cooling",
    );
    // A CNI STATUS through the plugin, as the runtime asks it.
    const status = await node.cni("STATUS");
    assert.equal(status.code, 0, status.stdout + status.stderr);
  },
});

Deno.test({
  name: "DEL in the background: the sweep deletes stuck veths off the event loop, STATUS is " +
    "answered between its deletions",
  ...ROOT_ONLY,
  async fn() {
    const pods = 8;
    // Long enough that all the DELs fail before the first sweep looks (checked below).
    const sweepMs = 5_000;
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:e0::/64", cidr4: "10.224.0.0/24" },
      startAgent: false,
    });
    // Every DEL's background deletion fails: each pod is left releasing for the sweep.
    await node.startAgent({
      env: { [FAIL_VETH_DELETE_ENV]: String(pods), [RELEASE_SWEEP_ENV]: String(sweepMs) },
    });
    const namespaces = await Promise.all(
      Array.from({ length: pods }, () => TestNamespace.create("flk-dsw")),
    );
    const probes = probeStatus(node, 5);
    let allProbes: StatusProbe[] | undefined;
    try {
      const ids = namespaces.map((_, i) => `sw${i}`);
      const adds = await Promise.all(
        namespaces.map((ns, i) => node.cni("ADD", { containerId: ids[i], netns: ns.path })),
      );
      for (const r of adds) assert.equal(r.code, 0, r.stdout);
      const dels = await Promise.all(
        namespaces.map((ns, i) => node.cni("DEL", { containerId: ids[i], netns: ns.path })),
      );
      for (const r of dels) assert.equal(r.code, 0, r.stdout);
      await eventually(
        "the sweep to finish every stuck release",
        () => Promise.resolve(storeRecords(node).length),
        (n) => n === 0,
        2 * sweepMs + 20_000,
        50,
      );
      allProbes = await probes.stop();
    } finally {
      allProbes ??= await probes.stop();
      for (const ns of namespaces) await ns.remove().catch(() => {});
    }
    assertStatusAnswered(allProbes, "from the ADDs through the sweep");
    await assertNodeHolds(node, [], "after the sweep");

    // The sweep that retried them all, and when it finished each one (the agent's clock).
    const sweeps = await sweepEvents(node, "retrying stuck releases");
    assert.deepEqual(
      sweeps.map((e) => e.count),
      [pods],
      `one sweep retried all ${pods} stuck releases (the DELs all failed before it looked)`,
    );
    const finished = await loggedEvents(node, (e) => e.msg === "finished a stuck release", pods);
    assert.equal(finished.length, pods);
    const startedAt = Date.parse(String(sweeps[0].ts));
    const doneAt = Date.parse(String(finished.at(-1)!.ts));
    // A sweep blocking the event loop answers nothing between its start and its last deletion.
    const during = allProbes.filter((p) => p.sent > startedAt && p.answered < doneAt);
    console.log(
      `the sweep deleted ${pods} stuck veths in ${doneAt - startedAt} ms; ` +
        `${during.length} STATUS requests were sent and answered within it`,
    );
    assert.ok(
      during.length > 0,
      `no STATUS was answered during the ${doneAt - startedAt} ms sweep (${allProbes.length} sent)`,
    );
  },
});
