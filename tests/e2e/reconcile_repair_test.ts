/**
 * Start-up reconcile repairs what an operator broke on a live pod while the agent was down (host
 * routes deleted, the host veth set down, or down and up, which drops its routes), and starts
 * despite records it cannot handle, listing them in `flock status` instead of crash-looping.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { addLivePod, assertNodeHolds, hostIfaceOf, storeRecords } from "../helpers/node_state.ts";
import { flockStatusJson } from "../helpers/status_probe.ts";
import { Store } from "../../agent/store.ts";

/** Whether `ifname` in `ns` is administratively up, as `ip link` shows it. */
/** A pod's host routes as a repair's problem line names them: IPv6 first. */
function hostRoutes(ips: string[]): string {
  const v6 = ips.filter((ip) => ip.includes(":")).map((ip) => `${ip}/128`);
  return [...v6, ...ips.filter((ip) => !ip.includes(":")).map((ip) => `${ip}/32`)].join(", ");
}

async function isUp(ns: TestNamespace, ifname: string): Promise<boolean> {
  const [link] = await ns.ipJson<{ flags: string[] }[]>(["link", "show", "dev", ifname]);
  return link.flags.includes("UP");
}

Deno.test({
  name: "reconcile: pods whose host routes went or whose veth is down are repaired, others not",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:e4::/64", cidr4: "10.228.0.0/24" },
    });
    await using nsA = await TestNamespace.create("flk-rpa");
    await using nsB = await TestNamespace.create("flk-rpb");
    await using nsC = await TestNamespace.create("flk-rpc");
    await using nsD = await TestNamespace.create("flk-rpd");
    const podA = await addLivePod(node, "rp-a", nsA.path);
    const podB = await addLivePod(node, "rp-b", nsB.path);
    const podC = await addLivePod(node, "rp-c", nsC.path);
    const podD = await addLivePod(node, "rp-d", nsD.path);
    const [hostA, hostB, hostC] = ["rp-a", "rp-b", "rp-c"].map((id) => hostIfaceOf(node, id));

    await node.kill("SIGKILL");
    // A: its host routes deleted by hand. B: its veth down and up (the kernel drops its
    // routes). C: its veth left down. D: untouched.
    for (const ip of podA.ips) await node.ns.ip(["route", "del", ip, "proto", "201"]);
    await node.ns.ip(["link", "set", hostB, "down"]);
    await node.ns.ip(["link", "set", hostB, "up"]);
    await node.ns.ip(["link", "set", hostC, "down"]);
    const broken = (await node.flockRoutes()).map((r) => r.dst.replace(/\/(32|128)$/, ""));
    assert.deepEqual(
      broken.filter((d) => d !== "169.254.1.1").sort(),
      [...podD.ips].sort(),
      "only D keeps its host routes while the agent is down",
    );
    await node.startAgent();

    await assertNodeHolds(node, [podA, podB, podC, podD], "after the restart");
    assert.ok(await isUp(node.ns, hostC), "C's host veth is up again");
    for (const [pod, ns] of [[podA, nsA], [podB, nsB], [podC, nsC]] as const) {
      const check = await node.cni("CHECK", { containerId: pod.containerId, netns: ns.path });
      assert.equal(check.code, 0, `${pod.containerId}: ${check.stdout}`);
      for (const ip of pod.ips) assert.ok(await ping(nsD, ip), `D → ${pod.containerId} ${ip}`);
    }
    const report = (await flockStatusJson(node)).reconcile!;
    assert.deepEqual(
      { restored: report.restored, repaired: report.repaired },
      { restored: 4, repaired: 3 },
      "A, B and C repaired; D, whose datapath was whole, not set up again",
    );
    // Each repair is a problem (the pod was broken), saying what was missing; D is not listed.
    assert.deepEqual([...report.problems].sort(), [
      `rp-a: datapath repaired (host routes ${hostRoutes(podA.ips)} via ${hostA} ` +
      "missing)",
      `rp-b: datapath repaired (host routes ${hostRoutes(podB.ips)} via ${hostB} ` +
      "missing)",
      `rp-c: datapath repaired (host veth ${hostC} down)`,
    ]);
  },
});

Deno.test({
  name: "reconcile: records it cannot tear down or repair are listed by flock status, not fatal",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:e5::/64", cidr4: "10.229.0.0/24", anycastCIDRs: ["fd00:e5ff::/64"] },
    });
    await using nsA = await TestNamespace.create("flk-rpa");
    await using nsB = await TestNamespace.create("flk-rpb");
    await using nsBad = await TestNamespace.create("flk-rpx");
    const podA = await addLivePod(node, "rp-a", nsA.path, {
      "flock.fritzlab.net/anycast": "fd00:e5ff::7",
    });
    const podB = await addLivePod(node, "rp-b", nsB.path);
    const hostA = hostIfaceOf(node, "rp-a");

    await node.kill("SIGKILL");
    await node.ns.ip(["-6", "route", "del", "fd00:e5ff::7/128", "proto", "201"]);
    for (const ip of podB.ips) await node.ns.ip(["route", "del", ip, "proto", "201"]);
    // Records no kernel request can serve: host interface names over 15 bytes (a corrupt or
    // foreign store). Before, the first one's teardown threw and the agent never started.
    const store = Store.open(node.stateDir);
    try {
      const bad = (containerId: string, n: number, anycast: string[] = []) =>
        store.insertPending({
          containerId,
          ifname: "eth0",
          netns: nsBad.path,
          hostIface: `flock-far-too-long-${n}`,
          ipv6: `fd00:e5::10${n}`,
          ipv4: `10.229.0.10${n}`,
          anycast,
        });
      bad("bad-pending", 0);
      bad("bad-releasing", 1);
      store.commit("bad-releasing", "eth0");
      store.markReleasing("bad-releasing", "eth0", Date.now());
      bad("bad-committed", 2, ["fd00:e5ff::7"]);
      store.commit("bad-committed", "eth0");
    } finally {
      store.close();
    }
    await node.startAgent();

    const status = await flockStatusJson(node);
    const problems = status.reconcile!.problems.join("\n");
    assert.match(problems, /bad-pending: cannot release the pending attachment/);
    assert.match(problems, /bad-releasing: cannot release the releasing attachment/);
    assert.match(problems, /bad-committed: repair failed/);
    assert.match(problems, /anycast fd00:e5ff::7: bad-committed left out/);
    const states = storeRecords(node).map((r) => `${r.containerId} ${r.state}`).sort();
    assert.deepEqual(states, [
      "bad-committed committed",
      "bad-pending pending",
      "bad-releasing releasing",
      "rp-a committed",
      "rp-b committed",
    ], "the bad records stay for a retry; the good ones are served");
    const anycast = await node.ns.ipJson<{ dev: string }[]>([
      "-6",
      "route",
      "show",
      "proto",
      "201",
      "fd00:e5ff::7",
    ]);
    assert.deepEqual(anycast.map((r) => r.dev), [hostA], "the anycast route via A is back");
    for (const ip of podA.ips) assert.ok(await ping(nsB, ip), `repaired B → A ${ip}`);
    // The bad records' addresses stay allocated: a pod asking for one is refused.
    const pinned = await node.cni("ADD", {
      containerId: "rp-c",
      netns: nsBad.path,
      extraConfig: {
        runtimeConfig: {
          "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/ipv6": "fd00:e5::101" },
        },
      },
    });
    assert.notEqual(pinned.code, 0, pinned.stdout);
    assert.match(pinned.stdout, /fd00:e5::101.*in use/);
  },
});
