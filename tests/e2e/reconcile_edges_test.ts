/**
 * Start-up reconcile against states a crash or an operator leaves on a node while the agent is
 * down: each test kills the agent with SIGKILL, changes the node by hand, starts the agent again
 * and checks what an operator would (`ip link`, `ip route`, the store, CHECK, ping).
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { addLivePod, resultIps, storeRecords } from "../helpers/node_state.ts";

/** The MTU `ip link` shows for `ifname` in `ns`. */
async function mtuOf(ns: TestNamespace, ifname: string): Promise<number> {
  const [link] = await ns.ipJson<{ mtu: number }[]>(["link", "show", "dev", ifname]);
  return link.mtu;
}

Deno.test({
  name: "reconcile: a host veth deleted by hand is remade with the node's MTU, routes and anycast",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: {
        cidr6: "fd00:e1::/64",
        cidr4: "10.225.0.0/24",
        mtu: 1400,
        anycastCIDRs: ["fd00:e1ff::/64"],
      },
    });
    await using nsA = await TestNamespace.create("flk-rea");
    await using nsB = await TestNamespace.create("flk-reb");
    const a = await node.cni("ADD", {
      containerId: "re-a",
      netns: nsA.path,
      extraConfig: {
        runtimeConfig: {
          "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/anycast": "fd00:e1ff::7" },
        },
      },
    });
    assert.equal(a.code, 0, a.stdout);
    const podA = { containerId: "re-a", ips: resultIps(a.json) };
    const podB = await addLivePod(node, "re-b", nsB.path);
    const hostA = storeRecords(node).find((r) => r.containerId === "re-a")!.hostIface;
    assert.equal(await mtuOf(node.ns, hostA), 1400);

    await node.kill("SIGKILL");
    await node.ns.ip(["link", "del", hostA]);
    await node.startAgent();

    assert.equal(await mtuOf(node.ns, hostA), 1400, "host side MTU after the repair");
    assert.equal(await mtuOf(nsA, "eth0"), 1400, "pod side MTU after the repair");
    const anycast = await node.ns.ipJson<{ dst: string; dev: string }[]>([
      "-6",
      "route",
      "show",
      "proto",
      "201",
      "fd00:e1ff::7",
    ]);
    assert.deepEqual(anycast.map((r) => r.dev), [hostA], "the anycast route is back");
    const check = await node.cni("CHECK", { containerId: "re-a", netns: nsA.path });
    assert.equal(check.code, 0, check.stdout);
    for (const ip of podA.ips) assert.ok(await ping(nsB, ip), `B → repaired A ${ip}`);
    const routes = (await node.flockRoutes()).map((r) => r.dst.replace(/\/(32|128)$/, ""))
      .filter((d) => d !== "169.254.1.1" && d !== "fd00:e1ff::7");
    assert.deepEqual(routes.sort(), [...podA.ips, ...podB.ips].sort());
  },
});
